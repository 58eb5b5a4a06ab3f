"""The accuracy-aware fallback on a model that INT8 breaks unless one node stays in float."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import WORDS, make_tiny_bert
from hypothesis import given
from hypothesis import strategies as st

from slimline.compression.recipe import parse_recipe
from slimline.core.data import DatasetSpec
from slimline.core.stats import paired_drop_pt
from slimline.pipeline.single import compress_to, export_to
from slimline.profiles.schema import load_profile

BROKEN_NODE = "/bert/encoder/layer.1/output/dense/MatMul"


def self_labelled_model(root: Path, text_seed: int, break_for_int8: Callable[[Any], None]) -> tuple[Path, Path]:
    """A tiny BERT changed by `break_for_int8` (no change in fp32, a large one under some INT8 scheme), and 400
    texts labelled with its own fp32 predictions, classes balanced."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    checkpoint = make_tiny_bert(root / "model", seed=3, initializer_range=0.2)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rng = random.Random(text_seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(400)]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        break_for_int8(model)
        logits = model(**batch).logits
        model.classifier.bias[1] += float((logits[:, 0] - logits[:, 1]).median())  # balanced classes
        predictions = model(**batch).logits.argmax(-1).tolist()
    model.save_pretrained(checkpoint, safe_serialization=True)
    data = root / "labels.csv"
    rows = "".join(f"{text},{['neg', 'pos'][label]}\n" for text, label in zip(texts, predictions, strict=True))
    data.write_text("text,label\n" + rows)
    return checkpoint, data


@pytest.fixture(scope="module")
def fragile_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BERT whose layer-1 output projection has an outlier column fed by a dead unit.

    In fp32 the column changes nothing (GELU(-100) == 0), but a per-tensor int8 scale of 500/127
    rounds every other weight of that matrix to zero (and per-channel scales do not help: the outlier
    sits in every output channel). Labels are the fp32 model's own predictions.
    """
    def outlier_column(model: Any) -> None:
        layer = model.bert.encoder.layer[1]
        layer.intermediate.dense.bias[5] = -100.0
        layer.output.dense.weight[:, 5] = 500.0

    return self_labelled_model(tmp_path_factory.mktemp("fragile"), 0, outlier_column)


def test_fallback_leaves_the_sensitive_node_in_float_until_the_budget_holds(fragile_model, tmp_path: Path) -> None:
    checkpoint, data = fragile_model
    onnx_dir = export_to(checkpoint, tmp_path / "onnx")
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump({"name": "fallback", "target": {"threads": 1},
                                            "shapes": [{"batch_size": 1, "sequence_length": 16}],
                                            "budgets": {"accuracy_drop_pt": {"max": 10.0}}}))
    steps = parse_recipe([{"pass": "quantize.ort-int8-dynamic",
                           "with": {"fallback": {"eval_samples": 40, "latency_iters": 5}}}], "test")
    out = compress_to(onnx_dir.path, tmp_path / "q", steps, load_profile(profile_path),
                      tuning_data=DatasetSpec(source=str(data)))
    search = out.manifest.metadata["accuracy_fallback"]
    first, chosen = search["candidates"][0], search["candidates"][search["chosen"]]
    assert first["drop_pt"] > 10.0, "fully quantized model must break the budget, or the test proves nothing"
    assert search["met_budget"] and chosen["drop_upper_pt"] <= 10.0 and chosen["drop_pt"] <= chosen["drop_upper_pt"]
    assert BROKEN_NODE in chosen["excluded"]
    assert min(search["sensitivity"], key=search["sensitivity"].get) == BROKEN_NODE


def test_fallback_keeps_the_best_candidate_when_the_budget_cannot_be_met(fragile_model, tmp_path: Path) -> None:
    checkpoint, data = fragile_model
    onnx_dir = export_to(checkpoint, tmp_path / "onnx")
    steps = parse_recipe([{"pass": "quantize.ort-int8-dynamic", "with": {"fallback": {
        "max_drop_pt": 0.0, "max_excluded": 2, "eval_samples": 40, "latency_iters": 5}}}], "test")
    out = compress_to(onnx_dir.path, tmp_path / "q", steps, load_profile("cpu"),
                      tuning_data=DatasetSpec(source=str(data)))
    search = out.manifest.metadata["accuracy_fallback"]
    accuracies = [c["accuracy_pct"] for c in search["candidates"]]
    assert out.model_path.is_file()
    assert len(search["candidates"]) <= 2 + 2  # the two full-INT8 settings, then at most max_excluded float nodes
    if not search["met_budget"]:
        assert search["stopped_by"] == "max_excluded reached"
        assert search["candidates"][search["chosen"]]["accuracy_pct"] == max(accuracies)


def _fallback_run(fragile_model, out: Path, budgets: dict) -> dict:
    checkpoint, data = fragile_model
    onnx_dir = export_to(checkpoint, out / "onnx") if not (out / "onnx").exists() else None
    profile_path = out / "profile.yaml"
    profile_path.write_text(yaml.safe_dump({"name": "fallback", "target": {"threads": 1},
                                            "shapes": [{"batch_size": 1, "sequence_length": 16}],
                                            "budgets": budgets}))
    steps = parse_recipe([{"pass": "quantize.ort-int8-dynamic",
                           "with": {"fallback": {"eval_samples": 40, "latency_iters": 5, "max_excluded": 3}}}], "t")
    target = out / f"q-{len(list(out.glob('q-*')))}"
    model = compress_to((onnx_dir.path if onnx_dir else out / "onnx"), target, steps, load_profile(profile_path),
                        tuning_data=DatasetSpec(source=str(data)))
    return {**model.manifest.metadata["accuracy_fallback"], "size_mb": model.size_mb()}


def test_fallback_never_trades_the_size_budget_for_accuracy(fragile_model, tmp_path: Path) -> None:
    """Leaving the broken node in float fixes accuracy but makes the model bigger; with a size budget only
    the fully quantized model meets, the fallback keeps that one and says why it stopped."""
    free = _fallback_run(fragile_model, tmp_path, {"accuracy_drop_pt": {"max": 10.0}})
    small, fixed = free["candidates"][0], free["candidates"][free["chosen"]]
    assert fixed["size_mb"] > small["size_mb"] and small["drop_pt"] > 10.0
    size_budget = (small["size_mb"] + fixed["size_mb"]) / 2
    bound = _fallback_run(fragile_model, tmp_path, {"accuracy_drop_pt": {"max": 10.0}, "size_mb": {"max": size_budget}})
    chosen = bound["candidates"][bound["chosen"]]
    assert chosen["excluded"] == [] and not bound["met_budget"]
    assert bound["stopped_by"].startswith("more float nodes break another budget (size")
    assert "none met the accuracy budget" in bound["selection"]
    assert bound["size_mb"] <= size_budget
    assert "validation examples" in bound["resolution"]


@pytest.fixture(scope="module")
def per_tensor_fragile_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BERT whose FFNs have one dead unit with huge input weights: in fp32 it changes nothing
    (GELU(-1e6) == 0), but one scale for the whole matrix rounds every other weight to zero. Per-channel
    scales (one per output unit) isolate it, so full INT8 with per-channel weights keeps the accuracy."""
    def outlier_unit(model: Any) -> None:
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[5, :] = 500.0
            layer.intermediate.dense.bias[5] = -1e6

    return self_labelled_model(tmp_path_factory.mktemp("per-tensor-fragile"), 1, outlier_unit)


def test_fallback_tries_per_channel_weights_before_leaving_nodes_in_float(per_tensor_fragile_model,
                                                                          tmp_path: Path) -> None:
    result = _fallback_run(per_tensor_fragile_model, tmp_path, {"accuracy_drop_pt": {"max": 10.0}})
    configured, chosen = result["candidates"][0], result["candidates"][result["chosen"]]
    assert configured["drop_pt"] > 10.0, "per-tensor INT8 must break the budget, or the test proves nothing"
    assert chosen["variant"] == "per-channel weights" and chosen["excluded"] == []
    assert result["met_budget"] and result["stopped_by"].startswith("a full-INT8 setting met every budget")
    assert not result["sensitivity"], "no node ranking is needed once a full-INT8 setting passes"


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=400))
def test_paired_drop_is_the_accuracy_difference_with_a_nonnegative_error(outcomes) -> None:
    import numpy as np

    reference = np.array([r for r, _ in outcomes])
    candidate = np.array([c for _, c in outcomes])
    drop, error = paired_drop_pt(reference, candidate)
    assert drop == pytest.approx(100 * (reference.mean() - candidate.mean()))
    assert error >= 0
    if (reference == candidate).all():
        assert drop == 0 and error == 0


class _FakeData:
    """Stands in for FallbackData: the fp32 model is always right, the configured INT8 wrong on 4 of 40."""

    examples = 40

    def run(self, path: Path, rows=None):
        import numpy as np

        from slimline.compression.quantize.fallback_eval import Reference

        labels = np.array([0, 1] * 20)
        return Reference(correct=labels == labels if path.name == "fp32.onnx" else np.arange(40) >= 4)

    def metrics(self, candidate, reference) -> dict[str, float]:
        drop, se = paired_drop_pt(reference.correct, candidate.correct)
        return {"accuracy_drop_pt": drop, "drop_se_pt": se, "accuracy_pct": 100.0 * float(candidate.correct.mean())}

    def latency_p50_ms(self, path: Path, iterations: int) -> float:
        return 1.0


def test_a_setting_the_quantizer_cannot_apply_is_skipped_and_reported(tmp_path: Path) -> None:
    """ORT's histogram calibrators (percentile, entropy) fail on examples of different lengths: the fallback
    notes that setting and goes on, instead of failing the whole pass."""
    from slimline.compression.quantize.fallback import FallbackConfig, VariantSpace, search
    from slimline.compression.quantize.fallback_eval import Judge
    from slimline.core.errors import PassError
    from slimline.profiles.schema import Budget

    def make(settings: dict) -> Callable[[list[str], Path], None]:
        def quantize(excluded: list[str], out: Path) -> None:
            if settings["calibration_method"] != "minmax":
                raise PassError("quantize_static failed: inhomogeneous shape", fix="-")
            out.write_bytes(b"int8")
        return quantize

    space = VariantSpace({"calibration_method": "minmax"}, [("calibration_method", ["percentile"])], make)
    (tmp_path / "fp32.onnx").write_bytes(b"fp32")
    result = search(space, tmp_path / "fp32.onnx", [], [], _FakeData(), Judge({"accuracy_drop_pt": Budget(max=5.0)},
                    1.0), FallbackConfig(), tmp_path / "out.onnx")
    assert [c.variant for c in result.candidates] == ["as configured"]
    assert result.skipped_settings and result.skipped_settings[0].startswith("percentile calibration:")
    assert (tmp_path / "out.onnx").read_bytes() == b"int8" and not result.met_budget
