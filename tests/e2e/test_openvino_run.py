"""`slimline run` on an OpenVINO profile end to end, then `package` and `verify` of its bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

from slimline.core.errors import EXIT_BAD_INPUT

pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'slimline[openvino]'")
PROFILE = REPO / "tests" / "fixtures" / "fast-cpu-openvino.yaml"


@pytest.mark.slow  # export, NNCF calibration, two benchmark workers and a side-by-side timing: ~60 s on 2 cores
def test_an_openvino_run_reports_its_precision_and_packages_a_verifiable_bundle(
        tiny_bert: Path, labelled_csv: Path, tmp_path: Path) -> None:
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(PROFILE), "--out", "out",
                        "--eval-data", str(labelled_csv), cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    final = report["measurements"]
    assert final["runtime"] == "openvino" and final["format"] == "openvino"
    assert final["runner"]["inference_precision"] in ("bf16", "f32")
    assert final["runner"]["performance_hint"] == "LATENCY"
    assert {"kind", "bf16", "amx", "vnni"} <= set(report["machine"]["cpu_capabilities"])
    assert [s["name"] for s in report["stages"]] == ["export.onnx", "quantize.nncf-int8", "convert.openvino-precision"]
    packaged = run_cli("package", "out", "--out", "bundle", cwd=tmp_path)
    assert packaged.returncode == 0, packaged.stdout + packaged.stderr
    verified = run_cli("verify", "bundle", cwd=tmp_path)
    assert verified.returncode == 0 and "openvino" in verified.stdout, verified.stdout + verified.stderr


def test_an_unknown_runtime_option_is_refused_before_any_stage(tiny_bert: Path, labelled_csv: Path,
                                                                tmp_path: Path) -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    profile["target"]["runtime_options"] = {"performance_hnt": "latency"}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(profile))
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(path), "--out", "out",
                        "--eval-data", str(labelled_csv), cwd=tmp_path)
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
    assert "performance_hnt" in completed.stderr and "runtime_options" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_an_openvino_profile_on_a_cuda_device_is_invalid(tmp_path: Path) -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    profile["target"]["device"] = "cuda"
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump(profile))
    completed = run_cli("profiles", "validate", str(path))
    assert completed.returncode == EXIT_BAD_INPUT and "runtime 'openvino' needs device 'cpu'" in completed.stderr


@pytest.mark.slow  # three candidates built, timed side by side and scored, then the chosen one benched: ~90 s
def test_runtime_auto_times_every_candidate_and_continues_with_the_fastest_within_budget(
        tiny_bert: Path, labelled_csv: Path, tmp_path: Path) -> None:
    profile = REPO / "tests" / "fixtures" / "fast-cpu-auto.yaml"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(profile), "--out", "out",
                        "--eval-data", str(labelled_csv), cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    choice = report["runtime_choice"]
    rows = {row["label"]: row for row in choice["candidates"]}
    assert set(rows) == {"onnxruntime dynamic int8", "openvino nncf int8", "openvino float"}
    assert all(row["p50_ms"] > 0 and "drop_pt" in row and row["validation_examples"] > 0 for row in rows.values())
    within = [label for label, row in rows.items() if not row["budget_failures"]]
    assert choice["chosen"] == min(within, key=lambda label: rows[label]["p50_ms"])
    assert report["measurements"]["runtime"] == rows[choice["chosen"]]["runtime"] == choice["runtime"]
    assert report["profile"]["target"]["runtime"] == choice["runtime"]
    assert [s["label"] for s in choice["skipped"]] == ["openvino on amx only"] or report["machine"][
        "cpu_capabilities"]["amx"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Runtime choice" in markdown and f"Chosen: **{choice['chosen']}**" in markdown
