"""Bundle trust and archive limits: gzip bombs, signatures, pinned digests, manifest paths confined.

Each attack is the one the issue reported, made small: a .tar.gz declaring far more bytes than it holds
compressed, a bundle tampered and then re-hashed consistently (so plain verification passes), labels
swapped in the manifest, and manifest paths pointing outside the bundle.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli

from slimline.core.errors import EXIT_BAD_INPUT, BundleError

BOMB_BYTES = 100 << 20  # declared; compresses to ~100 KB


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _rehash(root: Path, manifest: dict) -> None:
    """What an attacker does after changing files: make manifest.json consistent with them again."""
    for rel in manifest["files"]:
        if (root / rel).is_file():
            manifest["files"][rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
            manifest["file_sizes"][rel] = (root / rel).stat().st_size
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def onnx_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slimline.pipeline.single import export_to

    return export_to(tiny_bert, tmp_path_factory.mktemp("export") / "onnx").path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from slimline.deploy.signing import generate_keypair

    where = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(where / "publisher")
    other_private, other_public = generate_keypair(where / "attacker")
    return {"private": private, "public": public, "other_private": other_private, "other_public": other_public}


@pytest.fixture(scope="module")
def signed(onnx_dir: Path, keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slimline import api

    out = tmp_path_factory.mktemp("signed") / "tiny"
    bundle = api.package(onnx_dir, out=out, name="tiny-bert", tar=True, sign_key=keys["private"])
    assert bundle.signature_key_sha256 and bundle.archive
    return out


@pytest.fixture
def copy_of(signed: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(signed, tmp_path / "copy"))


def _patch_classifier_bias(root: Path) -> None:
    """The issue's attack: every answer becomes label 0, and the engine still loads."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    path = root / _manifest(root)["engine"]
    model = onnx.load(path)
    bias = next(init for init in model.graph.initializer if init.name == "classifier.bias")
    bias.CopyFrom(numpy_helper.from_array(np.array([100.0, -100.0], dtype=np.float32), name="classifier.bias"))
    onnx.save(model, path)


# --- archive limits ------------------------------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    """`size` zero bytes, produced as read: the bomb is built without holding it in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def _bomb(path: Path, before: list[tuple[str, bytes]], name: str, size: int = BOMB_BYTES) -> Path:
    """A .tar.gz: directory 'tiny', the small files `before`, then `name` declaring `size` zero bytes."""
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        root = tarfile.TarInfo("tiny")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for rel, data in before:
            info = tarfile.TarInfo(f"tiny/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(f"tiny/{name}")
        info.size = size
        tar.addfile(info, _Zeros(size))  # type: ignore[arg-type]
    assert path.stat().st_size < 1 << 20
    return path


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(member, bytes under the destination afterwards) for every member tarfile writes: the peak disk use."""
    calls: list[tuple[str, int]] = []
    extract = tarfile.TarFile.extract

    def spy(self: tarfile.TarFile, member: tarfile.TarInfo, path: str = "", **kwargs: object) -> None:
        extract(self, member, path, **kwargs)  # type: ignore[arg-type]
        calls.append((member.name, sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())))

    monkeypatch.setattr(tarfile.TarFile, "extract", spy)
    return calls


def _extract_refused(archive: Path, dest: Path, match: str) -> None:
    from slimline.deploy.archive import extract_archive

    dest.mkdir()
    with pytest.raises(BundleError, match=match):
        extract_archive(archive, dest)
    assert list(dest.iterdir()) == []


def test_a_gzip_bomb_before_the_manifest_is_refused_at_its_header(tmp_path: Path,
                                                                   written: list[tuple[str, int]]) -> None:
    archive = _bomb(tmp_path / "bomb.tar.gz", [], "model_repository/tiny-bert/1/model.onnx")
    _extract_refused(archive, tmp_path / "dest", f"declares {BOMB_BYTES} bytes.*what may precede manifest.json")
    assert [name for name, _ in written] == ["tiny"] and max(size for _, size in written) == 0


def test_a_member_larger_than_the_manifest_records_is_refused_before_it_is_written(
        signed: Path, tmp_path: Path, written: list[tuple[str, int]]) -> None:
    manifest = (signed / "manifest.json").read_bytes()
    engine = _manifest(signed)["engine"]
    archive = _bomb(tmp_path / "bomb.tar.gz", [("manifest.json", manifest)], engine)
    recorded = _manifest(signed)["file_sizes"][engine]
    _extract_refused(archive, tmp_path / "dest", f"declares {BOMB_BYTES} bytes; the manifest records {recorded}")
    assert engine not in {name.removeprefix("tiny/") for name, _ in written}
    assert max(size for _, size in written) == len(manifest)


def test_a_member_the_manifest_does_not_list_is_refused(signed: Path, tmp_path: Path) -> None:
    manifest = (signed / "manifest.json").read_bytes()
    archive = _bomb(tmp_path / "extra.tar.gz", [("manifest.json", manifest)], "preprocessing/extra.bin", size=10)
    _extract_refused(archive, tmp_path / "dest", "is not listed in the bundle's manifest")


def test_without_recorded_sizes_the_absolute_cap_applies(signed: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    old = _manifest(signed)
    del old["file_sizes"]  # a manifest from before sizes were recorded
    archive = _bomb(tmp_path / "bomb.tar.gz", [("manifest.json", json.dumps(old).encode())], old["engine"],
                    size=3 << 20)
    monkeypatch.setenv("SLIMLINE_MAX_BUNDLE_MB", "2")
    _extract_refused(archive, tmp_path / "dest", "the limit from SLIMLINE_MAX_BUNDLE_MB")
    monkeypatch.setenv("SLIMLINE_MAX_BUNDLE_MB", "lots")
    from slimline.deploy.archive import extract_archive

    with pytest.raises(BundleError, match="not a positive whole number"):
        extract_archive(archive, tmp_path)


def test_an_oversized_tar_header_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    archive = tmp_path / "header.tar.gz"
    with gzip.open(archive, "wb") as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("tiny")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"comment": "x" * (4 << 20)}
        tar.addfile(info)
    _extract_refused(archive, tmp_path / "dest", "tar header or member holds more data")


def test_a_repeated_member_is_refused_so_a_checked_file_cannot_be_replaced(signed: Path, tmp_path: Path) -> None:
    manifest = (signed / "manifest.json").read_bytes()
    archive = _bomb(tmp_path / "twice.tar.gz", [("manifest.json", manifest)], "manifest.json", size=10)
    _extract_refused(archive, tmp_path / "dest", "appears twice")


def test_verify_of_a_gzip_bomb_exits_2_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    archive = _bomb(tmp_path / "bomb.tar.gz", [], "model_repository/tiny-bert/1/model.onnx")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    completed = run_cli("verify", str(archive), env={"TMPDIR": str(scratch)})
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
    assert "refusing to extract" in _one_line(completed.stderr)
    assert list(scratch.iterdir()) == []


def test_the_archive_starts_with_the_manifest_and_records_every_size(signed: Path) -> None:
    with tarfile.open(signed.parent / "tiny.tar.gz") as tar:
        names = tar.getnames()
    assert names[:3] == ["tiny", "tiny/manifest.json", "tiny/signature.json"]
    manifest = _manifest(signed)
    assert manifest["file_sizes"] == {rel: (signed / rel).stat().st_size for rel in manifest["files"]}
    assert "signature.json" not in manifest["files"]


def test_an_archive_in_the_older_sorted_order_still_extracts_and_verifies(signed: Path, keys: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    from slimline.deploy.manifest import verify_bundle

    archive = tmp_path / "sorted.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(signed, arcname="tiny")  # README.md before manifest.json, signature.json last
    with tarfile.open(archive) as tar:
        assert tar.getnames()[1:3] == ["tiny/README.md", "tiny/manifest.json"]
    assert verify_bundle(archive, key=keys["public"]).signature_key_sha256


def test_a_manifest_without_recorded_sizes_still_verifies(copy_of: Path) -> None:
    from slimline.deploy.manifest import verify_bundle

    manifest = _manifest(copy_of)
    del manifest["file_sizes"]
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    assert verify_bundle(copy_of).files_checked == len(manifest["files"])


# --- signatures and pinned digests ---------------------------------------------------------------------------


def test_keygen_writes_pem_keys_private_to_the_owner_and_refuses_to_overwrite(tmp_path: Path) -> None:
    prefix = tmp_path / "keys" / "release"
    completed = run_cli("keygen", "--out", str(prefix))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    private, public = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = private.read_bytes()
    again = run_cli("keygen", "--out", str(prefix))
    assert again.returncode == EXIT_BAD_INPUT and "refusing to overwrite" in _one_line(again.stderr)
    assert private.read_bytes() == before


def test_a_signed_bundle_and_its_archive_verify_with_the_publishers_key_and_digest(
        signed: Path, keys: dict[str, Path]) -> None:
    digest = hashlib.sha256((signed / "manifest.json").read_bytes()).hexdigest()
    completed = run_cli("verify", str(signed.parent / "tiny.tar.gz"), "--key", str(keys["public"]),
                        "--expect-sha256", digest)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "signature valid" in completed.stdout and "matches the expected digest" in completed.stdout
    from slimline import api

    result = api.verify(signed, key=keys["public"], expect_sha256=digest.upper())
    assert result.signature_key_sha256 and result.manifest_sha256 == digest


def test_package_sign_on_the_command_line_writes_a_signature_the_key_verifies(
        onnx_dir: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli-signed"
    packaged = run_cli("package", str(onnx_dir), "--out", str(out), "--sign", str(keys["private"]), "--tar")
    assert packaged.returncode == 0, packaged.stdout + packaged.stderr
    assert "signed by key sha256:" in packaged.stdout and (out / "signature.json").is_file()
    signature = json.loads((out / "signature.json").read_text())
    assert signature["algorithm"] == "ed25519"
    assert signature["manifest_sha256"] == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    wrong = run_cli("verify", str(tmp_path / "cli-signed.tar.gz"), "--key", str(keys["other_public"]))
    assert wrong.returncode == EXIT_BAD_INPUT and "not by the trusted key" in _one_line(wrong.stderr)


def test_a_tampered_and_rehashed_bundle_passes_plain_verify_but_not_key_or_digest(
        copy_of: Path, keys: dict[str, Path]) -> None:
    digest = hashlib.sha256((copy_of / "manifest.json").read_bytes()).hexdigest()
    _patch_classifier_bias(copy_of)
    _rehash(copy_of, _manifest(copy_of))
    plain = run_cli("verify", str(copy_of))
    assert plain.returncode == 0, plain.stdout + plain.stderr  # hashes alone cannot tell
    assert "the signature was not checked" in _one_line(plain.stdout)
    keyed = run_cli("verify", str(copy_of), "--key", str(keys["public"]))
    assert keyed.returncode == EXIT_BAD_INPUT, keyed.stdout + keyed.stderr
    assert "signature does not match manifest.json" in _one_line(keyed.stderr)
    pinned = run_cli("verify", str(copy_of), "--expect-sha256", digest)
    assert pinned.returncode == EXIT_BAD_INPUT and f"not the expected {digest}" in _one_line(pinned.stderr)


def test_swapped_labels_break_the_signature(copy_of: Path, keys: dict[str, Path]) -> None:
    from slimline.deploy.manifest import verified_manifest, verify_directory

    manifest = _manifest(copy_of)
    manifest["labels"] = manifest["labels"][::-1]
    (copy_of / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert verify_directory(copy_of).name == "tiny-bert"
    with pytest.raises(BundleError, match="signature does not match"):
        verify_directory(copy_of, key=keys["public"])
    with pytest.raises(BundleError, match="signature does not match"):
        verified_manifest(copy_of, key=keys["public"])  # what `serve --require-signature` calls


def test_a_bundle_resigned_by_another_key_or_unsigned_is_refused(copy_of: Path, keys: dict[str, Path]) -> None:
    from slimline.deploy.manifest import verified_manifest, verify_directory
    from slimline.deploy.signing import load_private_key, sign_bundle

    _patch_classifier_bias(copy_of)
    _rehash(copy_of, _manifest(copy_of))
    sign_bundle(copy_of, load_private_key(keys["other_private"]))
    assert verify_directory(copy_of, key=keys["other_public"]).signature_key_sha256
    with pytest.raises(BundleError, match="not by the trusted key"):
        verified_manifest(copy_of, key=keys["public"])
    (copy_of / "signature.json").unlink()
    with pytest.raises(BundleError, match="is not signed"):
        verify_directory(copy_of, key=keys["public"])


def test_a_signed_bundle_verifies_naming_its_key_and_hands_back_the_manifest_it_checked(
        signed: Path, keys: dict[str, Path]) -> None:
    from slimline.deploy.manifest import verified_manifest
    from slimline.deploy.signing import key_fingerprint, load_public_key

    result, manifest = verified_manifest(signed, key=keys["public"])
    assert result.signature_key_sha256 == key_fingerprint(load_public_key(keys["public"]))
    assert manifest.name == result.name == "tiny-bert"


def test_bad_keys_and_digests_are_refused_with_exit_2(signed: Path, keys: dict[str, Path], onnx_dir: Path,
                                                      tmp_path: Path) -> None:
    from slimline import api

    with pytest.raises(BundleError, match="not a PEM private key"):
        api.package(onnx_dir, out=tmp_path / "never", sign_key=keys["public"])
    assert not (tmp_path / "never").exists()
    with pytest.raises(BundleError, match="not a PEM public key"):
        api.verify(signed, key=keys["private"])
    completed = run_cli("verify", str(signed), "--expect-sha256", "abc")
    assert completed.returncode == EXIT_BAD_INPUT and "not a sha256" in _one_line(completed.stderr)


# --- paths confined to the bundle ----------------------------------------------------------------------------


def _outside(root: Path) -> Path:
    """An attacker's tokenizer directory beside the bundle."""
    elsewhere = root.parent / "elsewhere"
    shutil.copytree(root / "preprocessing", elsewhere)
    return elsewhere


ESCAPES = {
    "preprocessing dot-dot": ("preprocessing", lambda root: _outside(root) and "../elsewhere"),
    "preprocessing absolute": ("preprocessing", lambda root: str(_outside(root))),
    "engine dot-dot": ("engine", lambda root: "model_repository/../../elsewhere/model.onnx"),
    "triton config absolute": ("triton_config", lambda root: "/etc/hostname"),
    "report dot-dot": ("report", lambda root: "../report.json"),
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_a_manifest_path_outside_the_bundle_is_refused_even_when_rehashed(copy_of: Path, case: str) -> None:
    from slimline.deploy.manifest import verify_directory

    field, value = ESCAPES[case]
    manifest = _manifest(copy_of)
    manifest[field] = value(copy_of)
    _rehash(copy_of, manifest)
    with pytest.raises(BundleError, match=f"names paths outside itself: {field} "):
        verify_directory(copy_of)


def test_a_files_entry_outside_the_bundle_is_refused_by_the_cli(copy_of: Path) -> None:
    manifest = _manifest(copy_of)
    manifest["files"]["../outside.txt"] = hashlib.sha256(b"").hexdigest()
    manifest["file_sizes"]["../outside.txt"] = 0
    (copy_of.parent / "outside.txt").write_bytes(b"")
    _rehash(copy_of, manifest)
    completed = run_cli("verify", str(copy_of))
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
    assert "file '../outside.txt' has a '..' component" in _one_line(completed.stderr)
