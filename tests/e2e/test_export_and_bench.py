"""`export` and `bench` on the other task families: a causal LM and an image classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from slimline.core.artifact import ModelDir

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"


def _export(checkpoint: Path, out: Path) -> ModelDir:
    completed = run_cli("export", "--checkpoint", str(checkpoint), "--out", str(out))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "parity max|diff|" in completed.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "work directories must be cleaned up"
    return ModelDir.open(out)


@pytest.fixture(scope="module")
def exported_vit(tiny_vit: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return _export(tiny_vit, tmp_path_factory.mktemp("vit-export") / "onnx")


def _assert_exported(model: ModelDir, task: str, source: Path) -> None:
    manifest = model.manifest
    assert (manifest.format, manifest.task, manifest.model_file) == ("onnx", task, "model.onnx")
    assert (model.path / "model.onnx").is_file() and "model.onnx" in manifest.files
    assert [(s.kind, s.name) for s in manifest.lineage] == [("source", "hf-checkpoint"), ("exporter", "export.onnx")]
    assert manifest.lineage[0].config["path"] == str(source.resolve())
    parity = manifest.metadata["parity"]
    assert 0 <= parity["max_abs_diff"] <= parity["atol"]
    assert parity["argmax_agreement"] >= parity["min_agreement"]


def test_a_causal_lm_exports_to_onnx_with_parity(tiny_gpt2: Path, tmp_path: Path) -> None:
    model = _export(tiny_gpt2, tmp_path / "onnx")
    _assert_exported(model, "text-generation", tiny_gpt2)
    assert "input_ids" in {spec.name for spec in model.manifest.inputs}


def test_an_image_classifier_exports_to_onnx_with_parity(exported_vit: ModelDir, tiny_vit: Path) -> None:
    _assert_exported(exported_vit, "image-classification", tiny_vit)
    assert [spec.name for spec in exported_vit.manifest.inputs] == ["pixel_values"]


@pytest.mark.slow  # tens of seconds of full runs; CI's slow step runs it
def test_benchmarking_an_exported_image_model_without_eval_data_is_incomplete(exported_vit: ModelDir,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "bench"
    completed = run_cli("bench", "--model", str(exported_vit.path), "--profile", str(FAST_PROFILE), "--out", str(out))
    assert completed.returncode == 1, completed.stdout + completed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "incomplete"
    statuses = {b["name"]: b["status"] for b in report["budgets"]}
    assert statuses == {"latency_p95_ms": "pass", "size_mb": "pass", "accuracy_drop_pt": "not_measured"}
    assert report["measurements"]["accuracy_pct"] is None
    assert any("accuracy was not measured" in w for w in report["warnings"])
    assert report["baseline"]["runtime"] == "torch" and report["measurements"]["runtime"] == "onnxruntime"
    assert report["measurements"]["latency"]["b1_3x32x32"]["iterations"] >= 5  # what it is fed, not b1_s16
    assert report["speedup_vs_baseline"] > 0
    assert (out / "report.md").is_file()
