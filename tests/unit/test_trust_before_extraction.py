"""Trust is checked before data: a forged archive writes nothing, and key/token/signature files are read bounded.

A forged archive (manifest signed by another key) was refused only after every data member had been
extracted (10 s and up to the 4 GiB cap); `verify --key /dev/zero` read until MemoryError and a FIFO as
`--key` hung. Fixtures (the signed tiny bundle, the keys, the extraction spy) come from
test_bundle_security.py.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli
from unit.test_bundle_security import keys, onnx_dir, signed, written  # noqa: F401 - fixtures

from slimline.core.errors import EXIT_BAD_INPUT, BadInputError, BundleError
from slimline.core.small_files import read_small_file


def _forged(signed: Path, keys: dict[str, Path], where: Path, *, sorted_order: bool = False,  # noqa: F811
            signer: str | None = "other_private") -> Path:
    """The bundle re-signed by another key (or unsigned), packed as slimline packs it or in plain sorted order."""
    from slimline.deploy.archive import write_archive
    from slimline.deploy.signing import load_private_key, sign_bundle

    copy = Path(shutil.copytree(signed, where / "tiny"))
    (copy / "signature.json").unlink()
    if signer is not None:
        sign_bundle(copy, load_private_key(keys[signer]))
    archive = where / "forged.tar.gz"
    if sorted_order:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(copy, arcname="tiny")
    else:
        write_archive(copy, archive)
    shutil.rmtree(copy)
    return archive


@pytest.mark.parametrize("sorted_order", [False, True], ids=["slimline-order", "sorted-order"])
def test_an_archive_signed_by_another_key_is_refused_before_any_member_is_extracted(
        signed: Path, keys: dict[str, Path], tmp_path: Path, written: list, sorted_order: bool) -> None:  # noqa: F811
    from slimline.deploy.manifest import verify_bundle

    archive = _forged(signed, keys, tmp_path, sorted_order=sorted_order)
    with pytest.raises(BundleError, match="not by the trusted key"):
        verify_bundle(archive, key=keys["public"])
    assert written == []  # not one member written, not even the manifest


def test_an_unsigned_archive_is_refused_before_extraction_when_a_key_is_required(
        signed: Path, keys: dict[str, Path], tmp_path: Path, written: list) -> None:  # noqa: F811
    from slimline.deploy.manifest import verify_bundle

    archive = _forged(signed, keys, tmp_path, signer=None)
    with pytest.raises(BundleError, match="is not signed"):
        verify_bundle(archive, key=keys["public"])
    assert written == []


def test_an_archive_whose_manifest_is_not_the_pinned_one_is_refused_before_extraction(
        signed: Path, keys: dict[str, Path], tmp_path: Path, written: list) -> None:  # noqa: F811
    from slimline.deploy.manifest import verify_bundle

    archive = _forged(signed, keys, tmp_path)
    with pytest.raises(BundleError, match="not the bundle you pinned"):
        verify_bundle(archive, expect_sha256="0" * 64)
    assert written == []


def test_the_publishers_archive_still_extracts_and_verifies_with_key_and_digest(
        signed: Path, keys: dict[str, Path]) -> None:  # noqa: F811
    from slimline.deploy.manifest import verify_bundle

    archive = signed.parent / "tiny.tar.gz"
    result = verify_bundle(archive, key=keys["public"])
    assert result.signature_key_sha256
    assert verify_bundle(archive, expect_sha256=result.manifest_sha256).manifest_sha256 == result.manifest_sha256


def test_verify_of_a_forged_archive_exits_2_and_leaves_nothing_in_the_temporary_directory(
        signed: Path, keys: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    archive = _forged(signed, keys, tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    completed = run_cli("verify", str(archive), "--key", str(keys["public"]), env={"TMPDIR": str(scratch)})
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
    assert "not by the trusted key" in " ".join(completed.stderr.split())
    assert list(scratch.iterdir()) == []


# --- small files: keys, tokens, signatures -----------------------------------------------------------------------


@pytest.mark.parametrize(("make", "kind"), [
    (lambda where: Path("/dev/zero"), "character device"),
    (lambda where: (os.mkfifo(where / "fifo"), where / "fifo")[1], "FIFO"),
    (lambda where: where, "directory"),
])
def test_a_key_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path: Path, make: object,
                                                                         kind: str) -> None:
    from slimline.deploy.signing import load_private_key, load_public_key

    path = make(tmp_path)  # type: ignore[operator]
    for load in (load_public_key, load_private_key):
        with pytest.raises(BundleError, match=kind):
            load(path)


def test_a_small_file_read_stops_at_its_limit_and_follows_symlinks(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(BadInputError, match="at most 100"):
        read_small_file(big, max_bytes=100, what="key", fix="-")
    good = tmp_path / "good"
    good.write_bytes(b"key")
    (tmp_path / "link").symlink_to(good)
    assert read_small_file(tmp_path / "link", max_bytes=100, what="key", fix="-") == b"key"
    with pytest.raises(BadInputError, match="does not exist"):
        read_small_file(tmp_path / "missing", max_bytes=100, what="key", fix="-")


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_verify_with_a_key_from_dev_zero_or_a_fifo_exits_2_at_once(signed: Path, tmp_path: Path,  # noqa: F811
                                                                  kind: str) -> None:
    """It read /dev/zero until MemoryError (2.6 GB) and waited forever on a FIFO with no writer."""
    key = Path("/dev/zero")
    if kind == "fifo":
        key = tmp_path / "key.fifo"
        os.mkfifo(key)
    for bundle in (signed, signed.parent / "tiny.tar.gz"):
        completed = run_cli("verify", str(bundle), "--key", str(key), timeout_s=120)
        assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
        assert "not a regular file" in " ".join(completed.stderr.split())


def test_a_fifo_as_token_file_is_refused_instead_of_hanging(tmp_path: Path) -> None:
    from slimline.serve.server import read_token_file

    os.mkfifo(tmp_path / "token")
    with pytest.raises(BadInputError, match="FIFO"):
        read_token_file(tmp_path / "token")
    with pytest.raises(BadInputError, match="character device"):
        read_token_file(Path("/dev/zero"))


def test_a_signature_file_that_is_a_fifo_is_refused(signed: Path, tmp_path: Path) -> None:  # noqa: F811
    from slimline.deploy.signing import read_signature

    copy = Path(shutil.copytree(signed, tmp_path / "copy"))
    (copy / "signature.json").unlink()
    os.mkfifo(copy / "signature.json")
    with pytest.raises(BundleError, match="FIFO"):
        read_signature(copy)
