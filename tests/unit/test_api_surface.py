"""The public Python API: every name in `slimline.__all__` is reachable as `slimline.NAME`, each function is a
real function (its own signature and docstring, not a module or `(*args, **kwargs)`), refusals name
parameters rather than the CLI's flags, and the library's logger prints nothing on its own."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from hypothesis import given
from hypothesis import strategies as st

import slimline
from slimline.core.frontend import SWITCHES, VALUE_FLAGS, flags_to_parameters


def test_every_public_name_is_reachable_and_listed() -> None:
    for name in slimline.__all__:
        assert getattr(slimline, name) is not None, name
    assert set(slimline.API_FUNCTIONS) <= set(slimline.__all__)
    assert {"search", "rerun", "history_runs", "history_run", "ship", "compare", "export_history",
            "check_history", "import_history_record", "doctor", "keygen"} <= set(slimline.__all__)
    assert set(slimline.API_FUNCTIONS) <= set(dir(slimline))


@pytest.mark.parametrize("name", slimline.API_FUNCTIONS)
def test_each_api_function_is_a_real_function_with_a_signature_and_a_docstring(name: str) -> None:
    function = getattr(slimline.api, name)
    exposed = getattr(slimline, name)
    assert exposed is function
    assert inspect.isfunction(function) and function.__name__ == name
    parameters = inspect.signature(function).parameters
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters.values()), parameters
    assert function.__doc__ and len(function.__doc__.strip()) > 40
    assert name in slimline.api.__all__


@pytest.mark.parametrize("name", ["run", "rerun", "compress", "export", "bench", "search", "demo_checkpoint",
                                  "compare"])
def test_long_running_functions_take_an_opt_in_progress(name: str) -> None:
    progress = inspect.signature(getattr(slimline.api, name)).parameters["progress"]
    assert progress.default is None and progress.kind == progress.KEYWORD_ONLY


def test_a_refusal_names_parameters_in_python_and_flags_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(slimline.OutputError) as raised:
        slimline.compress(tmp_path / "missing", recipe="cpu-fast", out=out)
    assert "force=True" in str(raised.value) and "--force" not in str(raised.value)
    assert "out=" in str(raised.value) and "--out" not in str(raised.value)
    cli = run_cli("compress", "--checkpoint", str(tmp_path / "missing"), "--recipe", "cpu-fast", "--out", str(out))
    assert cli.returncode == 2 and "--force" in cli.stderr and "force=True" not in cli.stderr
    with pytest.raises(slimline.CheckpointError) as missing:
        slimline.compress(tmp_path / "missing", recipe="cpu-fast", out=tmp_path / "new")
    assert "--checkpoint" not in str(missing.value) and "checkpoint" in str(missing.value)


def test_flags_become_parameters_but_shell_commands_and_other_programs_flags_stay() -> None:
    assert flags_to_parameters("pass --eval-data (a .csv).") == "pass eval_data=… (a .csv)."
    assert flags_to_parameters("--out runs/x holds files") == "out=runs/x holds files"
    assert flags_to_parameters("or pass --force.") == "or pass force=True."
    assert flags_to_parameters("use --history PATH or --no-history") == "use history=PATH or history=False"
    kept = "run `slimline run --config run.yaml --out x`; pip install --force-reinstall torch"
    assert flags_to_parameters(kept) == kept


@given(st.lists(st.one_of(st.sampled_from([f"--{flag}" for flag in [*VALUE_FLAGS, *SWITCHES]]),
                          st.text(alphabet="abcdefXYZ/._ -(),", max_size=12)), max_size=12))
def test_no_slimline_flag_survives_outside_a_quoted_command(parts: list[str]) -> None:
    text = " ".join(parts)
    translated = flags_to_parameters(text)
    for flag in [*VALUE_FLAGS, *SWITCHES]:
        assert f" --{flag} " not in f" {translated} ", (text, translated)
    assert flags_to_parameters(translated) == translated  # a second pass changes nothing


def test_the_library_logger_prints_nothing_unless_the_application_configures_logging() -> None:
    code = ("import logging, slimline\n"
            "logging.getLogger('slimline.pipeline').warning('once')\n"
            "logging.basicConfig()\n"
            "logging.getLogger('slimline.pipeline').warning('configured')\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert "once" not in completed.stderr  # no handler of last resort: a library does not print
    assert completed.stderr.count("configured") == 1
