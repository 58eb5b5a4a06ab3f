"""The bundle manifest and verification: what serving and `slimline verify` need, without the packager.

Every file of a bundle but manifest.json is hashed into manifest.json; verification recomputes the
hashes, refuses missing, extra or linked files, checks the layout and runtime, and loads the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimline.core.artifact import (
    LineageStep,
    Provenance,
    TensorSpec,
    sha256_file,
)
from slimline.core.errors import BundleError
from slimline.deploy.archive import extract_archive, is_archive
from slimline.deploy.runtime import RuntimeRequirement, check_runtime, load_check
from slimline.deploy.triton import ENGINE_FILE_NAMES, EngineFormat, config_for
from slimline.profiles.schema import Profile

BUNDLE_MANIFEST = "manifest.json"
BUNDLE_SCHEMA_VERSION = 1
PREPROCESSING_DIR = "preprocessing"
MODEL_REPOSITORY_DIR = "model_repository"
#: Files that belong with the engine in Triton's version directory (external weights), not in preprocessing/.
ENGINE_SUFFIXES = (".onnx", ".onnx_data", ".data", ".plan", ".engine")


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
    warnings: list[str] = Field(default_factory=list)


def bundle_files(root: Path) -> tuple[dict[str, str], list[str]]:
    """sha256 of every regular file under root but the top-level manifest, and anything that is not a
    regular file or directory (links, fifos): a bundle must hold none."""
    hashes: dict[str, str] = {}
    odd: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            odd.append(rel)
        elif path.is_file() and rel != BUNDLE_MANIFEST:
            hashes[rel] = sha256_file(path)
    return hashes, odd


def read_manifest(root: Path) -> BundleManifest:
    path = root / BUNDLE_MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} has no {BUNDLE_MANIFEST}: it is not a slimline bundle.",
                          fix="pass a directory written by `slimline package` (or its .tar.gz).")
    try:
        raw = path.read_text(encoding="utf-8")
        version = BundleManifest.model_validate_json(raw).schema_version
    except (ValidationError, ValueError) as err:
        raise BundleError(f"{path} is corrupt or not a bundle manifest: {err}.",
                          fix="repackage the bundle with `slimline package`.") from err
    if version != BUNDLE_SCHEMA_VERSION:
        raise BundleError(f"{path} has schema_version {version}; this slimline reads {BUNDLE_SCHEMA_VERSION}.",
                          fix="use the slimline version that packaged it, or repackage the bundle.")
    return BundleManifest.model_validate_json(raw)


def _check_files(root: Path, manifest: BundleManifest) -> None:
    hashes, odd = bundle_files(root)
    problems = [f"missing file {rel}" for rel in manifest.files if rel not in hashes]
    problems += [f"sha256 mismatch for {rel}" for rel, digest in manifest.files.items()
                 if rel in hashes and hashes[rel] != digest]
    problems += [f"unexpected file {rel} (not in the manifest)" for rel in hashes if rel not in manifest.files]
    problems += [f"{rel} is a link or special file" for rel in odd]
    if problems:
        raise BundleError(f"bundle {root} failed verification: {'; '.join(problems)}.",
                          fix="the bundle was modified or damaged after packaging; repackage it with "
                              "`slimline package` or fetch an intact copy.")


def _check_format(root: Path, manifest: BundleManifest) -> None:
    expected_engine = ENGINE_FILE_NAMES[manifest.format]
    problems = []
    if manifest.engine not in manifest.files or Path(manifest.engine).name != expected_engine:
        problems.append(f"engine {manifest.engine!r} is not a recorded {expected_engine}")
    if manifest.triton_config not in manifest.files:
        problems.append(f"Triton config {manifest.triton_config!r} is not a recorded file")
    else:
        platform = config_for(manifest.name, manifest.format, manifest.inputs, manifest.outputs,
                              manifest.profile).platform
        if f'platform: "{platform}"' not in (root / manifest.triton_config).read_text(encoding="utf-8"):
            problems.append(f"{manifest.triton_config} does not declare platform {platform}")
    if not manifest.inputs:
        problems.append("no model inputs recorded")
    if problems:
        raise BundleError(f"bundle {root} is not a valid {manifest.format} bundle: {'; '.join(problems)}.",
                          fix="repackage it with `slimline package`.")


def verify_directory(root: Path) -> VerifyResult:
    """Hashes, layout, runtime and version here, and a real load of the engine."""
    manifest = read_manifest(root)
    _check_files(root, manifest)
    _check_format(root, manifest)
    local_version = check_runtime(manifest.runtime)
    warnings = load_check(manifest.runtime, root / manifest.engine, manifest.inputs, manifest.profile)
    return VerifyResult(
        bundle=str(root), name=manifest.name, model_version=manifest.model_version, format=manifest.format,
        runtime=manifest.runtime.name, recorded_runtime_version=manifest.runtime.version,
        local_runtime_version=local_version, files_checked=len(manifest.files),
        manifest_sha256=hashlib.sha256((root / BUNDLE_MANIFEST).read_bytes()).hexdigest(), warnings=warnings,
    )


@contextlib.contextmanager
def bundle_directory(path: Path) -> Iterator[Path]:
    """A bundle directory as it is, or a .tar.gz extracted (safely) into a temporary directory."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist.", fix="check the path (a directory or a .tar.gz).")
    if not is_archive(path):
        raise BundleError(f"{path} is neither a bundle directory nor a .tar.gz.", fix="pass one of those.")
    scratch = Path(tempfile.mkdtemp(prefix="slimline-bundle-"))
    try:
        yield extract_archive(path, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def verify_bundle(path: Path) -> VerifyResult:
    with bundle_directory(path) as root:
        result = verify_directory(root)
    return result.model_copy(update={"bundle": str(path)}) if Path(path) != root else result
