"""The bundle manifest and verification: what serving and `slimline verify` need, without the packager.

Every file of a bundle but manifest.json (and signature.json, which signs it) is hashed into
manifest.json. Verification first checks trust when asked (a pinned manifest sha256, an Ed25519
signature: slimline.deploy.signing), then confines every path the manifest names to the bundle
directory, recomputes the hashes and sizes, refuses missing, extra or linked files, checks the layout
and runtime, and loads the engine. Hashes alone prove nothing about who made a bundle: anyone who
changes a file can rewrite the manifest to match; only a signature or a pinned digest does.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from slimline.core.artifact import (
    LineageStep,
    Provenance,
    TensorSpec,
    sha256_file,
)
from slimline.core.errors import BundleError
from slimline.core.scratch import scratch_directory
from slimline.core.small_files import read_small_file
from slimline.deploy.runtime import RuntimeRequirement, check_runtime, load_check
from slimline.deploy.triton import EngineFormat, config_for, engine_file_name
from slimline.profiles.schema import Profile

BUNDLE_MANIFEST = "manifest.json"
#: The one file besides manifest.json that the manifest does not list: it signs the manifest's bytes.
BUNDLE_SIGNATURE = "signature.json"
#: A real manifest is tens of KB; anything larger is refused before it is read (or extracted).
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 64 << 10
BUNDLE_SCHEMA_VERSION = 1
PREPROCESSING_DIR = "preprocessing"
MODEL_REPOSITORY_DIR = "model_repository"


class BundleManifest(BaseModel):
    """manifest.json of a bundle. `lineage` runs from the input checkpoint to the packaged engine."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = BUNDLE_SCHEMA_VERSION
    kind: str = "slimline-bundle"
    name: str
    model_version: str = Field(description="first 12 hex digits of the engine's sha256")
    format: EngineFormat
    task: str
    engine: str
    preprocessing: str = PREPROCESSING_DIR
    triton_config: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] = Field(default_factory=list)
    runtime: RuntimeRequirement
    profile: Profile
    lineage: list[LineageStep]
    model_manifest_sha256: str
    model_provenance: Provenance
    model_metadata: dict[str, Any] = Field(default_factory=dict)
    report: str | None = None
    verdict: str | None = None
    versions: dict[str, str]
    machine: dict[str, Any]
    created_at: str
    files: dict[str, str] = Field(default_factory=dict)
    #: Bytes of each file in `files`; None in bundles packaged before sizes were recorded. Extraction
    #: derives its size limits from it, so a gzip bomb is refused at a member's header.
    file_sizes: dict[str, NonNegativeInt] | None = None


class VerifyResult(BaseModel):
    bundle: str
    name: str
    model_version: str
    format: str
    runtime: str
    recorded_runtime_version: str
    local_runtime_version: str
    files_checked: int
    manifest_sha256: str
    #: Fingerprint of the key whose signature was checked; None when no key was given.
    signature_key_sha256: str | None = None
    warnings: list[str] = Field(default_factory=list)


def bundle_files(root: Path) -> tuple[dict[str, str], list[str]]:
    """sha256 of every regular file under root but the top-level manifest and signature, and anything
    that is not a regular file or directory (links, fifos): a bundle must hold none."""
    hashes: dict[str, str] = {}
    odd: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            odd.append(rel)
        elif path.is_file() and rel not in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE):
            hashes[rel] = sha256_file(path)
    return hashes, odd


def file_sizes(root: Path, rels: Iterable[str]) -> dict[str, int]:
    return {rel: (root / rel).stat().st_size for rel in rels}


def read_manifest_bytes(root: Path) -> bytes:
    """manifest.json's bytes, refused unread when it is not a regular file or larger than any real one."""
    path = root / BUNDLE_MANIFEST
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{root} has no {BUNDLE_MANIFEST}: it is not a slimline bundle.",
                          fix="pass a directory written by `slimline package` (or its .tar.gz).")
    return read_small_file(path, max_bytes=MAX_MANIFEST_BYTES, what="bundle manifest", error=BundleError,
                           fix="this is not a slimline bundle; do not use it.")


def read_manifest(root: Path, raw: bytes | None = None) -> BundleManifest:
    """Parse root/manifest.json, or `raw` (its bytes, already read and checked against a signature)."""
    path = root / BUNDLE_MANIFEST
    if raw is None:
        raw = read_manifest_bytes(root)
    try:
        version = BundleManifest.model_validate_json(raw).schema_version
    except (ValidationError, ValueError) as err:
        raise BundleError(f"{path} is corrupt or not a bundle manifest: {err}.",
                          fix="repackage the bundle with `slimline package`.") from err
    if version != BUNDLE_SCHEMA_VERSION:
        raise BundleError(f"{path} has schema_version {version}; this slimline reads {BUNDLE_SCHEMA_VERSION}.",
                          fix="use the slimline version that packaged it, or repackage the bundle.")
    return BundleManifest.model_validate_json(raw)


def path_problem(root: Path, rel: str) -> str | None:
    """Why a path inside a bundle (a manifest entry, an archive member) could reach outside `root`, or
    None. Checked lexically (no absolute part, no drive, no backslash, no '..') and then resolved,
    before anything opens or writes it."""
    if not rel or "\x00" in rel:
        return "is empty or holds a NUL byte"
    if rel.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", rel):
        return "is an absolute path"
    if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        return "has a '..' component"
    if "\\" in rel:
        return "is not a relative POSIX path"
    if not (root / rel).resolve().is_relative_to(root.resolve()):
        return "resolves outside the bundle"
    return None


def _check_paths(root: Path, manifest: BundleManifest) -> None:
    """Every path the manifest names (the ones serving and Triton open included) stays in the bundle."""
    named = {"engine": manifest.engine, "triton_config": manifest.triton_config,
             "preprocessing": manifest.preprocessing}
    if manifest.report is not None:
        named["report"] = manifest.report
    problems = [f"{field} {rel!r} {why}" for field, rel in named.items()
                if (why := path_problem(root, rel)) is not None]
    recorded = [*manifest.files, *(manifest.file_sizes or {})]
    problems += [f"file {rel!r} {why}" for rel in dict.fromkeys(recorded)
                 if (why := path_problem(root, rel)) is not None]
    if not problems:
        preprocessing = root / manifest.preprocessing
        if preprocessing.is_symlink() or not preprocessing.is_dir() or preprocessing.resolve() == root.resolve():
            problems.append(f"preprocessing {manifest.preprocessing!r} is not a directory inside the bundle")
        if manifest.report is not None and manifest.report not in manifest.files:
            problems.append(f"report {manifest.report!r} is not a recorded file")
    if problems:
        raise BundleError(f"bundle {root} names paths outside itself: {'; '.join(problems[:5])}"
                          + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "") + ".",
                          fix="a bundle only refers to its own files by relative paths; this manifest was "
                              "edited by hand or forged, do not use it.")


def _check_files(root: Path, manifest: BundleManifest) -> None:
    hashes, odd = bundle_files(root)
    problems = [f"missing file {rel}" for rel in manifest.files if rel not in hashes]
    problems += [f"sha256 mismatch for {rel}" for rel, digest in manifest.files.items()
                 if rel in hashes and hashes[rel] != digest]
    if manifest.file_sizes is not None:
        sizes = file_sizes(root, [rel for rel in manifest.files if rel in hashes])
        problems += [f"size mismatch for {rel} (recorded {manifest.file_sizes.get(rel)} bytes, found {size})"
                     for rel, size in sizes.items() if manifest.file_sizes.get(rel) != size]
        problems += [f"file_sizes lists {rel}, which is not in files" for rel in manifest.file_sizes
                     if rel not in manifest.files]
    problems += [f"unexpected file {rel} (not in the manifest)" for rel in hashes if rel not in manifest.files]
    problems += [f"{rel} is a link or special file" for rel in odd]
    if problems:
        raise BundleError(f"bundle {root} failed verification: {'; '.join(problems)}.",
                          fix="the bundle was modified or damaged after packaging; repackage it with "
                              "`slimline package` or fetch an intact copy.")


def _check_format(root: Path, manifest: BundleManifest) -> None:
    expected_engine = engine_file_name(manifest.format)
    problems = []
    if manifest.engine not in manifest.files or Path(manifest.engine).name != expected_engine:
        problems.append(f"engine {manifest.engine!r} is not a recorded {expected_engine}")
    if manifest.triton_config not in manifest.files:
        problems.append(f"Triton config {manifest.triton_config!r} is not a recorded file")
    else:
        triton = config_for(manifest.name, manifest.format, manifest.inputs, manifest.outputs, manifest.profile)
        declared = (root / manifest.triton_config).read_text(encoding="utf-8")
        kind, expected = ("platform", triton.platform) if triton.platform else ("backend", triton.backend)
        if f'{kind}: "{expected}"' not in declared:
            problems.append(f"{manifest.triton_config} does not declare {kind} {expected}")
    if not manifest.inputs:
        problems.append("no model inputs recorded")
    if problems:
        raise BundleError(f"bundle {root} is not a valid {manifest.format} bundle: {'; '.join(problems)}.",
                          fix="repackage it with `slimline package`.")


def _check_trust(root: Path, raw: bytes, key: Path | None, expect_sha256: str | None) -> tuple[str | None, list[str]]:
    """Pinned digest and signature, on the very bytes parsed afterwards. Returns the checked key's
    fingerprint (or None) and a hint when a signature is present but was not asked for."""
    from slimline.deploy import signing  # `cryptography` only when a bundle's trust is checked

    if expect_sha256 is not None:
        signing.check_manifest_digest(raw, expect_sha256, root)
    if key is not None:
        return signing.check_signature(root, raw, signing.load_public_key(key)).public_key_sha256, []
    signer = signing.describe_signature(root)
    hint = [f"signed by key {signer[:16]}..., but no --key was given: the signature was not checked"] if signer else []
    return None, hint


def verify_directory(root: Path, *, key: Path | None = None, expect_sha256: str | None = None) -> VerifyResult:
    """Trust (when `key` or `expect_sha256` is given), confined paths, hashes, layout, runtime and version
    here, and a real load of the engine."""
    return verified_manifest(root, key=key, expect_sha256=expect_sha256)[0]


def verified_manifest(root: Path, *, key: Path | None = None,
                      expect_sha256: str | None = None) -> tuple[VerifyResult, BundleManifest]:
    """`verify_directory` and the manifest it verified. The manifest is read once: the bytes whose
    signature is checked are the bytes parsed, and a server uses this object rather than reading the
    file again (which another process could have replaced in between)."""
    raw = read_manifest_bytes(root)
    signer, warnings = _check_trust(root, raw, key, expect_sha256)
    manifest = read_manifest(root, raw)
    _check_paths(root, manifest)
    _check_files(root, manifest)
    _check_format(root, manifest)
    local_version = check_runtime(manifest.runtime)
    warnings += load_check(manifest.runtime, root / manifest.engine, manifest.inputs, manifest.profile)
    result = VerifyResult(
        bundle=str(root), name=manifest.name, model_version=manifest.model_version, format=manifest.format,
        runtime=manifest.runtime.name, recorded_runtime_version=manifest.runtime.version,
        local_runtime_version=local_version, files_checked=len(manifest.files),
        manifest_sha256=hashlib.sha256(raw).hexdigest(), signature_key_sha256=signer, warnings=warnings,
    )
    return result, manifest


def archive_trust_check(archive: Path, key: Path | None,
                        expect_sha256: str | None) -> Callable[[Any], None] | None:
    """The pinned digest and required signature, checked on an archive's manifest and signature before any
    of its data is extracted (slimline.deploy.archive.read_trust_files); None when neither was asked for.
    The key is read now, so a bad `--key` is refused before the archive is even opened."""
    if key is None and expect_sha256 is None:
        return None
    from slimline.deploy import signing

    public_key = signing.load_public_key(key) if key is not None else None

    def check(trust: Any) -> None:
        if expect_sha256 is not None:
            signing.check_manifest_digest(trust.manifest, expect_sha256, archive)
        if public_key is not None:
            signature = None if trust.signature is None else signing.parse_signature(
                trust.signature, archive / BUNDLE_SIGNATURE)
            signing.verify_signature(archive, trust.manifest, signature, public_key)

    return check


@contextlib.contextmanager
def bundle_directory(path: Path, *, key: Path | None = None, expect_sha256: str | None = None) -> Iterator[Path]:
    """A bundle directory as it is, or a .tar.gz extracted (safely) into a temporary directory. With `key` or
    `expect_sha256`, an archive's manifest must pass them before anything is extracted (the directory they
    give is checked again, in full, by `verify_directory`)."""
    from slimline.deploy.archive import extract_archive, is_archive  # archive.py reads manifests: imports this

    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist.", fix="check the path (a directory or a .tar.gz).")
    if not is_archive(path):
        raise BundleError(f"{path} is neither a bundle directory nor a .tar.gz.", fix="pass one of those.")
    check_trust = archive_trust_check(path, key, expect_sha256)
    with scratch_directory("slimline-bundle-") as scratch:
        yield extract_archive(path, scratch, check_trust)


def verify_bundle(path: Path, *, key: Path | None = None, expect_sha256: str | None = None) -> VerifyResult:
    with bundle_directory(path, key=key, expect_sha256=expect_sha256) as root:
        result = verify_directory(root, key=key, expect_sha256=expect_sha256)
    return result.model_copy(update={"bundle": str(path)}) if Path(path) != root else result
