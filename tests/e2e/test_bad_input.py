"""Bad input to the CLI: exit code 2, a message that says what and how to fix it, and nothing written.

These all fail in the cheap checks before any export or benchmark, so each takes about a second.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"
INT8 = "quantize.ort-int8-dynamic"


def _one_line(text: str) -> str:
    """stderr as one line: rich wraps long messages."""
    return " ".join(text.split())


def _missing_checkpoint(tmp: Path, bert: Path) -> list[str]:
    return ["--checkpoint", str(tmp / "no-such-checkpoint")]


def _corrupt_checkpoint(tmp: Path, bert: Path) -> list[str]:
    broken = Path(shutil.copytree(bert, tmp / "broken"))
    (broken / "model.safetensors").write_bytes(b"\x00garbage, not a safetensors header" * 4)
    return ["--checkpoint", str(broken)]


def _recipe(tmp: Path, text: str) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return path


def _unknown_pass(tmp: Path, bert: Path) -> list[str]:
    return ["--checkpoint", str(bert), "--recipe", str(_recipe(tmp, "- pass: quantize.ort-int8-dynamik\n"))]


def _misspelled_key(tmp: Path, bert: Path) -> list[str]:
    recipe = _recipe(tmp, f"- pass: {INT8}\n  with: {{per_chanel: true}}\n")
    return ["--checkpoint", str(bert), "--recipe", str(recipe)]


def _profile_with(tmp: Path, change: Callable[[dict], None]) -> Path:
    data = yaml.safe_load(FAST_PROFILE.read_text())
    change(data)
    path = tmp / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _zero_threads(tmp: Path, bert: Path) -> list[str]:
    return ["--checkpoint", str(bert), "--profile", str(_profile_with(tmp, lambda d: d["target"].update(threads=0)))]


def _unknown_budget(tmp: Path, bert: Path) -> list[str]:
    profile = _profile_with(tmp, lambda d: d["budgets"].update(latency_p95={"max": 5}))
    return ["--checkpoint", str(bert), "--profile", str(profile)]


def _unknown_profile_name(tmp: Path, bert: Path) -> list[str]:
    return ["--checkpoint", str(bert), "--profile", "cpu-edgy"]


def _missing_eval_data(tmp: Path, bert: Path) -> list[str]:
    return ["--checkpoint", str(bert), "--eval-data", str(tmp / "missing.csv")]


BAD_RUNS = {
    "missing checkpoint": (_missing_checkpoint, ["CheckpointError", "does not exist", "--checkpoint"]),
    "corrupt checkpoint": (_corrupt_checkpoint, ["CheckpointError", "model.safetensors",
                                                 "not a readable safetensors file", "fix:"]),
    "unknown pass": (_unknown_pass, ["RecipeError", "unknown pass 'quantize.ort-int8-dynamik'",
                                     f"did you mean '{INT8}'"]),
    "misspelled recipe key": (_misspelled_key, ["RecipeError", "'per_chanel'", "per_channel"]),
    "threads 0": (_zero_threads, ["ProfileError", "target.threads", "greater than or equal to 1"]),
    "unknown budget metric": (_unknown_budget, ["ProfileError", "unknown budget metric 'latency_p95'"]),
    "unknown profile name": (_unknown_profile_name, ["ProfileError", "no profile named 'cpu-edgy'", "cpu-throughput"]),
    "missing eval data": (_missing_eval_data, ["DataError", "missing.csv", "does not exist"]),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_input_to_run_exits_2_with_the_fix_and_writes_nothing(case: str, tiny_bert: Path, tmp_path: Path) -> None:
    make_args, phrases = BAD_RUNS[case]
    args = make_args(tmp_path, tiny_bert)
    if "--profile" not in args:
        args += ["--profile", str(FAST_PROFILE)]
    out = tmp_path / "out"
    completed = run_cli("run", *args, "--out", str(out))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    message = _one_line(completed.stderr)
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in: {message}"
    assert "Traceback" not in completed.stderr
    assert not (out / "report.json").exists()
    assert not (out / "stages").exists()


def test_an_out_under_a_regular_file_is_refused_before_any_work(tiny_bert: Path, tmp_path: Path) -> None:
    """chmod cannot make a directory unwritable for root, but nothing can create a directory under a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE),
                        "--out", str(blocker / "out"))
    assert completed.returncode == 2, completed.stderr
    message = _one_line(completed.stderr)
    assert "OutputError" in message and str(blocker / "out") in message and "fix:" in message
    assert blocker.read_text() == "not a directory"


def _cuda_provider_available() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_cuda_provider_available(), reason="this onnxruntime build has the CUDA provider")
def test_the_gpu_profile_on_a_machine_without_cuda_names_what_is_missing(tiny_bert: Path, tmp_path: Path) -> None:
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", "gpu-t4", "--out", str(tmp_path / "out"))
    assert completed.returncode == 2, completed.stderr
    message = _one_line(completed.stderr)
    assert "MissingDependency" in message
    assert "CUDAExecutionProvider" in message and "onnxruntime-gpu" in message
    assert not (tmp_path / "out" / "report.json").exists()


def test_export_of_a_missing_checkpoint_exits_2(tmp_path: Path) -> None:
    completed = run_cli("export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "onnx"))
    assert completed.returncode == 2
    assert "does not exist" in _one_line(completed.stderr)
    assert not (tmp_path / "onnx").exists()


def test_bench_of_a_directory_that_is_not_a_slimline_model_exits_2(tiny_bert: Path, tmp_path: Path) -> None:
    completed = run_cli("bench", "--model", str(tiny_bert), "--profile", str(FAST_PROFILE),
                        "--out", str(tmp_path / "bench"))
    assert completed.returncode == 2
    assert "no manifest.json" in _one_line(completed.stderr)
    assert not (tmp_path / "bench" / "report.json").exists()
