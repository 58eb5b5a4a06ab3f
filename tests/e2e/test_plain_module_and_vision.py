"""A plain nn.Module + state dict and a transformers image classifier through `run`, `bench` and `package`,
judged on top-1 and agreement with fp32, with no hand-written manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from plain_modules import write_image_folder, write_tiny_cnn

from slimline.core.artifact import sha256_file

FAST_VISION = """\
schema_version: 1
name: fast-vision
target: {device: cpu, runtime: onnxruntime, threads: 1, precision: int8}
shapes: [{batch_size: 1}]
recipe: cpu-vision-int8-static
measurement: {warmup_iters: 1, min_iters: 5, min_time_s: 0.0, max_time_s: 5.0}
budgets:
  latency_p95_ms: {max: 10000}
  top1_drop_pt: {max: 100}
  agreement_pct: {min: 0}
"""


@pytest.fixture(scope="module")
def vision_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("plain-module")
    write_tiny_cnn(workdir)
    write_image_folder(workdir / "images")
    (workdir / "fast-vision.yaml").write_text(FAST_VISION)
    return workdir


def _env(workdir: Path) -> dict[str, str]:
    return {"SLIMLINE_CACHE_DIR": str(workdir / "cache")}


@pytest.fixture(scope="module")
def module_run(vision_workdir: Path) -> Path:
    result = run_cli("run", "--model-factory", "tiny_cnn:build", "--weights", "weights.pth", "--inputs", "inputs.yaml",
                     "--profile", "fast-vision.yaml", "--eval-data", "images:test", "--out", "run",
                     cwd=vision_workdir, env=_env(vision_workdir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (vision_workdir / "run-stderr.txt").write_text(result.stderr)
    return vision_workdir / "run"


def test_a_plain_module_run_ends_with_a_verdict_on_top1_and_agreement(module_run: Path) -> None:
    report = json.loads((module_run / "report.json").read_text())
    assert report["verdict"] == "pass" and report["eval_data"]["evaluator"] == "image-top1"
    measured = {b["name"]: b for b in report["budgets"]}
    assert measured["top1_drop_pt"]["status"] == "pass" and measured["agreement_pct"]["measured"] is not None
    assert report["baseline"]["format"] == "torch-module" and report["baseline"]["runtime"] == "torch"
    assert {"top1_pct", "top1_drop_pt", "agreement_pct"} <= set(report["measurements"]["quality"])
    # a plain module is timed side by side with its ONNX candidates too (was `side_by_side: null`), labelled
    # with the shape it is fed
    assert report["side_by_side"]["measured"] and report["side_by_side"]["shape"] == "b1_3x16x16"
    assert measured["latency_p95_ms"]["measurement"] == "side_by_side"
    assert list(report["measurements"]["latency"]) == ["b1_3x16x16"]


def test_every_stage_records_the_factory_and_the_hash_of_the_users_weights(module_run: Path,
                                                                          vision_workdir: Path) -> None:
    manifests = [json.loads(p.read_text()) for p in sorted((module_run / "stages").glob("*/manifest.json"))]
    assert [m["lineage"][-1]["name"] for m in manifests] == ["export.onnx", "quantize.ort-int8-static"]
    for manifest in manifests:
        assert manifest["lineage"][0]["name"] == "torch-module"
        assert manifest["metadata"]["factory"] == "tiny_cnn:build"
        assert manifest["metadata"]["weights_sha256"] == sha256_file(vision_workdir / "weights.pth")
    quantization = manifests[-1]["metadata"]["quantization"]
    assert quantization["calibration"]["source"] == "images" and quantization["coverage"]["quantized_weight_ops"] == 3


def test_calibration_reads_the_train_split_of_the_eval_data_and_says_so(module_run: Path, vision_workdir: Path) -> None:
    """The verdict is judged on images:test; calibration read the train split of the same folder (same seed), and
    the source, split, count and hash are printed and in the report."""
    report = json.loads((module_run / "report.json").read_text())
    calibration = report["calibration"]
    assert calibration["source"] == "images" and calibration["split"] == "train" and report["eval_data"][
        "dataset"]["split"] == "test"
    assert calibration["examples"] == 72 and len(calibration["sha256"]) == 64  # 80% of 90 images
    assert "calibration: 72 examples of images / train" in (vision_workdir / "run-stderr.txt").read_text()
    assert "Calibrated on 72 examples of images / train" in (module_run / "report.md").read_text()
    quality = report["measurements"]["quality"]
    assert {"rel_error@logits", "max_abs_error", "top5_agreement_pct"} & set(quality)


def test_a_plain_module_run_can_be_benchmarked_again_and_packaged(module_run: Path, vision_workdir: Path) -> None:
    final = sorted((module_run / "stages").glob("02-*"))[0]
    bench = run_cli("bench", "--model", str(final), "--profile", "fast-vision.yaml", "--eval-data", "images:test",
                    "--out", "bench", cwd=vision_workdir, env=_env(vision_workdir))
    assert bench.returncode == 0, bench.stderr[-2000:]
    packaged = run_cli("package", str(module_run), "--out", "bundle", cwd=vision_workdir, env=_env(vision_workdir))
    assert packaged.returncode == 0, packaged.stderr[-2000:]


def test_a_factory_without_weights_exits_two_and_says_what_to_pass(vision_workdir: Path) -> None:
    result = run_cli("run", "--model-factory", "tiny_cnn:build", "--inputs", "inputs.yaml", "--out", "nope",
                     cwd=vision_workdir, env=_env(vision_workdir))
    assert result.returncode == 2 and "--weights" in result.stderr and "fix:" in result.stderr


@pytest.mark.slow
def test_a_transformers_image_classifier_runs_on_an_image_folder(tiny_vit: Path, vision_workdir: Path) -> None:
    result = run_cli("run", "--checkpoint", str(tiny_vit), "--profile", "fast-vision.yaml", "--eval-data",
                     "images:test", "--out", "vit-run", cwd=vision_workdir, env=_env(vision_workdir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((vision_workdir / "vit-run" / "report.json").read_text())
    assert report["baseline"]["quality"]["top1_pct"] >= 0 and report["verdict"] == "pass"
