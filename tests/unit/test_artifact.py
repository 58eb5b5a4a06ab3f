"""The model directory: atomic writes, manifests whose file hashes are verified on load, OS errors."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from slimline.core.artifact import (
    MANIFEST_NAME,
    LineageStep,
    Manifest,
    ModelDir,
    atomic_directory,
    atomic_write_text,
    describe_os_error,
    new_provenance,
    write_manifest,
)
from slimline.core.errors import EXIT_BAD_INPUT, CheckpointError, OutputError


class BodyFailed(Exception):
    pass


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def _model_dir(path: Path) -> ModelDir:
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"\x08\x01fake-onnx-bytes")
    (path / "config.json").write_text('{"model_type": "bert"}')
    (path / "tokenizer").mkdir()
    (path / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    write_manifest(path, Manifest(
        format="onnx", task="text-classification", model_file="model.onnx",
        lineage=[LineageStep(kind="source", name="hf-checkpoint", config={"path": "/somewhere"})],
        provenance=new_provenance(seeds={"run": 0}),
    ))
    return ModelDir.open(path)


def test_atomic_directory_moves_a_complete_directory_into_place(tmp_path: Path) -> None:
    final = tmp_path / "stage"
    with atomic_directory(final) as tmp:
        assert tmp != final and tmp.parent == final.parent
        (tmp / "model.onnx").write_text("weights")
    assert (final / "model.onnx").read_text() == "weights"
    assert _siblings(tmp_path) == ["stage"]


def test_atomic_directory_leaves_nothing_behind_when_the_body_raises(tmp_path: Path) -> None:
    final = tmp_path / "stage"
    with pytest.raises(BodyFailed), atomic_directory(final) as tmp:
        (tmp / "half-written.onnx").write_text("partial")
        raise BodyFailed
    assert _siblings(tmp_path) == []


def test_atomic_directory_keeps_the_previous_good_result_when_a_replacement_fails(tmp_path: Path) -> None:
    final = tmp_path / "stage"
    final.mkdir()
    (final / "model.onnx").write_text("good")
    with pytest.raises(BodyFailed), atomic_directory(final, replace=True) as tmp:
        (tmp / "model.onnx").write_text("half")
        raise BodyFailed
    assert (final / "model.onnx").read_text() == "good"
    assert _siblings(tmp_path) == ["stage"]


def _written(tmp: Path, text: str) -> None:
    (tmp / "model.onnx").write_text(text)
    write_manifest(tmp, Manifest(format="onnx", task="text-classification", model_file="model.onnx",
                                 provenance=new_provenance()))


def test_atomic_directory_replaces_a_previous_result_only_when_asked(tmp_path: Path) -> None:
    final = tmp_path / "stage"
    with atomic_directory(final) as tmp:
        _written(tmp, "old")
    with pytest.raises(OutputError, match="already exists"), atomic_directory(final) as tmp:
        _written(tmp, "new")
    assert (final / "model.onnx").read_text() == "old"
    with atomic_directory(final, replace=True) as tmp:
        _written(tmp, "new")
    assert (final / "model.onnx").read_text() == "new"
    assert _siblings(tmp_path) == ["stage"]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_replacing_never_deletes_entries_slimline_did_not_write(tmp_path: Path) -> None:
    """A user's files beside a model directory's (a forced --out, or notes added later) outlive every replace."""
    final = tmp_path / "onnx"
    final.mkdir()
    (final / "thesis.tex").write_text("years of work")
    (final / ".vim.old-backup").mkdir()
    (final / ".vim.old-backup" / "session.vim").write_text("set nu")
    mine = _tree(final)
    for text in ("first", "second"):
        with atomic_directory(final, replace=True) as tmp:
            _written(tmp, text)
        (final / "notes.md").write_text("added by hand after the export")
        mine["notes.md"] = b"added by hand after the export"
        assert {k: v for k, v in _tree(final).items() if k in mine} == mine
        assert (final / "model.onnx").read_text() == text and ModelDir.open(final)
    assert _siblings(tmp_path) == ["onnx"]


def test_a_replacement_that_would_overwrite_a_users_file_is_refused_untouched(tmp_path: Path) -> None:
    final = tmp_path / "onnx"
    final.mkdir()
    (final / "model.onnx").write_text("my own model")
    with pytest.raises(OutputError, match=r"model\.onnx, which slimline did not write"), \
            atomic_directory(final, replace=True) as tmp:
        _written(tmp, "new")
    assert _tree(final) == {"model.onnx": b"my own model"}
    assert _siblings(tmp_path) == ["onnx"]


def test_a_users_file_inside_slimlines_subdirectory_blocks_the_replacement(tmp_path: Path) -> None:
    final = tmp_path / "model"
    _model_dir(final)
    (final / "tokenizer" / "my-notes.txt").write_text("mine")
    before = _tree(final)
    with pytest.raises(OutputError, match=r"tokenizer/my-notes\.txt"), atomic_directory(final, replace=True) as tmp:
        _written(tmp, "new")
    assert _tree(final) == before


def test_replacing_the_working_directory_keeps_it_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out .` where the working directory is slimline's: updated in place (never renamed away from under
    the shell that sits in it); `.` has a name once resolved."""
    final = tmp_path / "here"
    with atomic_directory(final) as tmp:
        _written(tmp, "old")
    inode = final.stat().st_ino
    monkeypatch.chdir(final)
    with atomic_directory(Path("."), replace=True) as tmp:
        assert tmp.parent == tmp_path
        _written(tmp, "new")
    assert final.stat().st_ino == inode and (final / "model.onnx").read_text() == "new"
    assert _siblings(tmp_path) == ["here"]


def test_atomic_directory_reports_a_full_disk_as_an_output_error_and_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "stage"
    with pytest.raises(OutputError, match="no space left") as caught, atomic_directory(final):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert _siblings(tmp_path) == []


def test_atomic_directory_under_a_regular_file_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError), atomic_directory(blocker / "stage"):
        pass


def test_atomic_write_text_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old contents that are longer than the new ones")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert _siblings(tmp_path) == ["report.json"]


def test_write_manifest_hashes_every_file_except_itself(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    assert set(model.manifest.files) == {"model.onnx", "config.json", "tokenizer/vocab.txt"}
    assert all(len(digest) == 64 for digest in model.manifest.files.values())
    assert MANIFEST_NAME not in model.manifest.files
    assert model.model_path == tmp_path / "m" / "model.onnx"


def test_model_dir_open_accepts_an_untouched_directory(tmp_path: Path) -> None:
    written = _model_dir(tmp_path / "m")
    reopened = ModelDir.open(tmp_path / "m")
    assert reopened.manifest == written.manifest
    assert reopened.manifest_sha256 == written.manifest_sha256


def test_model_dir_open_rejects_a_tampered_file(tmp_path: Path) -> None:
    _model_dir(tmp_path / "m")
    (tmp_path / "m" / "model.onnx").write_bytes(b"\x08\x01tampered-bytes!!")
    with pytest.raises(CheckpointError, match=r"sha256 mismatch for model\.onnx"):
        ModelDir.open(tmp_path / "m")


def test_model_dir_open_rejects_a_missing_file(tmp_path: Path) -> None:
    _model_dir(tmp_path / "m")
    (tmp_path / "m" / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match=r"missing file tokenizer/vocab\.txt"):
        ModelDir.open(tmp_path / "m")


def test_model_dir_open_without_verification_skips_the_hash_check(tmp_path: Path) -> None:
    _model_dir(tmp_path / "m")
    (tmp_path / "m" / "model.onnx").write_bytes(b"changed")
    assert ModelDir.open(tmp_path / "m", verify=False).manifest.format == "onnx"


def test_model_dir_open_rejects_a_directory_without_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no manifest\.json"):
        ModelDir.open(tmp_path)


@pytest.mark.parametrize("text", ["{not json", '{"format": "onnx"}', '{"format": "pickle", "task": "x"}'])
def test_model_dir_open_rejects_a_corrupt_or_incompatible_manifest(tmp_path: Path, text: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(CheckpointError, match="corrupt or from an incompatible"):
        ModelDir.open(tmp_path)


@pytest.mark.parametrize(("code", "phrase"), [
    (errno.ENOSPC, "no space left"),
    (errno.EACCES, "cannot write"),
    (errno.EPERM, "cannot write"),
    (errno.EROFS, "cannot write"),
    (errno.EIO, "failed"),
])
def test_describe_os_error_maps_write_failures_to_an_output_error_with_a_fix(code: int, phrase: str) -> None:
    error = describe_os_error(OSError(code, "boom"), Path("/out/run"))
    assert isinstance(error, OutputError)
    assert error.exit_code == EXIT_BAD_INPUT
    assert phrase in str(error) and "/out/run" in str(error)
    assert error.fix


def test_a_users_directory_inside_a_run_directory_is_still_the_users(tmp_path: Path) -> None:
    """A run written with --force into ~/projects marks it as a run directory; ~/projects/notes stays the
    user's: only stages/NN-* and best/ there are slimline's to swap whole."""
    projects = tmp_path / "projects"
    (projects / "notes").mkdir(parents=True)
    (projects / ".slimline-run.json").write_text('{"schema_version": 1, "written_by": "slimline"}')
    (projects / "notes" / "thesis.tex").write_text("years of work")
    with atomic_directory(projects / "notes", replace=True) as tmp:
        _written(tmp, "new")
    assert (projects / "notes" / "thesis.tex").read_text() == "years of work"
    (projects / "stages" / "01-export").mkdir(parents=True)
    (projects / "stages" / "01-export" / "half.onnx").write_text("a damaged stage, no manifest")
    with atomic_directory(projects / "stages" / "01-export", replace=True) as tmp:
        _written(tmp, "rebuilt")
    assert sorted(p.name for p in (projects / "stages" / "01-export").iterdir()) == ["manifest.json", "model.onnx"]
