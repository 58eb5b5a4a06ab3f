"""Verdicts whose quality metric can see the damage: an embedding (cosine, not argmax), a multi-output head (every
output by its own metric and budget), and budgets the model cannot measure refused before any work."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import run_cli
from plain_modules import DETECTOR_SPEC, EMBEDDER_SPEC, write_frames_npz, write_image_folder, write_quality_model

PROFILE = """\
schema_version: 1
name: {name}
target: {{device: cpu, runtime: onnxruntime, threads: 1, precision: int8}}
shapes: [{{batch_size: 1}}]
recipe: [{{pass: quantize.ort-int8-dynamic, with: {{fallback: {{enabled: false}}}}}}]
measurement: {{warmup_iters: 1, min_iters: 5, min_time_s: 0.0, max_time_s: 3.0}}
{extra}budgets:
{budgets}
"""


def _profile(workdir: Path, name: str, budgets: dict[str, str], extra: str = "") -> str:
    lines = "\n".join(f"  {metric}: {limit}" for metric, limit in budgets.items())
    (workdir / f"{name}.yaml").write_text(PROFILE.format(name=name, budgets=lines, extra=extra))
    return f"{name}.yaml"


def _run(workdir: Path, factory: str, profile: str, data: str, out: str, *extra: str):
    return run_cli("run", "--model-factory", f"quality_models:{factory}", "--weights", f"{factory}.pth", "--inputs",
                   f"{factory}.yaml", "--profile", profile, "--eval-data", data, "--out", out, *extra, cwd=workdir,
                   env={"SLIMLINE_CACHE_DIR": str(workdir / "cache")})


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("embedder")
    write_quality_model(workdir, "build_embedder", EMBEDDER_SPEC)
    write_frames_npz(workdir / "frames.npz")
    return workdir


def test_int8_damage_to_an_embedding_fails_on_cosine_though_argmax_agrees(embedder_dir: Path) -> None:
    """Per-tensor INT8 zeroes the projection: every embedding keeps its argmax (a constant first dimension) but
    loses its direction. Read as a vector the verdict fails on cosine; read as class logits (the old blind
    spot) agreement is 100%, and only the logits' error still catches it."""
    cosine = _run(embedder_dir, "build_embedder", _profile(embedder_dir, "emb", {
        "cosine_min_mean": "{min: 0.99}", "cosine_p01": "{min: 0.9}"}), "frames.npz", "run-vector")
    assert cosine.returncode == 1, cosine.stdout[-2000:] + cosine.stderr[-2000:]
    report = json.loads((embedder_dir / "run-vector" / "report.json").read_text())
    budgets = {b["name"]: b for b in report["budgets"]}
    assert budgets["cosine_mean"]["status"] == "fail" and budgets["cosine_mean"]["measured"] < 0.97
    assert report["eval_data"]["outputs"] == [{"name": "embedding", "kind": "vector"}]
    assert "agreement_pct" not in report["measurements"]["quality"]
    assert "| embedding | vector | cosine_mean" in (embedder_dir / "run-vector" / "report.md").read_text()

    argmax = _run(embedder_dir, "build_embedder", _profile(embedder_dir, "argmax", {
        "agreement_pct": "{min: 99}", "rel_error": "{max: 0.05}"}, "eval: {outputs: {embedding: class-logits}}\n"),
        "frames.npz", "run-argmax")
    report = json.loads((embedder_dir / "run-argmax" / "report.json").read_text())
    budgets = {b["name"]: b for b in report["budgets"]}
    assert argmax.returncode == 1 and budgets["agreement_pct"]["status"] == "pass"
    assert budgets["agreement_pct"]["measured"] == 100.0 and budgets["rel_error"]["status"] == "fail"


def test_a_multi_output_head_is_judged_on_every_output_by_its_own_budget(tmp_path: Path) -> None:
    """Boxes and scores survive per-tensor INT8, the keypoints do not: the verdict names the output that failed."""
    write_quality_model(tmp_path, "build_detector", DETECTOR_SPEC)
    write_image_folder(tmp_path / "images", per_class=20, size=16)
    profile = _profile(tmp_path, "det", {"rel_error@boxes": "{max: 0.2}", "cosine_mean@keypoints": "{min: 0.99}",
                                         "agreement_pct@scores": "{min: 90}"})
    result = _run(tmp_path, "build_detector", profile, "images:test", "run")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    statuses = {b["name"]: b["status"] for b in report["budgets"]}
    assert statuses == {"rel_error@boxes": "pass", "cosine_mean@keypoints": "fail", "agreement_pct@scores": "pass"}
    quality = report["measurements"]["quality"]
    assert {"cosine_mean@boxes", "cosine_mean@keypoints", "agreement_pct@scores", "rel_error@scores"} <= set(quality)
    assert "agreement_pct@boxes" not in quality  # box offsets are never argmaxed
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in ("boxes", "keypoints", "scores"))


def test_a_budget_the_model_cannot_measure_exits_two_before_any_stage(embedder_dir: Path) -> None:
    profile = _profile(embedder_dir, "wrong", {"perplexity_increase_pct": "{max: 10}", "agreement_pct": "{min: 99}"})
    started = time.monotonic()
    result = _run(embedder_dir, "build_embedder", profile, "frames.npz", "refused")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "perplexity_increase_pct" in result.stderr and "agreement_pct (no output measures it)" in result.stderr
    assert "embedding (vector" in result.stderr and "cosine_mean" in result.stderr and "fix:" in result.stderr
    assert not (embedder_dir / "refused").exists() and time.monotonic() - started < 60
