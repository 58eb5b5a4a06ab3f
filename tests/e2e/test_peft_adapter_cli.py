"""A LoRA adapter + its base through the installed `slimline` script: export, run (and its rerun), refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_tiny_bert, run_cli
from peft_adapter import make_lora_adapter

from slimline.core.artifact import ModelDir, hash_tree, sha256_json

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lora-cli")
    base = make_tiny_bert(root / "base", initializer_range=0.2)
    return base, make_lora_adapter(base, root / "adapter")


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    return {"SLIMLINE_CACHE_DIR": str(tmp_path / "cache")}


def _peft_logits(base: Path, adapter: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), str(adapter)).eval()
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()


def test_export_of_an_adapter_matches_base_plus_adapter_and_records_both_hashes(lora: tuple[Path, Path],
                                                                                tmp_path: Path,
                                                                                cache_env: dict[str, str]) -> None:
    import onnxruntime as ort

    base, adapter = lora
    out = tmp_path / "onnx"
    completed = run_cli("export", "--checkpoint", str(adapter), "--base", str(base), "--out", str(out), env=cache_env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    model = ModelDir.open(out)
    source = model.manifest.lineage[0]
    assert (source.kind, source.name) == ("source", "peft-adapter")
    assert source.config["adapter"]["sha256"] == sha256_json(hash_tree(adapter))
    assert source.config["base"]["sha256"] == sha256_json(hash_tree(base))
    assert Path(source.config["path"]).is_relative_to(tmp_path / "cache"), "the merged checkpoint is cached"
    merge = model.manifest.metadata["adapter_merge"]
    assert merge["max_abs_diff"] <= merge["tolerance"] < merge["adapter_effect_max_abs"]
    rng = np.random.default_rng(7)
    feeds = {"input_ids": rng.integers(5, 30, size=(3, 9)), "attention_mask": np.ones((3, 9), dtype=np.int64),
             "token_type_ids": np.zeros((3, 9), dtype=np.int64)}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(None, feeds)[0], _peft_logits(base, adapter, feeds), atol=1e-3)


@pytest.mark.slow  # tens of seconds of full runs; CI's slow step runs it
def test_run_on_an_adapter_merges_first_and_a_rerun_reuses_the_merge(lora: tuple[Path, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the Python API (`base=` given; the CLI's --base is the same parameter): the merge is stage 00."""
    import slimline

    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(tmp_path / "cache"))
    base, adapter = lora
    out = tmp_path / "run"
    report = slimline.run(adapter, base=base, profile=FAST_PROFILE, out=out)
    assert [s.name for s in report.stages] == ["merge.peft", "export.onnx", "quantize.ort-int8-dynamic"]
    merged = ModelDir.open(report.stages[0].directory)
    assert merged.path.parent == out / "stages" and report.checkpoint == str(merged.path)
    assert merged.manifest.lineage[0].config["base"]["path"] == str(base.resolve())
    assert report.baseline.label.startswith("torch") and report.measurements.latency
    rerun = slimline.run(adapter, base=base, profile=FAST_PROFILE, out=out)
    assert all(stage.reused for stage in rerun.stages)
    assert not (tmp_path / "cache").exists(), "a run keeps its merge in its own stages"


@pytest.mark.parametrize("damage", ["truncated-weights", "hub-base", "mismatched-base"])
def test_a_bad_adapter_or_base_exits_2_with_the_fix_and_writes_nothing(lora: tuple[Path, Path], tmp_path: Path,
                                                                      damage: str, cache_env: dict[str, str]) -> None:
    base, adapter = lora
    copy = Path(shutil.copytree(adapter, tmp_path / "adapter"))
    args = ["--base", str(base)]
    if damage == "truncated-weights":
        (copy / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
        expected = "not a readable safetensors file"
    elif damage == "hub-base":
        config = json.loads((copy / "adapter_config.json").read_text())
        (copy / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/model"}))
        args, expected = [], "Hub id"
    else:  # a BERT classifier of another width
        from transformers import BertConfig, BertForSequenceClassification

        other = tmp_path / "other"
        BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=32)).save_pretrained(other)
        args, expected = ["--base", str(other)], "does not fit the base"
    out = tmp_path / "out"
    completed = run_cli("export", "--checkpoint", str(copy), *args, "--out", str(out), env=cache_env)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert expected in completed.stderr and "fix:" in completed.stderr
    assert not out.exists() and not (tmp_path / "cache").exists()
