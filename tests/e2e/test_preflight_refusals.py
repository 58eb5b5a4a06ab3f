"""Refusals that came late or as crashes now come from the pre-flight: exit 2, seconds, nothing written.

Each case through the installed console script, as the issue reported it: a truncated history (the
run's PASS became exit 2 after all the work), `max_time_s: 1e308` (OverflowError after two stages),
a malformed tokenizer.json and absurd configs (exit 3 after 40-94 s), hostile CSV/JSONL eval data
(minutes and GBs in the pre-flight). `--out` must not exist afterwards: nothing ran.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from unit.test_history_preflight import _history_with_runs

from slimline.core.errors import EXIT_BAD_INPUT, EXIT_OK

PREFLIGHT_TIMEOUT_S = 300  # a generous bound so a regression fails instead of hanging; the refusals take seconds


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _refused(completed: object, out: Path, *needles: str) -> str:
    stderr = _one_line(completed.stderr)  # type: ignore[attr-defined]
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in stderr, stderr
    assert not out.exists(), f"{out} was created: work started before the refusal"
    return stderr


@pytest.fixture
def truncated_history(tmp_path: Path) -> Path:
    history = _history_with_runs(tmp_path / "history.sqlite", runs=20)
    with open(history, "r+b") as handle:
        handle.truncate(history.stat().st_size // 2)
    return history


@pytest.mark.parametrize("command", ["run", "bench", "search"])
def test_a_truncated_history_is_refused_before_any_stage(command: str, tiny_bert: Path, fast_profile: Path,
                                                         labelled_csv: Path, truncated_history: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    source = ["--checkpoint", str(tiny_bert)] if command != "bench" else ["--model", str(tiny_bert)]
    completed = run_cli(command, *source, "--profile", str(fast_profile), "--out", str(out), "--eval-data",
                        str(labelled_csv), "--history", str(truncated_history), timeout_s=PREFLIGHT_TIMEOUT_S)
    _refused(completed, out, str(truncated_history), "truncated", "--no-history", "--history PATH")


def test_demo_checks_the_history_before_building_its_checkpoint(truncated_history: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    completed = run_cli("demo", "--out", str(out), "--history", str(truncated_history), timeout_s=PREFLIGHT_TIMEOUT_S)
    _refused(completed, out, "truncated", "--no-history")


def test_a_record_kept_beside_the_report_is_imported_by_the_cli(tmp_path: Path) -> None:
    from unit.test_history import make_report

    from slimline.benchmarking.report import write_report
    from slimline.history.hooks import after_run

    out = tmp_path / "out"
    out.mkdir()
    write_report(make_report(), out)
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"garbage" * 1000)
    after_run(make_report(), "run", out, history=broken)
    history = tmp_path / "fresh.sqlite"
    imported = run_cli("history", "import", str(out / "history-record.json"), "--history", str(history))
    assert imported.returncode == EXIT_OK and "recorded as run #1" in imported.stdout, imported.stderr
    again = run_cli("history", "import", str(out), "--history", str(history))
    assert again.returncode == EXIT_OK and "already recorded as run #1" in _one_line(again.stdout)
    listed = run_cli("history", "list", "--history", str(history))
    assert listed.returncode == EXIT_OK and "cpu-test" in listed.stdout


def test_a_max_time_of_1e308_is_refused_naming_the_field(tiny_bert: Path, fast_profile: Path,
                                                         tmp_path: Path) -> None:
    """It validated, then the run crashed with OverflowError after two stages."""
    profile = tmp_path / "huge.yaml"
    profile.write_text(fast_profile.read_text().replace("max_time_s: 5.0", "max_time_s: 1e308"))
    assert "1e308" in profile.read_text()
    out = tmp_path / "out"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(profile), "--out", str(out),
                        "--no-history", timeout_s=PREFLIGHT_TIMEOUT_S)
    _refused(completed, out, "measurement.max_time_s", "less than or equal to 86400")


def _copy_checkpoint(source: Path, where: Path) -> Path:
    return Path(shutil.copytree(source, where))


def _edit_config(checkpoint: Path, **changes: object) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(changes)
    (checkpoint / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("name", ["columns.csv", "line.jsonl"])
def test_hostile_eval_data_is_refused_by_run_before_any_stage(name: str, tiny_bert: Path, fast_profile: Path,
                                                              tmp_path: Path) -> None:
    """A million columns, or one 64 MB line: minutes and GBs in the pre-flight before; now exit 2 at the limit."""
    from unit.test_hostile_eval_data import _million_columns, _one_long_jsonl_line

    data = tmp_path / name
    (_million_columns if name.endswith(".csv") else _one_long_jsonl_line)(data)
    out = tmp_path / "out"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(fast_profile), "--out", str(out),
                        "--eval-data", str(data), "--no-history", timeout_s=PREFLIGHT_TIMEOUT_S)
    _refused(completed, out, "DataError", str(data), "is longer than")


def _broken_tokenizer(checkpoint: Path) -> None:
    tokenizer = checkpoint / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:100])


@pytest.mark.parametrize(("command", "breakage", "needles"), [
    ("run", _broken_tokenizer, ["tokenizer", "cannot be loaded"]),
    ("export", lambda c: _edit_config(c, hidden_size=1e9), ["hidden_size is 1e+09", "beyond any real model"]),
    ("compress", lambda c: _edit_config(c, id2label={}, label2id={}), ["classifier with 0 classes"]),
    ("search", lambda c: _edit_config(c, max_position_embeddings=10**12), ["max_position_embeddings"]),
], ids=["run-tokenizer", "export-hidden-1e9", "compress-no-labels", "search-positions-1e12"])
def test_a_checkpoint_that_cannot_load_is_refused_before_any_stage(command: str, breakage: object, needles: list[str],
                                                                   tiny_bert: Path, fast_profile: Path,
                                                                   labelled_csv: Path, tmp_path: Path) -> None:
    """These failed with exit 3 after 40-94 s of work (the tokenizer at the bench, the sizes at the first load)."""
    checkpoint = _copy_checkpoint(tiny_bert, tmp_path / "checkpoint")
    breakage(checkpoint)  # type: ignore[operator]
    out = tmp_path / "out"
    source = "--model" if command == "compress" else "--checkpoint"
    args = [command, source, str(checkpoint), "--out", str(out)]
    if command in ("run", "search", "compress"):
        args += ["--profile", str(fast_profile)]
    if command == "compress":
        args += ["--recipe", "cpu-fast"]
    if command in ("run", "search"):
        args += ["--eval-data", str(labelled_csv), "--no-history"]
    completed = run_cli(*args, timeout_s=PREFLIGHT_TIMEOUT_S)
    _refused(completed, out, "CheckpointError", str(checkpoint), *needles)
