"""Output directories: ownership, the one-writer lock, stale temporaries, and errors that name the culprit."""

from __future__ import annotations

import errno
import json
import tarfile
import tempfile
from pathlib import Path

import pytest

from slimline.core.artifact import describe_os_error
from slimline.core.errors import BundleError, OutputError
from slimline.core.outputs import (
    ExclusiveLock,
    check_output,
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
    out = tmp_path / "out"
    with output_lock(out, "model"):
        assert lock_path(out, "model").is_file()
        with pytest.raises(OutputError, match=r"being written by pid \d+"), output_lock(out, "model"):
            pass
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


def test_stale_temporaries_of_one_output_are_swept_and_others_kept(tmp_path: Path) -> None:
    for name in (".out.tmp-abc", ".out.old-123", ".other.tmp-xyz", "out", ".out.slimline.lock"):
        (tmp_path / name).mkdir()
    removed = sweep_stale_temporaries(tmp_path, "out")
    assert sorted(p.name for p in removed) == [".out.old-123", ".out.tmp-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-xyz", ".out.slimline.lock", "out"]


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
