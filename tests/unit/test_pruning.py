"""prune.structured and prune.layers on tiny random models: what is removed, and that it reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import _write_tokenizer, make_tiny_gpt2
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from slimline.compression.base import ModelInfo, PassContext
from slimline.compression.catalogue import registry
from slimline.compression.prune.layers import DropLayersConfig
from slimline.compression.prune.structured import StructuredPruneConfig, heads_to_keep, kept_width, prune_in_place
from slimline.core.data import DatasetSpec
from slimline.core.errors import PassError
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

CPU = Target(device="cpu", runtime="onnxruntime", threads=1)
NO_PREFLIGHT = {"preflight": {"enabled": False}}


def make_bert(path: Path, heads: int = 4, layers: int = 3, seed: int = 0) -> Path:
    """hidden 64, `heads` heads, FFN 128: enough heads and channels to rank."""
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(path)
    config = BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=128, max_position_embeddings=128, num_labels=2,
                        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}, initializer_range=0.2)
    BertForSequenceClassification(config).eval().save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert") / "model")


def apply(name: str, source: Path, out: Path, context: PassContext | None = None, **options) -> dict:
    out.mkdir(parents=True)
    pass_ = registry()[name](registry()[name].Config(**options))
    result = pass_.apply(open_checkpoint(source), out, context or PassContext(target=CPU))
    return result.metadata


def logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


IDS = torch.randint(5, 60, (3, 20), generator=torch.Generator().manual_seed(1))


def test_pruned_model_reloads_from_safetensors_with_the_in_memory_outputs(bert_dir: Path, tmp_path: Path) -> None:
    source = open_checkpoint(bert_dir)
    model = load_hf_model(bert_dir, "text-classification")
    config = StructuredPruneConfig(heads_ratio=0.5, ffn_ratio=0.5, **NO_PREFLIGHT)
    prune_in_place(model, source, PassContext(target=CPU), config)
    with torch.inference_mode():
        in_memory = model(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits
    apply("prune.structured", bert_dir, tmp_path / "out", heads_ratio=0.5, ffn_ratio=0.5, **NO_PREFLIGHT)
    assert not list((tmp_path / "out").glob("*.bin")) and not list((tmp_path / "out").glob("*.pt"))
    torch.testing.assert_close(logits(tmp_path / "out", IDS), in_memory, rtol=0, atol=1e-6)


def test_structured_pruning_cuts_heads_and_ffn_to_multiples_of_8(bert_dir: Path, tmp_path: Path) -> None:
    facts = apply("prune.structured", bert_dir, tmp_path / "out", heads_ratio=0.5, ffn_ratio=0.3,
                  **NO_PREFLIGHT)["pruning"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["intermediate_size"] == 88 == facts["ffn_width"]  # 128 * 0.7 = 89.6 -> nearest multiple of 8
    assert {int(k): len(v) for k, v in config["pruned_heads"].items()} == {0: 2, 1: 2, 2: 2}
    assert facts["shape_after"]["heads"] == [2, 2, 2]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    layer = reloaded.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (32, 64)  # 2 heads of 16, hidden width untouched
    assert layer.intermediate.dense.weight.shape == (88, 64) and layer.output.dense.weight.shape == (64, 88)
    assert reloaded.bert.embeddings.word_embeddings.weight.shape == (64, 64)
    assert reloaded.classifier.weight.shape == (2, 64)


def test_magnitude_importance_removes_the_weakest_head(tmp_path: Path) -> None:
    path = make_bert(tmp_path / "src", layers=1)
    model = BertForSequenceClassification.from_pretrained(path)
    attention = model.bert.encoder.layer[0].attention
    with torch.no_grad():
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            linear.weight[16:32] *= 0.01  # head 1
        attention.output.dense.weight[:, 16:32] *= 0.01
    model.save_pretrained(path, safe_serialization=True)
    facts = apply("prune.structured", path, tmp_path / "out", heads_ratio=0.25, **NO_PREFLIGHT)["pruning"]
    assert facts["heads_removed"] == {"0": [1]}


def test_per_layer_ratios_global_scope_and_protected_layers(bert_dir: Path, tmp_path: Path) -> None:
    per_layer = apply("prune.structured", bert_dir, tmp_path / "a", heads_ratio_per_layer={0: 0.75, 2: 0.25},
                      **NO_PREFLIGHT)["pruning"]
    assert per_layer["shape_after"]["heads"] == [1, 4, 3]
    protected = apply("prune.structured", bert_dir, tmp_path / "b", heads_ratio=0.5, protected_layers=[1],
                      **NO_PREFLIGHT)["pruning"]
    assert protected["shape_after"]["heads"] == [2, 4, 2]
    global_scope = apply("prune.structured", bert_dir, tmp_path / "c", heads_ratio=0.5, head_scope="global",
                         **NO_PREFLIGHT)["pruning"]
    assert sum(global_scope["shape_after"]["heads"]) == 6 and min(global_scope["shape_after"]["heads"]) >= 1


def test_taylor_importance_uses_the_train_split(bert_dir: Path, labelled_csv: Path, tmp_path: Path) -> None:
    context = PassContext(target=CPU, tuning_data=DatasetSpec(source=str(labelled_csv)))
    source = open_checkpoint(bert_dir)
    model = load_hf_model(bert_dir, "text-classification")
    config = StructuredPruneConfig(heads_ratio=0.5, importance="taylor", importance_samples=16, **NO_PREFLIGHT)
    facts, hashes = prune_in_place(model, source, context, config)
    assert facts["shape_after"]["heads"] == [2, 2, 2] and "importance_data" in hashes
    assert all(p.grad is None for p in model.parameters())  # gradients do not leak into the saved model
    with pytest.raises(PassError, match="labelled examples"):
        prune_in_place(load_hf_model(bert_dir, "text-classification"), source, PassContext(target=CPU), config)


def test_preflight_measures_before_and_after_and_can_stop_the_run(bert_dir: Path, tmp_path: Path) -> None:
    facts = apply("prune.structured", bert_dir, tmp_path / "a", heads_ratio=0.5, ffn_ratio=0.5,
                  preflight={"iters": 5, "refuse_if_slower": False})["pruning"]["preflight_estimate"]
    assert facts["p50_ms_before"] > 0 and facts["p50_ms_after"] > 0 and "onnxruntime" in facts["method"]
    torch_target = PassContext(target=Target(device="cpu", runtime="torch", threads=1))
    facts = apply("prune.structured", bert_dir, tmp_path / "b", torch_target, heads_ratio=0.25,
                  preflight={"iters": 5, "warn_below": 100.0, "refuse_if_slower": False})["pruning"][
                      "preflight_estimate"]
    assert "PyTorch eager" in facts["method"] and "will likely not cut latency" in facts["warning"]
    with pytest.raises(PassError, match="pre-flight"):
        apply("prune.structured", bert_dir, tmp_path / "c", heads_ratio=0.25, preflight={"iters": 5,
                                                                                          "fail_below": 100.0})
    assert not (tmp_path / "c" / "model.safetensors").exists()


def test_structured_check_refuses_decoders_and_warns_on_tiny_ratios() -> None:
    pass_ = registry()["prune.structured"](StructuredPruneConfig(heads_ratio=0.05))
    problems = pass_.check(ModelInfo("hf", "text-generation", "gpt2"), CPU)
    assert any(p.severity == "error" and "prune.layers" in (p.fix or "") for p in problems)
    assert any(p.severity == "warning" and "rarely cuts latency" in p.message for p in problems)
    assert not [p for p in pass_.check(ModelInfo("hf", "text-classification", "bert"), CPU) if p.severity == "error"]
    with pytest.raises(ValidationError, match="nothing to prune"):
        StructuredPruneConfig()


@given(width=st.integers(8, 8192), ratio=st.floats(0, 0.99), round_to=st.sampled_from([1, 8, 16, 64]))
def test_kept_width_is_a_multiple_within_bounds(width: int, ratio: float, round_to: int) -> None:
    kept = kept_width(width, ratio, round_to)
    assert kept <= width and (kept % round_to == 0 or kept == width) and kept >= min(width, round_to)


@given(heads=st.integers(1, 64), ratio=st.floats(0, 0.99))
def test_at_least_one_head_is_kept(heads: int, ratio: float) -> None:
    assert 1 <= heads_to_keep(heads, ratio) <= heads


def test_drop_layers_keeps_every_kth_from_the_top_and_reloads(bert_dir: Path, tmp_path: Path) -> None:
    assert DropLayersConfig(keep_every=2).kept(6) == [1, 3, 5]
    assert DropLayersConfig(drop=[0]).kept(3) == [1, 2]
    facts = apply("prune.layers", bert_dir, tmp_path / "out", keep=[0, 2], **NO_PREFLIGHT)["layers"]
    assert facts["kept"] == [0, 2] and json.loads((tmp_path / "out" / "config.json").read_text())[
        "num_hidden_layers"] == 2
    source = BertForSequenceClassification.from_pretrained(bert_dir).eval()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(reloaded.bert.encoder.layer[1].state_dict(), source.bert.encoder.layer[2].state_dict())


def test_drop_layers_after_head_pruning_renumbers_pruned_heads(bert_dir: Path, tmp_path: Path) -> None:
    apply("prune.structured", bert_dir, tmp_path / "pruned", heads_ratio_per_layer={2: 0.5}, **NO_PREFLIGHT)
    apply("prune.layers", tmp_path / "pruned", tmp_path / "shallow", keep=[0, 2], **NO_PREFLIGHT)
    config = json.loads((tmp_path / "shallow" / "config.json").read_text())
    assert list(config["pruned_heads"]) == ["1"] and len(config["pruned_heads"]["1"]) == 2
    assert logits(tmp_path / "shallow", IDS).shape == (3, 2)


def test_drop_layers_on_a_decoder(tmp_path: Path) -> None:
    path = make_tiny_gpt2(tmp_path / "gpt2")
    apply("prune.layers", path, tmp_path / "out", keep=[1], **NO_PREFLIGHT)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert model.config.n_layer == 1 and model.transformer.h[0].attn.layer_idx == 0
    assert model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False).shape == (1, 6)


@pytest.mark.parametrize("bad", [{}, {"keep": [0], "drop": [1]}, {"keep": [0, 0]}, {"keep_every": 1}])
def test_drop_layers_config_is_validated(bad: dict) -> None:
    with pytest.raises(ValidationError):
        DropLayersConfig(**bad)


def test_drop_layers_refuses_missing_layers(bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PassError, match="do not exist"):
        apply("prune.layers", bert_dir, tmp_path / "out", keep=[0, 7], **NO_PREFLIGHT)


def test_preflight_refuses_a_pruned_model_slower_beyond_the_spread(bert_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import slimline.compression.prune.preflight as preflight

    rounds = 30
    slower = ("PyTorch eager (stubbed)", [[10.0 + 0.01 * i for i in range(rounds)],
                                          [12.0 + 0.01 * i for i in range(rounds)]], rounds)
    monkeypatch.setattr(preflight, "_measure", lambda *args: slower)
    with pytest.raises(PassError, match="slower than the original beyond the spread") as refused:
        apply("prune.structured", bert_dir, tmp_path / "a", heads_ratio=0.5)
    assert "refuse_if_slower: false" in refused.value.fix
    facts = apply("prune.structured", bert_dir, tmp_path / "b", heads_ratio=0.5,
                  preflight={"refuse_if_slower": False})["pruning"]["preflight_estimate"]
    assert facts["estimated_speedup"] < 1 and facts["speedup_ci95"][1] < 1 and "warning" in facts
    assert facts["rounds"] == rounds and facts["parameters_after"] < facts["parameters_before"]


def test_preflight_times_a_pruned_decoder_side_by_side_in_torch(tmp_path: Path) -> None:
    from model_zoo import build

    source = build("qwen2", tmp_path / "qwen2")
    facts = apply("prune.layers", source, tmp_path / "out", keep=[0],
                  preflight={"iters": 5, "refuse_if_slower": False})["layers"]
    estimate = facts["preflight_estimate"]
    assert "PyTorch eager" in estimate["method"] and estimate["rounds"] >= 5
    assert estimate["p50_ms_before"] > 0 and estimate["p50_ms_after"] > 0
    low, high = estimate["speedup_ci95"]
    assert low <= estimate["estimated_speedup"] <= high


def test_preflight_for_a_gpu_target_on_a_cpu_machine_is_a_proxy_that_never_stops_the_run(
        bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimline.compression.prune.preflight as preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    slower = ("PyTorch eager on this machine's CPU (stubbed)", [[10.0] * 10, [12.0] * 10], 10)
    monkeypatch.setattr(preflight, "_measure", lambda *args: slower)
    gpu = PassContext(target=Target(device="cuda", runtime="onnxruntime", threads=1, precision="fp16"))
    facts = apply("prune.structured", bert_dir, tmp_path / "out", gpu, heads_ratio=0.5,
                  preflight={"fail_below": 1.5})["pruning"]["preflight_estimate"]
    assert "proxy" in facts["note"] and facts["estimated_speedup"] < 1 and "warning" in facts


@pytest.mark.gpu
def test_preflight_times_a_gpu_target_on_the_gpu(bert_dir: Path, tmp_path: Path) -> None:
    gpu = PassContext(target=Target(device="cuda", runtime="onnxruntime", threads=1, precision="fp16"))
    facts = apply("prune.structured", bert_dir, tmp_path / "out", gpu, heads_ratio=0.5, ffn_ratio=0.5,
                  preflight={"iters": 10, "refuse_if_slower": False})["pruning"]["preflight_estimate"]
    assert "CUDA device" in facts["method"] and facts["p50_ms_after"] > 0 and "note" not in facts
    assert logits(tmp_path / "out", IDS).shape == (3, 2)  # saved from the CPU copy after timing on the GPU
