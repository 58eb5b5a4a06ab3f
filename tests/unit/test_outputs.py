"""Output directories: ownership, the one-writer lock, stale temporaries, and errors that name the culprit."""

from __future__ import annotations

import errno
import json
import re
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest

from slimline.core.artifact import describe_os_error
from slimline.core.errors import BundleError, OutputError
from slimline.core.outputs import (
    ExclusiveLock,
    check_output,
    claimed_output,
    claimed_run_dir,
    lock_path,
    output_lock,
    sweep_stale_temporaries,
)


def test_a_new_or_empty_out_is_fine_and_a_foreign_one_needs_force(tmp_path: Path) -> None:
    check_output(tmp_path / "new", "model")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    for kind in ("model", "run"):
        with pytest.raises(OutputError, match="not a slimline"):
            check_output(tmp_path / "mine", kind)  # type: ignore[arg-type]
        check_output(tmp_path / "mine", kind, force=True)  # type: ignore[arg-type]


def test_slimline_outputs_are_recognised_by_their_manifest_or_run_marker(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"schema_version": 1, "format": "onnx", "files": {}}))
    check_output(model, "model")
    run = tmp_path / "run"
    (run / "stages").mkdir(parents=True)
    check_output(run, "run")
    with pytest.raises(OutputError):
        check_output(run, "model")  # a run directory is not a model directory to replace


def test_a_second_lock_is_refused_naming_the_holder_and_the_file_is_gone_after(tmp_path: Path) -> None:
    """Another thread (like another process) is refused; the holder's own thread re-enters (the API takes the
    lock before its heavy imports, the pipeline below it takes it again)."""
    out = tmp_path / "out"
    refused: list[str] = []

    def second_writer() -> None:
        try:
            with output_lock(out, "model"):
                pass
        except OutputError as err:
            refused.append(str(err))

    with output_lock(out, "model") as session:
        assert lock_path(out, "model").is_file()
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
        assert len(refused) == 1 and re.search(r"being written by pid \d+", refused[0])
        with output_lock(out, "model") as again:
            assert again == session
        assert lock_path(out, "model").is_file()  # the inner exit did not release it
    assert not lock_path(out, "model").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with output_lock(out, "model"):  # free again
        pass


def test_a_lock_whose_file_was_replaced_is_not_trusted(tmp_path: Path) -> None:
    """The unlink-on-release race: a lock taken on a file no longer at the path must be retaken."""
    path = tmp_path / ".out.slimline.lock"
    first = ExclusiveLock(path)
    assert first.acquire()
    first.release()  # unlinks
    second, third = ExclusiveLock(path), ExclusiveLock(path)
    assert second.acquire()
    assert not third.acquire()
    second.release()


LOOK_ALIKES = (".bashrc.old-2023", ".thesis.tmp-final", ".vim.old-backup", ".out.tmp-abc", ".out.old-123",
               ".out.slimline-tmp-0123456789ab.abcdef")  # the last: slimline's pattern, another session's id


def _killed_writer(out: Path, kind: str) -> tuple[str, list[Path]]:
    """What `kill -9` of a writer leaves: its lock file (unlocked) naming its session, and its temporaries."""
    session = "deadbeef0001"
    path = lock_path(out, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 1, "host": "h", "started": 0, "command": "slimline", "session": session}))
    where = out if kind == "run" else out.parent
    left = [where / f".{out.name if kind != 'run' else 'report.json'}.slimline-tmp-{session}.a1b2c3",
            where / f".{out.name if kind != 'run' else 'stages'}.slimline-old-{session}.d4e5f6"]
    if kind == "run":
        left.append(where / "stages" / f".01-export.onnx-abc.slimline-tmp-{session}.0f0f0f")
    else:
        left.append(where / f".{out.name}.slimline-work-{session}.123456")
    for temporary in left:
        temporary.mkdir(parents=True)
        (temporary / "half-written.onnx").write_text("partial")
    return session, left


@pytest.mark.parametrize("kind", ["run", "model"])
def test_the_next_writer_sweeps_exactly_what_the_killed_one_recorded(kind: str, tmp_path: Path) -> None:
    out = tmp_path / "home" / "out"
    where = out if kind == "run" else out.parent
    where.mkdir(parents=True)
    for name in LOOK_ALIKES:
        (where / name).mkdir()
        (where / name / "keep.txt").write_text("the user's")
    _, left = _killed_writer(out, kind)
    with output_lock(out, kind):  # type: ignore[arg-type]
        pass
    assert not any(p.exists() for p in left)
    assert all((where / name / "keep.txt").read_text() == "the user's" for name in LOOK_ALIKES)


def test_look_alike_dot_files_are_never_swept(tmp_path: Path) -> None:
    for name in LOOK_ALIKES:
        (tmp_path / name).write_text("x")
    assert sweep_stale_temporaries(tmp_path, "0123456789aa") == []
    assert sweep_stale_temporaries(tmp_path, "0123456789ab", ".out.") == [
        tmp_path / ".out.slimline-tmp-0123456789ab.abcdef"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(LOOK_ALIKES[:-1])


def test_a_run_claim_keeps_the_users_look_alike_dot_files(tmp_path: Path) -> None:
    """Issue 18 case 2: `run --force` into a directory of the user's dot-files swept them as temporaries."""
    out = tmp_path / "dots"
    out.mkdir()
    for name in (".bashrc.old-2023", ".thesis.tmp-final"):
        (out / name).write_text("mine")
    (out / ".vim.old-backup").mkdir()
    (out / ".vim.old-backup" / "session.vim").write_text("mine")
    with claimed_output(out, "run", force=True), claimed_run_dir(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == [".bashrc.old-2023", ".slimline-run.json", ".thesis.tmp-final",
                                                     ".vim.old-backup"]
    assert (out / ".vim.old-backup" / "session.vim").read_text() == "mine"


def test_a_full_temporary_directory_is_blamed_not_out(tmp_path: Path) -> None:
    scratch = Path(tempfile.gettempdir()) / "slimline-eval-x" / "eval.npz"
    err = describe_os_error(OSError(errno.ENOSPC, "No space left on device", str(scratch)), tmp_path / "out")
    assert "temporary directory" in str(err) and "TMPDIR" in str(err)
    outside = Path("/srv/models/out")  # not under the temporary directory
    err = describe_os_error(OSError(errno.ENOSPC, "No space left on device", str(outside / "x")), outside)
    assert "choose another --out" in str(err) and "TMPDIR" not in str(err)


def test_extraction_requires_tarfiles_data_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.deploy.archive import extract_archive

    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        (tmp_path / "b").mkdir()
        tar.add(tmp_path / "b", arcname="b")
    monkeypatch.delattr(tarfile, "data_filter")
    with pytest.raises(BundleError, match="data' extraction filter"):
        extract_archive(archive, tmp_path / "dest")
