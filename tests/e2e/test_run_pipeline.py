"""`slimline run` end to end on the tiny BERT: report, stage directories, reuse, and budget gating.

One good run is shared by the module (a CLI run takes tens of seconds); the tests that rerun into
its --out only ever compare against what it wrote. It uses a relative --out, as users type it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"
INT8 = "quantize.ort-int8-dynamic"


@dataclass(frozen=True)
class Run:
    out: Path
    cwd: Path
    completed: subprocess.CompletedProcess

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


def _stage_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "stages").iterdir() if p.is_dir())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good_run(tiny_bert: Path, labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("run")
    cwd = root / "cwd"
    cwd.mkdir()
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out", "out",
                        "--eval-data", str(labelled_csv), cwd=cwd)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return Run(cwd / "out", cwd, completed)


def test_a_run_within_budget_exits_zero_with_a_complete_report(good_run: Run) -> None:
    report = good_run.report
    assert report["schema_version"] == 2
    assert report["verdict"] == "pass"
    assert isinstance(report["machine"]["cpu_flags"], list)
    assert {"torch", "transformers", "onnxruntime", "onnx", "slimline"} <= set(report["versions"])
    assert report["recipe"] == [{"pass": INT8, "with": report["recipe"][0]["with"]}]
    assert [(b["name"], b["status"]) for b in report["budgets"]] == [
        ("latency_p95_ms", "pass"), ("size_mb", "pass"), ("accuracy_drop_pt", "pass")]
    for budget in report["budgets"]:
        assert {"name", "kind", "limit", "measured", "status"} <= set(budget)
        assert isinstance(budget["limit"], float) and isinstance(budget["measured"], float)
    assert report["speedup_vs_baseline"] > 0
    assert isinstance(report["accuracy_drop_pt"], float)
    assert report["measurements"]["accuracy_pct"] is not None
    assert report["baseline"]["runtime"] == "torch" and report["measurements"]["runtime"] == "onnxruntime"
    assert report["eval_data"]["examples"] > 0
    assert "verdict: PASS" in good_run.completed.stdout


def test_a_run_writes_a_markdown_report_with_the_verdict(good_run: Run) -> None:
    markdown = (good_run.out / "report.md").read_text()
    assert "verdict **PASS**" in markdown
    assert "latency_p95_ms" in markdown and INT8 in markdown


def test_each_stage_directory_has_a_manifest_with_lineage_and_file_hashes(good_run: Run, tiny_bert: Path) -> None:
    from slimline.formats.checkpoint import open_checkpoint

    export_dir, int8_dir = _stage_dirs(good_run.out)
    assert export_dir.name.startswith("01-export.onnx-") and int8_dir.name.startswith(f"02-{INT8}-")
    export_manifest = json.loads((export_dir / "manifest.json").read_text())
    int8_manifest = json.loads((int8_dir / "manifest.json").read_text())
    assert [(s["kind"], s["name"]) for s in int8_manifest["lineage"]] == [
        ("source", "hf-checkpoint"), ("exporter", "export.onnx"), ("pass", INT8)]
    assert int8_manifest["lineage"][:2] == export_manifest["lineage"]
    assert int8_manifest["lineage"][2]["parent_manifest_sha256"] == _sha256(export_dir / "manifest.json")
    assert export_manifest["lineage"][1]["parent_manifest_sha256"] == open_checkpoint(tiny_bert).manifest_sha256
    assert int8_manifest["metadata"]["quantization"]["scheme"] == "dynamic-int8"
    for directory, manifest in ((export_dir, export_manifest), (int8_dir, int8_manifest)):
        assert manifest["format"] == "onnx" and manifest["model_file"] == "model.onnx"
        assert {"model.onnx", "config.json", "tokenizer_config.json"} <= set(manifest["files"])
        for rel, digest in manifest["files"].items():
            assert _sha256(directory / rel) == digest, rel
    recorded = [(s["name"], good_run.cwd / s["directory"], s["reused"]) for s in good_run.report["stages"]]
    assert recorded == [("export.onnx", export_dir, False), (INT8, int8_dir, False)]


def test_the_export_stage_records_parity_with_pytorch(good_run: Run) -> None:
    export_dir = _stage_dirs(good_run.out)[0]
    parity = json.loads((export_dir / "manifest.json").read_text())["metadata"]["parity"]
    assert 0 <= parity["max_abs_diff"] <= parity["atol"]
    assert parity["argmax_agreement"] >= parity["min_agreement"]


def test_a_run_leaves_no_stray_files_in_the_working_directory(good_run: Run) -> None:
    """ORT's symbolic shape inference dumps a debug model into the working directory when it gives up."""
    assert sorted(p.name for p in good_run.cwd.iterdir()) == ["out"]
    assert sorted(p.name for p in good_run.out.iterdir()) == [".slimline-run.json", "report-tradeoff.svg",
                                                              "report.html", "report.json", "report.md", "run.yaml",
                                                              "stages"]


def test_a_failed_rerun_leaves_the_previous_report_byte_identical(good_run: Run, tiny_bert: Path,
                                                                 tmp_path: Path) -> None:
    before = {name: (good_run.out / name).read_bytes() for name in ("report.json", "report.md")}
    stages_before = sorted(p.name for p in (good_run.out / "stages").iterdir())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"- pass: {INT8}\n  with: {{per_chanel: true}}\n")
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE),
                        "--out", str(good_run.out), "--recipe", str(recipe))
    assert completed.returncode == 2, completed.stderr
    assert "per_chanel" in completed.stderr
    assert {name: (good_run.out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in (good_run.out / "stages").iterdir()) == stages_before


def test_a_rerun_into_the_same_out_reuses_every_stage(good_run: Run, tiny_bert: Path, labelled_csv: Path) -> None:
    manifests = {d.name: (d / "manifest.json").read_bytes() for d in _stage_dirs(good_run.out)}
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE),
                        "--out", "out", "--eval-data", str(labelled_csv), cwd=good_run.cwd)
    assert completed.returncode == 0, completed.stderr
    report = good_run.report
    assert [s["reused"] for s in report["stages"]] == [True, True]
    assert {d.name: (d / "manifest.json").read_bytes() for d in _stage_dirs(good_run.out)} == manifests
    assert sorted(p.name for p in good_run.out.iterdir()) == [".slimline-run.json", "report-tradeoff.svg",
                                                              "report.html", "report.json", "report.md", "run.yaml",
                                                              "stages"]


def test_an_impossible_budget_exits_one_with_a_failing_verdict(good_run: Run, tiny_bert: Path, labelled_csv: Path,
                                                              tmp_path: Path) -> None:
    profile = yaml.safe_load(FAST_PROFILE.read_text())
    profile["budgets"]["latency_p95_ms"] = {"max": 0.0001}
    profile_path = tmp_path / "impossible.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    out = tmp_path / "out"
    shutil.copytree(good_run.out / "stages", out / "stages")  # same stages: only the benchmark runs again
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(profile_path), "--out", str(out),
                        "--eval-data", str(labelled_csv))
    assert completed.returncode == 1, completed.stdout + completed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "fail"
    latency = next(b for b in report["budgets"] if b["name"] == "latency_p95_ms")
    assert latency["status"] == "fail" and latency["limit"] == 0.0001 and latency["measured"] > 0.0001
    assert all(stage["reused"] for stage in report["stages"])
    assert "verdict: FAIL" in completed.stdout


def test_every_timing_budget_names_the_side_by_side_measurement_and_its_interval(good_run: Run) -> None:
    report = good_run.report
    latency = next(b for b in report["budgets"] if b["name"] == "latency_p95_ms")
    assert latency["measurement"] == "side_by_side" and latency["samples"] >= 5
    assert latency["interval"][0] <= latency["measured"] <= latency["interval"][1]
    side_by_side = report["side_by_side"]
    assert side_by_side["measured"] and side_by_side["method"] == "block-interleaved" and side_by_side["rounds"] >= 5
    assert side_by_side["shape"] == "b1_s16" and set(side_by_side["blocks"]) == {report["baseline"]["label"], INT8}
    final = report["measurements"]
    assert final["speedup_vs_baseline"] == side_by_side["speedup_vs_baseline"][INT8]
    assert final["speedup_vs_baseline_alone"] > 0  # the alone figure stays, labelled as such
    markdown = (good_run.out / "report.md").read_text()
    assert "Side by side (what the verdict judged)" in markdown and "p50 ms alone" in markdown
    assert report["command_line"].startswith("slimline run --checkpoint")


def test_run_yaml_reruns_the_same_plan_into_another_out(good_run: Run, tmp_path: Path) -> None:
    out = tmp_path / "again"
    shutil.copytree(good_run.out / "stages", out / "stages")  # same stages: only the benchmark runs again
    completed = run_cli("run", "--config", str(good_run.out / "run.yaml"), "--out", str(out))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    again = json.loads((out / "report.json").read_text())
    first = good_run.report
    assert [Path(s["directory"]).name for s in again["stages"]] == [Path(s["directory"]).name
                                                                    for s in first["stages"]]
    assert all(s["reused"] for s in again["stages"])
    assert (again["profile"], again["recipe"], again["eval_data"]) == (first["profile"], first["recipe"],
                                                                       first["eval_data"])


def test_run_config_refuses_options_it_already_states(good_run: Run, tmp_path: Path) -> None:
    completed = run_cli("run", "--config", str(good_run.out / "run.yaml"), "--profile", "cpu",
                        "--out", str(tmp_path / "x"))
    assert completed.returncode == 2 and "--profile" in completed.stderr
    assert not (tmp_path / "x").exists()
