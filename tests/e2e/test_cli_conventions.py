"""The conventions every command follows (issue 22): --version, --json everywhere a command lists, shows,
verifies or compares, -q / --log-level, --checkpoint with --model as the same option, "did you mean", plain
progress lines in a log, and `compare` saying its intervals are within-run (with --retime to time both now).

One tiny run recorded in a throw-away history serves every command here."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_cli

import slimline
from slimline.cli.console import JSON_SCHEMA_VERSION
from slimline.cli.main import build_parser

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"


@pytest.fixture(scope="module")
def recorded(tiny_bert: Path, labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("conventions")
    history = root / "history.sqlite"
    completed = run_cli("run", "--model", str(tiny_bert), "--profile", str(FAST_PROFILE), "--eval-data",
                        str(labelled_csv), "--out", str(root / "run"), "--history", str(history))
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    bundle = run_cli("package", str(root / "run"), "--out", str(root / "bundle"))
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    return {"root": root, "history": str(history), "run": completed}


def _json(*args: str) -> dict:
    completed = run_cli(*args)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads(completed.stdout)
    assert document["schema_version"] == JSON_SCHEMA_VERSION and document["kind"]
    return document


def test_version_prints_the_package_version() -> None:
    completed = run_cli("--version")
    assert completed.returncode == 0 and completed.stdout.strip() == f"slimline {slimline.__version__}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{slimline.__version__}"' in pyproject


@pytest.mark.parametrize("args", [["profiles", "list"], ["profiles", "show", "cpu"], ["recipes", "list"],
                                  ["recipes", "show", "cpu-fast"], ["spaces", "list"], ["spaces", "show", "cpu"],
                                  ["passes", "list"],
                                  ["profiles", "validate", str(FAST_PROFILE)]])
def test_every_catalogue_listing_has_a_schema_versioned_json_form(args: list[str]) -> None:
    document = _json(*args, "--json")
    assert document.get("items") or document.get("name")


def test_history_list_show_ship_and_compare_print_json(recorded: dict) -> None:
    history = recorded["history"]
    [run] = _json("history", "list", "--history", history, "--json")["items"]
    assert run["id"] == 1 and run["verdict"] in ("pass", "fail") and run["p50_ms"] > 0
    shown = _json("history", "show", "1", "--history", history, "--json")
    assert shown["run"]["id"] == 1 and shown["report"]["verdict"] == run["verdict"]
    compared = _json("compare", "1", "1", "--history", history, "--json")
    assert compared["a"]["id"] == compared["b"]["id"] == 1 and compared["retimed"] is None
    assert any("within-run only" in note for note in compared["notes"])
    assert any(row["metric"].startswith("latency p50 ms") for row in compared["rows"])
    assert _json("history", "ship", "1", "--history", history, "--json")["run"]["shipped_at"]


def test_verify_prints_json(recorded: dict) -> None:
    verified = _json("verify", str(recorded["root"] / "bundle"), "--json")
    assert verified["ok"] is True and verified["files_checked"] > 3


def test_compare_says_its_intervals_are_within_run_and_retime_times_both_artifacts_now(recorded: dict) -> None:
    plain = run_cli("compare", "1", "1", "--history", recorded["history"])
    assert plain.returncode == 0, plain.stderr
    assert "within-run only" in plain.stdout and "--retime" in plain.stdout
    retimed = _json("compare", "1", "1", "--retime", "--history", recorded["history"], "--json")["retimed"]
    low, high = retimed["ratio_ci95"]
    assert retimed["rounds"] >= 5 and low <= retimed["ratio_b_over_a"] <= high
    assert retimed["beyond_spread"] == (not low <= 1.0 <= high)
    assert 0.5 < retimed["ratio_b_over_a"] < 2.0  # one artifact against itself


def test_compare_retime_refuses_an_artifact_that_is_no_longer_here(recorded: dict, tmp_path: Path) -> None:
    history = tmp_path / "copy.sqlite"
    shutil.copy(recorded["history"], history)
    record = slimline.history_run(1, history=history)
    moved = Path(record.report.measurements.model_dir)
    parked = tmp_path / "parked"
    shutil.move(moved, parked)
    try:
        completed = run_cli("compare", "1", "1", "--retime", "--history", str(history))
    finally:
        shutil.move(parked, moved)
    assert completed.returncode == 2 and "not on this machine" in completed.stderr
    assert "compare without --retime" in completed.stderr


def test_quiet_prints_the_verdict_line_only_and_progress_is_plain_lines_in_a_log(recorded: dict, tiny_bert: Path,
                                                                                  tmp_path: Path) -> None:
    loud = recorded["run"]
    assert "[slimline] stage 01: export.onnx ..." in loud.stderr  # not a terminal: plain lines, not a bar
    assert "done after" in loud.stderr and "side by side in one process" in loud.stdout
    quiet = run_cli("run", "-q", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out",
                    str(tmp_path / "quiet"), "--no-history")
    assert quiet.returncode in (0, 1), quiet.stderr
    assert quiet.stderr == "" and "[slimline]" not in quiet.stdout
    assert [line.split(":")[0] for line in quiet.stdout.splitlines()] == ["verdict", "report"]


@pytest.mark.parametrize(("argv", "level"), [([], logging.WARNING), (["-v"], logging.INFO), (["-q"], logging.ERROR),
                                           (["--log-level", "debug"], logging.DEBUG),
                                           (["-q", "--log-level", "info"], logging.INFO)])
def test_log_level_quiet_and_verbose_set_slimlines_log_level(argv: list[str], level: int) -> None:
    from slimline.cli.main import log_level

    assert log_level(build_parser().parse_args([*argv, "passes", "list"])) == level
    assert log_level(build_parser().parse_args(["passes", "list", *argv])) == level  # after the command too


def test_an_unknown_log_level_is_a_usage_error() -> None:
    refused = run_cli("--log-level", "loud", "passes", "list")
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


@pytest.mark.parametrize("command", ["run", "export", "compress", "bench", "search"])
def test_checkpoint_is_the_input_everywhere_and_model_the_same_option(command: str) -> None:
    parser = build_parser()
    extra = {"run": [], "export": [], "compress": ["--recipe", "cpu-fast"], "bench": [], "search": []}[command]
    for flag in ("--checkpoint", "--model"):
        args = parser.parse_args([command, flag, "DIR", "--out", "OUT", *extra])
        assert args.checkpoint == "DIR", (command, flag)


@pytest.mark.parametrize(("args", "hint"), [
    (["hisotry", "list"], "did you mean 'history'?"),
    (["run", "--checkpoint", "x", "--profile", "cpuu", "--out", "o"], "did you mean 'cpu'?"),
    (["compress", "--checkpoint", "x", "--recipe", "cpu-fastt", "--out", "o"], "did you mean 'cpu-fast'?"),
    (["spaces", "show", "cpuu"], "did you mean 'cpu'?"),
])
def test_a_misspelt_name_gets_did_you_mean(args: list[str], hint: str, tmp_path: Path) -> None:
    completed = run_cli(*args, cwd=tmp_path)
    assert completed.returncode == 2 and hint in completed.stderr, completed.stderr
