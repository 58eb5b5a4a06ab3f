"""`slimline search` end to end on a tiny model: outputs after every trial, resume after a kill, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_bert, run_cli, slimline_script

SPACE = {
    "schema_version": 1,
    "steps": [{"one_of": {"name": "quantization", "options": {
        "dynamic": [{"pass": "quantize.ort-int8-dynamic",
                     "with": {"per_channel": {"choice": [False, True]}, "fallback": {"enabled": False}}}],
        "fused-dynamic": [{"pass": "optimize.ort-transformers"},
                          {"pass": "quantize.ort-int8-dynamic",
                           "with": {"per_channel": {"choice": [False, True]}, "fallback": {"enabled": False}}}],
    }}}],
    "initial_trials": [{"quantization": "fused-dynamic"}, {"quantization": "dynamic"}],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, labelled_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("search")
    make_tiny_bert(root / "model", initializer_range=0.2)
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    (root / "data.csv").write_text(labelled_csv.read_text())
    return root


def search_args(out: str, trials: int, *extra: str, space: str = "space.yaml") -> list[str]:
    profile = str(Path(__file__).resolve().parents[1] / "fixtures" / "fast-cpu.yaml")
    return ["search", "--checkpoint", "model", "--profile", profile, "--out", out, "--space", space,
            "--eval-data", "data.csv", "--trials", str(trials), "--no-history", *extra]


def ran(out: Path) -> list[dict]:
    """Trials that ran (a recipe the sampler proposed again is listed as a repeat, not run again)."""
    return [t for t in json.loads((out / "trials.json").read_text())["trials"] if t["repeat_of"] is None]


def test_a_search_writes_trials_front_best_recipe_and_a_report(workspace: Path) -> None:
    result = run_cli(*search_args("out", 2), cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    out = workspace / "out"
    trials = ran(out)
    assert len(trials) == 2 and all(t["ok"] for t in trials)
    assert {t["recipe"][0]["pass"] for t in trials} == {"optimize.ort-transformers", "quantize.ort-int8-dynamic"}
    assert json.loads((out / "front.json").read_text()), "the front is never empty once a trial finished"
    assert (out / "trials.md").read_text().count("| ") > 4
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert report["search"]["chosen_trial"] in {t["number"] for t in trials}
    assert "torch fp32 eager" in report["search"]["rebench"]["latency"]
    assert report["eval_data"]["dataset"]["split"] == "test"  # screened on validation, reported on test
    validated = run_cli("recipes", "validate", str(out / "best" / "best-recipe.yaml"))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    best_trial = json.loads((out / "best" / "trial.json").read_text())
    assert best_trial["number"] == report["search"]["chosen_trial"]
    assert json.loads((out / "best" / "model" / "manifest.json").read_text())["format"] == "onnx"
    page = (out / "report.html").read_text()
    assert "Search trials" in page and "Search trials and the Pareto front" in page
    assert (out / "front.svg").read_text().lstrip().startswith("<svg")


def test_a_search_into_an_out_of_a_different_search_is_refused(workspace: Path) -> None:
    changed = workspace / "space-other.yaml"
    changed.write_text(yaml.safe_dump({**SPACE, "initial_trials": []}))
    result = run_cli(*search_args("out", 2, space="space-other.yaml"), cwd=workspace)
    assert result.returncode == 2
    assert "space" in result.stderr and "new --out" in result.stderr


def test_a_search_without_labelled_data_is_refused_before_any_work(tmp_path: Path) -> None:
    model = make_tiny_bert(tmp_path / "model")
    profile = str(Path(__file__).resolve().parents[1] / "fixtures" / "fast-cpu.yaml")
    result = run_cli("search", "--checkpoint", str(model), "--profile", profile, "--out", str(tmp_path / "out"),
                     "--trials", "1", "--no-history")
    assert result.returncode == 2
    assert "labelled data" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_killed_search_keeps_its_best_so_far_and_resumes_from_finished_trials(workspace: Path) -> None:
    process = subprocess.Popen([slimline_script(), *search_args("resumed", 3)], cwd=workspace,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "COLUMNS": "200"})
    out = workspace / "resumed"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "trials.json").is_file() and len(ran(out)) >= 1:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the search ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = ran(out)
    assert len(before) >= 1
    best = json.loads((out / "best" / "trial.json").read_text())  # written after the first trial, complete
    assert best["number"] in {t["number"] for t in before}
    assert (out / "best" / "model" / "manifest.json").is_file()

    result = run_cli(*search_args("resumed", 3), cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    after = ran(out)
    assert len(after) == 3
    kept = {t["number"]: t for t in after}
    for trial in before:  # finished trials are not run again: same outcome, same timing
        assert kept[trial["number"]]["latency_p50_ms"] == trial["latency_p50_ms"]
    assert json.loads((out / "report.json").read_text())["search"]["trials"] >= 3


@pytest.mark.slow
def test_trials_run_as_tasks_on_a_local_ray(workspace: Path) -> None:
    pytest.importorskip("ray")
    result = run_cli(*search_args("on-ray", 2, "--executor", "ray", "--parallel", "2"), cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    out = workspace / "on-ray"
    assert len(ran(out)) == 2
    notes = json.loads((out / "report.json").read_text())["search"]["notes"]
    assert any("Ray tasks" in note for note in notes)


RUNTIME_SPACE = {
    "schema_version": 1,
    "steps": [{"one_of": {"name": "quantization", "options": {
        "dynamic": [{"pass": "quantize.ort-int8-dynamic", "with": {"fallback": {"enabled": False}}}],
        "openvino-float": [{"pass": "convert.openvino-precision", "with": {"precision": "f32"}}],
    }}}],
    "initial_trials": [{"quantization": "dynamic"}, {"quantization": "openvino-float"}],
}


@pytest.mark.slow  # two trials on two runtimes, re-timed, then the chosen one benched: about a minute
def test_the_runtime_is_a_search_dimension(workspace: Path) -> None:
    pytest.importorskip("openvino")
    (workspace / "runtime-space.yaml").write_text(yaml.safe_dump(RUNTIME_SPACE))
    result = run_cli(*search_args("out-runtimes", 2, space="runtime-space.yaml"), cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {t["recipe"][0]["pass"]: t for t in ran(workspace / "out-runtimes")}
    assert all(t["ok"] for t in trials.values()), trials
    assert trials["quantize.ort-int8-dynamic"]["runtime"] == "onnxruntime"
    assert trials["convert.openvino-precision"]["runtime"] == "openvino"
    report = json.loads((workspace / "out-runtimes" / "report.json").read_text())
    chosen = next(t for t in trials.values() if t["number"] == report["search"]["chosen_trial"])
    assert report["measurements"]["runtime"] == chosen["runtime"]


STUDENT_SPACE = {
    "schema_version": 1,
    "steps": [
        {"optional": {"name": "student", "steps": [
            {"pass": "prune.structured", "with": {"heads_ratio": 0.5, "ffn_ratio": 0.5}},
            {"pass": "distill.kd", "with": {"max_steps": {"choice": [4, 6]}, "batch_size": 8}}]}},
        {"one_of": {"name": "quantization", "options": {
            "dynamic": [{"pass": "quantize.ort-int8-dynamic", "with": {"fallback": {"enabled": False}}}],
            "fused-dynamic": [{"pass": "optimize.ort-transformers"},
                              {"pass": "quantize.ort-int8-dynamic", "with": {"fallback": {"enabled": False}}}],
        }}}],
    "initial_trials": [{"student": True, "student/distill.kd:max_steps": 4, "quantization": "dynamic"}],
}


@pytest.mark.slow  # a distillation and four stages, then the final bench: about 30 s idle
def test_a_trained_student_is_tried_next_under_the_other_schemes_and_built_once(workspace: Path) -> None:
    (workspace / "student-space.yaml").write_text(yaml.safe_dump(STUDENT_SPACE))
    result = run_cli(*search_args("out-students", 2, space="student-space.yaml"), cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = ran(workspace / "out-students")
    assert first["ok"] and second["ok"], (first["error"], second["error"])
    assert second["student_of"] == first["number"], "queued to reuse the first trial's student"
    assert second["recipe"][:2] == first["recipe"][:2]
    assert second["recipe"][2]["pass"] == "optimize.ort-transformers"  # under the other scheme
    distilled = list((workspace / "out-students" / "stages").glob("*distill.kd*"))
    assert len(distilled) == 1, f"the student is distilled once, not per scheme: {distilled}"
