"""Bundle signatures: Ed25519 over the exact bytes of manifest.json, keys as standard PEM files.

manifest.json records the sha256 of every other file, so a valid signature over its bytes covers the
whole bundle. The signature cannot sit inside the manifest it signs: it is `signature.json` beside it,
the one file besides manifest.json that the manifest does not list. Keys are PKCS8 (private) and
SubjectPublicKeyInfo (public) PEM, readable by `openssl pkey` and any other Ed25519 tool; a key is
named by the sha256 of its DER SubjectPublicKeyInfo, the fingerprint recorded in signature.json.

`cryptography` is imported here only, so listing passes or reading a manifest never loads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from slimline.core.artifact import atomic_write_text, describe_os_error
from slimline.core.errors import BundleError
from slimline.core.outputs import check_output
from slimline.core.small_files import read_small_file
from slimline.deploy.manifest import BUNDLE_MANIFEST, BUNDLE_SIGNATURE, MAX_SIGNATURE_BYTES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_SCHEMA_VERSION = 1
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIX = ".pub"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class BundleSignature(BaseModel):
    """signature.json: who signed (key fingerprint) and the signature over manifest.json's bytes."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SIGNATURE_SCHEMA_VERSION
    kind: Literal["slimline-bundle-signature"] = "slimline-bundle-signature"
    algorithm: Literal["ed25519"] = "ed25519"
    public_key_sha256: str
    manifest_sha256: str
    signature: str


#: A PEM Ed25519 key is about 120 bytes; anything near this is not a key file.
MAX_KEY_FILE_BYTES = 64 << 10


def _read_key_file(path: Path, what: str) -> bytes:
    """Bounded, regular files only (`--key /dev/zero` read until MemoryError, a FIFO hung)."""
    return read_small_file(path, max_bytes=MAX_KEY_FILE_BYTES, what=what, error=BundleError,
                           fix="pass the PEM file written by `slimline keygen --out PREFIX`.")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted PKCS8 PEM Ed25519 private key (as `slimline keygen` writes)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read_key_file(path, "signing key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError as err:  # cryptography raises TypeError for an encrypted key without a password
        raise BundleError(f"signing key {path} is encrypted; slimline reads unencrypted PKCS8 keys only.",
                          fix=f"decrypt it (openssl pkey -in {path} -out PLAIN.key), keep PLAIN.key mode 0600, "
                              "and sign with that.") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise BundleError(f"{path} is not a PEM private key: {err}.",
                          fix="pass the .key file written by `slimline keygen` (not the .pub).") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} holds a {type(key).__name__}; bundles are signed with Ed25519 keys.",
                          fix="make one with `slimline keygen --out PREFIX`.")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A SubjectPublicKeyInfo PEM Ed25519 public key (as `slimline keygen` writes)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = _read_key_file(path, "public key")
    try:
        key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise BundleError(f"{path} is not a PEM public key: {err}.",
                          fix="pass the .pub file written by `slimline keygen` (the private .key stays with "
                              "the signer).") from err
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path} holds a {type(key).__name__}; bundles are signed with Ed25519 keys.",
                          fix="pass the .pub file written by `slimline keygen`.")
    return key


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the key's DER SubjectPublicKeyInfo: `openssl pkey -pubin -outform DER | sha256sum`."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def generate_keypair(prefix: Path | str) -> tuple[Path, Path]:
    """Write PREFIX.key (mode 0600, created exclusively) and PREFIX.pub; refuses to overwrite either."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    if str(prefix).endswith(("/", os.sep)) or Path(prefix).name in ("", ".", ".."):
        raise BundleError(f"--out {prefix} names a directory; keygen writes PREFIX.key and PREFIX.pub.",
                          fix="give a file prefix, e.g. --out keys/release (writes keys/release.key and .pub).")
    prefix = Path(prefix)
    private_path = prefix.with_name(prefix.name + PRIVATE_KEY_SUFFIX)
    public_path = prefix.with_name(prefix.name + PUBLIC_KEY_SUFFIX)
    existing = [str(p) for p in (private_path, public_path) if p.exists() or p.is_symlink()]
    if existing:
        raise BundleError(f"refusing to overwrite {', '.join(existing)}.",
                          fix="choose another --out prefix, or move the old keys away first (a lost private key "
                              "cannot sign again, and bundles signed with it still name it).")
    for path in (private_path, public_path):  # the output rule (a key is never replaced, so no --force)
        check_output(path, "file")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a file that appeared since the check above is not overwritten; 0600 from the first byte.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(public_pem)
    except FileExistsError as err:
        raise BundleError(f"refusing to overwrite {err.filename}.", fix="choose another --out prefix.") from err
    except OSError as err:
        raise describe_os_error(err, prefix) from err
    return private_path, public_path


def sign_bundle(root: Path, private_key: Ed25519PrivateKey) -> BundleSignature:
    """Sign root/manifest.json's bytes into root/signature.json (replacing any earlier signature)."""
    manifest_bytes = (Path(root) / BUNDLE_MANIFEST).read_bytes()
    signature = BundleSignature(
        public_key_sha256=key_fingerprint(private_key.public_key()),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        signature=base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    )
    atomic_write_text(Path(root) / BUNDLE_SIGNATURE, signature.model_dump_json(indent=2) + "\n")
    return signature


def parse_signature(raw: bytes, where: Path) -> BundleSignature:
    """signature.json's bytes (at most MAX_SIGNATURE_BYTES) as a BundleSignature."""
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise BundleError(f"{where} is over {MAX_SIGNATURE_BYTES} bytes; a signature is far smaller.",
                          fix="the bundle was altered; fetch an intact, signed copy.")
    try:
        return BundleSignature.model_validate_json(raw)
    except (ValidationError, ValueError) as err:
        raise BundleError(f"{where} is not a slimline signature (ed25519, schema_version "
                          f"{SIGNATURE_SCHEMA_VERSION}): {err}.",
                          fix="re-sign the bundle with `slimline package --sign KEY`.") from err


def read_signature(root: Path) -> BundleSignature | None:
    """root/signature.json parsed, or None when the bundle is unsigned."""
    path = Path(root) / BUNDLE_SIGNATURE
    if not path.exists() and not path.is_symlink():
        return None
    fix = "the bundle was altered; fetch an intact, signed copy."
    if path.is_symlink():
        raise BundleError(f"{path} is a symbolic link; a bundle holds only regular files.", fix=fix)
    return parse_signature(read_small_file(path, max_bytes=MAX_SIGNATURE_BYTES, what="signature",
                                           error=BundleError, fix=fix), path)


def check_manifest_digest(manifest_bytes: bytes, expect_sha256: str, where: Path) -> None:
    """Pin a bundle by the sha256 of its manifest.json (which hashes every other file)."""
    expected = expect_sha256.strip().lower()
    if not _SHA256_HEX.fullmatch(expected):
        raise BundleError(f"--expect-sha256 {expect_sha256!r} is not a sha256 (64 hex digits).",
                          fix="pass the `manifest sha256:` line that `slimline package` or `slimline verify` "
                              "printed.")
    actual = hashlib.sha256(manifest_bytes).hexdigest()
    if not hmac.compare_digest(actual, expected):
        raise BundleError(f"{where / BUNDLE_MANIFEST} has sha256 {actual}, not the expected {expected}: this is "
                          "not the bundle you pinned.",
                          fix="fetch the bundle you meant from its publisher, or update the pinned digest only "
                              "if you trust the new bundle.")


def check_signature(root: Path, manifest_bytes: bytes, public_key: Ed25519PublicKey) -> BundleSignature:
    """Require signature.json to be a valid Ed25519 signature of `manifest_bytes` by `public_key`."""
    return verify_signature(Path(root), manifest_bytes, read_signature(Path(root)), public_key)


def verify_signature(root: Path, manifest_bytes: bytes, signature: BundleSignature | None,
                     public_key: Ed25519PublicKey) -> BundleSignature:
    """`signature` (None: the bundle is unsigned) must be `public_key`'s valid signature of `manifest_bytes`.
    `root` names the bundle (a directory or an archive) in messages."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        raise BundleError(f"bundle {root} is not signed (no {BUNDLE_SIGNATURE}), and a signature was required.",
                          fix="ask its publisher for a signed bundle (`slimline package --sign KEY`).")
    fingerprint = key_fingerprint(public_key)
    if signature.public_key_sha256 != fingerprint:
        raise BundleError(f"bundle {root} is signed by key {signature.public_key_sha256[:16]}..., not by the "
                          f"trusted key {fingerprint[:16]}....",
                          fix="pass the public key of the bundle's publisher, or get a bundle they signed.")
    try:
        raw = base64.b64decode(signature.signature, validate=True)
        public_key.verify(raw, manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError) as err:
        raise BundleError(f"bundle {root}: the signature does not match {BUNDLE_MANIFEST}; the manifest was changed "
                          "after signing (or the signature damaged).",
                          fix="do not use this bundle; fetch an intact copy from its publisher.") from err
    return signature


def describe_signature(root: Path) -> str | None:
    """The signing key's fingerprint recorded in signature.json, unchecked, for a hint in verify's output."""
    try:
        signature = read_signature(root)
    except BundleError:
        return None
    return signature.public_key_sha256 if signature else None
