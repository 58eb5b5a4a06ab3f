"""The output rule's pieces (slimline.core.outputs), a full disk at the write, and argument mistakes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from slimline.core.errors import EXIT_BAD_INPUT, OutputError
from slimline.core.outputs import check_output, claimed_output, input_paths, protected_reason


def _user_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("years of work")
    return path


def test_force_never_applies_to_root_home_the_cwd_or_its_ancestors(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    home = _user_dir(tmp_path / "home")
    cwd = _user_dir(home / "work" / "project")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    for out, reason in ((Path("/"), "the filesystem root"), (home, "your home directory"),
                        (tmp_path, "a directory that contains your home directory"),
                        (Path("."), "the working directory"), (cwd, "the working directory"),
                        (Path(".."), "a directory that contains the working directory"),
                        (Path("../.."), "your home directory")):
        assert protected_reason(out) == reason
        with pytest.raises(OutputError, match="--force never applies there"):
            check_output(out, "run", force=True)
        with pytest.raises(OutputError, match="already holds files"):
            check_output(out, "model")
    other = _user_dir(tmp_path / "elsewhere")
    assert protected_reason(other) is None
    check_output(other, "run", force=True)  # a plain directory of the user's: --force writes beside


def test_an_output_is_never_an_input_nor_holds_nor_sits_inside_one(tmp_path: Path) -> None:
    checkpoint = _user_dir(tmp_path / "models" / "ck")
    data = tmp_path / "data.csv"
    data.write_text("text,label\n")
    (tmp_path / "link").symlink_to(checkpoint)
    inputs = input_paths(str(checkpoint), f"{data}:validation", "rotten-tomatoes", "pkg.module:function", None)
    assert inputs == [checkpoint, data]
    for out in (checkpoint, checkpoint / "onnx", tmp_path / "models", tmp_path / "link", tmp_path / "link" / "x",
                tmp_path / "models" / ".." / "models" / "ck", data):
        for kind in ("model", "run", "file"):
            for force in (False, True):
                with pytest.raises(OutputError, match="never replaces, holds or sits inside an input"):
                    check_output(out, kind, force=force, inputs=inputs)  # type: ignore[arg-type]
    check_output(tmp_path / "models" / "ck-onnx", "model", inputs=inputs)  # a sibling is fine


def test_with_force_a_name_slimline_would_write_is_never_taken_from_the_user(tmp_path: Path) -> None:
    run_dir = _user_dir(tmp_path / "mine")
    (run_dir / "report.md").write_text("my own report")
    with pytest.raises(OutputError, match=r"report\.md, which slimline did not write and would overwrite"):
        check_output(run_dir, "run", force=True)
    model_dir = _user_dir(tmp_path / "model")
    (model_dir / "manifest.json").write_text("{}")
    with pytest.raises(OutputError, match=r"manifest\.json, which slimline did not write"):
        check_output(model_dir, "model", force=True)


def test_a_link_or_the_wrong_kind_of_entry_is_refused_even_with_force(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    for force in (False, True):
        with pytest.raises(OutputError, match="is a link"):
            check_output(tmp_path / "link", "model", force=force)
        with pytest.raises(OutputError, match="is a file, not a directory"):
            check_output(tmp_path / "file", "run", force=force)
        with pytest.raises(OutputError, match="is a directory, not a file"):
            check_output(tmp_path / "dir", "file", force=force)
    with pytest.raises(OutputError, match="exists and is not a file slimline wrote"):
        check_output(tmp_path / "file", "file")
    check_output(tmp_path / "file", "file", force=True)  # a single file the user named: --force replaces it
    check_output(tmp_path / "file", "file", ours=lambda path: True)


def test_a_refused_claim_creates_nothing_and_a_failed_block_removes_what_it_created(tmp_path: Path) -> None:
    with pytest.raises(OutputError), claimed_output(tmp_path / "a" / "b" / "out", "run", inputs=[tmp_path]):
        pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), claimed_output(tmp_path / "a" / "b" / "out", "run"):
        assert (tmp_path / "a" / "b" / "out" / ".slimline.lock").is_file()
        raise RuntimeError("the pre-flight failed")
    assert list(tmp_path.iterdir()) == []


# --- a full disk at the write (case 12; tests/e2e/test_output_rule_cli.py fills a real tmpfs where it may mount) ----


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["exporter", "publish"])
def test_a_full_disk_during_export_is_exit_2_naming_the_disk_and_leaves_nothing(
        where: str, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.pipeline.single import export_to

    if where == "exporter":  # torch.onnx / optimum writing model.onnx (a library's own error type around it)
        def wrapped(*args: object, **kwargs: object) -> None:
            try:
                _no_space()
            except OSError as err:
                raise RuntimeError("export failed while saving the model") from err

        monkeypatch.setattr("slimline.exporters.onnx._export_with_optimum", wrapped)
        monkeypatch.setattr("slimline.exporters.onnx._export_with_torch", _no_space)
    else:  # the copy into --out's temporary sibling, after the stage finished
        monkeypatch.setattr("slimline.core.artifact._fsync_tree", _no_space)
    out = tmp_path / "out"
    with pytest.raises(OutputError) as caught:
        export_to(tiny_bert, out)
    message = " ".join(str(caught.value).split())
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert f"no space left on the device while writing {out}" in message
    assert "the filesystem mounted at" in message and " free of " in message
    assert list(tmp_path.iterdir()) == []  # no work directory, temporary or lock left behind


# --- argument mistakes (case 16 and its kin): usage errors, exit 2, a message that says what is wrong ------------


@pytest.mark.parametrize(("argv", "message"), [
    (["search", "--checkpoint", "ck", "--out", "o", "--time-budget", "-5m"], "the time budget must be positive"),
    (["search", "--checkpoint", "ck", "--out", "o", "--time-budget", "-90s"], "the time budget must be positive"),
    (["search", "--checkpoint", "ck", "--out", "o", "--seed", "99999999999999999999"], "outside 0..4294967295"),
    (["search", "--checkpoint", "ck", "--out", "o", "--confidence-z", "nan"], "outside 0..10"),
    (["export", "--checkpoint", "ck", "--out", "o", "--opset", "-1"], "outside 14..21"),
    (["export", "--checkpoint", "ck", "--out", ""], "argument --out: an empty value names nothing"),
    (["package", "run", "--out="], "argument --out: an empty value names nothing"),
    (["keygen", "--out", "."], "names a directory; keygen writes PREFIX.key"),
    (["keygen", "--out", "keys/"], "names a directory; keygen writes PREFIX.key"),
])
def test_argument_mistakes_are_usage_errors_with_a_clear_message(argv: list[str], message: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from slimline.cli.main import main

    monkeypatch.chdir(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    err = " ".join(capsys.readouterr().err.split())
    assert rc == EXIT_BAD_INPUT, err
    assert message in err and "expected one argument" not in err and "unexpected error" not in err
    assert os.listdir(tmp_path) == []


def test_a_dash_value_reaches_its_option_and_plain_negative_numbers_still_parse() -> None:
    from slimline.cli.arguments import attach_dash_values
    from slimline.cli.main import build_parser

    parser = build_parser()
    assert attach_dash_values(parser, ["search", "--time-budget", "-5m", "--seed", "-1", "--force", "x"]) == [
        "search", "--time-budget=-5m", "--seed=-1", "--force", "x"]
    args = parser.parse_args(attach_dash_values(parser, ["search", "--checkpoint", "c", "--out", "o",
                                                         "--confidence-z", "-0", "--seed", "3"]))
    assert args.confidence_z == 0.0 and args.seed == 3
