"""Deployment bundles: build one from a run or model directory, verify it, and pack/unpack it safely.

Layout (every file but manifest.json is hashed into manifest.json):
```
BUNDLE/
  manifest.json                         BundleManifest: lineage, versions, target, hashes
  README.md                             the model card
  report.json, report.md                the bench report (when the source was benchmarked)
  preprocessing/                        config.json, tokenizer files: everything but the engine
  model_repository/<name>/config.pbtxt  Triton model configuration
  model_repository/<name>/1/model.onnx  the engine (or model.plan), with any external-data files
```
The engine is stored once, in the Triton layout, so `tritonserver --model-repository BUNDLE/model_repository`
and `slimline serve BUNDLE` load the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.report import Report
from profiles.schema import Profile, load_profile
from slimline.artifact import (
    LineageStep,
    ModelDir,
    Provenance,
    TensorSpec,
    atomic_directory,
    atomic_write_text,
    sha256_file,
)
from slimline.bundle_archive import extract_archive, is_archive, write_archive
from slimline.bundle_runtime import RuntimeRequirement, check_runtime, engine_outputs, load_check, runtime_for
from slimline.errors import BundleError, CheckpointError
from slimline.machine import library_versions, machine_info
from slimline.model_card import render_model_card
from slimline.triton import ENGINE_FILE_NAMES, TRITON_VERSION_DIR, EngineFormat, config_for, render_config_pbtxt

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


class PackagedBundle(BaseModel):
    path: str
    archive: str | None
    manifest_sha256: str
    manifest: BundleManifest


def _sanitise_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-._")
    return name or "model"


def _find_report(source: Path) -> Report | None:
    path = source / "report.json"
    if not path.is_file():
        return None
    try:
        return Report.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as err:
        raise BundleError(f"{path} is not a slimline report: {err}.",
                          fix="rerun `slimline run`, or package the model directory itself.") from err


def _measured_model_dir(source: Path, report: Report) -> Path:
    """The model the report measured. Paths in a report are as the user typed them (maybe relative to
    another working directory), so a stage directory inside the run directory wins."""
    recorded = Path(report.measurements.model_dir)
    inside = source / "stages" / recorded.name
    return inside if inside.is_dir() else recorded


def resolve_source(source: Path) -> tuple[ModelDir, Report | None]:
    """A run directory (its final model and report.json) or a model directory (no report)."""
    if not source.is_dir():
        raise BundleError(f"{source} is not a directory.", fix="pass a run directory (with report.json) or a "
                          "slimline model directory (with manifest.json).")
    report = _find_report(source)
    model_path = _measured_model_dir(source, report) if report else source
    try:
        model = ModelDir.open(model_path)
    except CheckpointError as err:
        reason = str(err).removesuffix(f"\n  fix: {err.fix}")
        fix = err.fix if (model_path / "manifest.json").is_file() else (
            "package a `slimline run` directory, or export the checkpoint first (`slimline export`).")
        raise BundleError(f"cannot package {model_path}: {reason}", fix=fix) from err
    if report is not None:
        recorded = {Path(s.directory).name: s.manifest_sha256 for s in report.stages}
        expected = recorded.get(model.path.name)
        if expected is not None and expected != model.manifest_sha256:
            raise BundleError(f"{source}/report.json measured a different {model.path.name} than the one on disk "
                              "(manifest hash differs).", fix="rerun `slimline run` so the report matches.")
    if model.manifest.format not in ENGINE_FILE_NAMES:
        raise BundleError(f"{model.path} is a {model.manifest.format} model; a bundle holds a deployable engine "
                          f"({' or '.join(ENGINE_FILE_NAMES)}).",
                          fix="package a run on an onnxruntime/tensorrt profile, or `slimline export` it first.")
    return model, report


def _default_name(model: ModelDir, report: Report | None) -> str:
    if report is not None:
        return _sanitise_name(Path(report.checkpoint).name)
    for step in model.manifest.lineage:
        if step.kind == "source" and "path" in step.config:
            return _sanitise_name(Path(str(step.config["path"])).name)
    return _sanitise_name(model.path.name)


def _engine_files(model: ModelDir) -> list[str]:
    return sorted(rel for rel in model.manifest.files if "/" not in rel and rel.endswith(ENGINE_SUFFIXES))


def _labels(model: ModelDir) -> list[str]:
    from slimline.data import label_names_of

    names = model.manifest.metadata.get("label_names")
    if names:
        return [str(n) for n in names]
    return (label_names_of(model.path) or []) if (model.path / "config.json").is_file() else []


def _copy_model_files(model: ModelDir, tmp: Path, name: str) -> str:
    """Engine (renamed to Triton's file name) + external data into the version directory; the rest
    into preprocessing/. Returns the engine's path inside the bundle."""
    fmt = model.manifest.format
    version_dir = tmp / MODEL_REPOSITORY_DIR / name / TRITON_VERSION_DIR
    version_dir.mkdir(parents=True)
    engine_files = _engine_files(model)
    model_file = model.manifest.model_file
    if model_file not in engine_files:
        raise BundleError(f"{model.path}'s manifest names engine {model_file!r}, which is not among its files.",
                          fix="rerun the stage that wrote the directory.")
    for rel in engine_files:
        target = ENGINE_FILE_NAMES[fmt] if rel == model_file else rel
        shutil.copy2(model.path / rel, version_dir / target)
    preprocessing = tmp / PREPROCESSING_DIR
    for rel in model.manifest.files:
        if rel not in engine_files:
            (preprocessing / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model.path / rel, preprocessing / rel)
    preprocessing.mkdir(exist_ok=True)
    return f"{MODEL_REPOSITORY_DIR}/{name}/{TRITON_VERSION_DIR}/{ENGINE_FILE_NAMES[fmt]}"


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


def _write_manifest(root: Path, manifest: BundleManifest) -> BundleManifest:
    hashes, odd = bundle_files(root)
    if odd:
        raise BundleError(f"refusing to package links or special files: {odd}.", fix="remove them from the source.")
    manifest = manifest.model_copy(update={"files": hashes})
    atomic_write_text(root / BUNDLE_MANIFEST, manifest.model_dump_json(indent=2) + "\n")
    return manifest


def package(source: Path, out: Path, *, name: str | None = None, profile: Profile | None = None,
            replace: bool = False, archive: bool = False) -> PackagedBundle:
    """Build a verified bundle at `out` (atomically: all or nothing), and `out`.tar.gz when asked.

    The profile comes from the run's report unless given; a model directory without a report uses the
    `cpu` profile. The bundle is verified (hashes, runtime, a real load) before it is moved into place.
    """
    source, out = Path(source), Path(out)
    model, report = resolve_source(source)
    if profile is None:
        profile = Profile.model_validate(report.profile) if report else load_profile("cpu")
    name = _sanitise_name(name) if name else _default_name(model, report)
    if out.exists() and not replace:
        raise BundleError(f"{out} already exists.", fix="choose another --out, or pass --force to replace it.")
    with atomic_directory(out, replace=replace) as tmp:
        engine = _copy_model_files(model, tmp, name)
        fmt = model.manifest.format
        outputs = engine_outputs(fmt, tmp / engine, model)
        triton = config_for(name, fmt, model.manifest.inputs, outputs, profile)
        triton_path = f"{MODEL_REPOSITORY_DIR}/{name}/config.pbtxt"
        (tmp / triton_path).write_text(render_config_pbtxt(triton), encoding="utf-8")
        if report is not None:
            for file_name in ("report.json", "report.md"):
                if (source / file_name).is_file():
                    shutil.copy2(source / file_name, tmp / file_name)
        manifest = BundleManifest(
            name=name, model_version=sha256_file(tmp / engine)[:12], format=fmt, task=model.manifest.task,
            engine=engine, triton_config=triton_path, inputs=model.manifest.inputs, outputs=outputs,
            labels=_labels(model), runtime=runtime_for(fmt, model, profile.target.providers()), profile=profile,
            lineage=model.manifest.lineage, model_manifest_sha256=model.manifest_sha256,
            model_provenance=model.manifest.provenance, model_metadata=model.manifest.metadata,
            report="report.json" if report is not None else None, verdict=report.verdict if report else None,
            versions=library_versions(), machine=machine_info(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        (tmp / "README.md").write_text(render_model_card(manifest, report), encoding="utf-8")
        manifest = _write_manifest(tmp, manifest)
        verify_directory(tmp)
    archive_path = write_archive(out, out.with_name(out.name + ".tar.gz")) if archive else None
    return PackagedBundle(path=str(out), archive=str(archive_path) if archive_path else None,
                          manifest_sha256=sha256_file(out / BUNDLE_MANIFEST), manifest=manifest)


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


__all__ = ["BundleManifest", "PackagedBundle", "VerifyResult", "bundle_directory", "package",
           "read_manifest", "verify_bundle", "verify_directory"]
