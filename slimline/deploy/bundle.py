"""Deployment bundles: build one from a run or model directory (verification lives in slimline.deploy.manifest).

Layout (every file but manifest.json and signature.json is hashed, with its size, into manifest.json):
```
BUNDLE/
  manifest.json                         BundleManifest: lineage, versions, target, hashes and sizes
  signature.json                        Ed25519 signature of manifest.json's bytes (with --sign)
  README.md                             the model card
  report.json, report.md                the bench report (when the source was benchmarked)
  report.html, report-tradeoff.svg      its plots (self-contained page; the main figure, shown in the card)
  preprocessing/                        config.json, tokenizer files: everything but the engine
  model_repository/<name>/config.pbtxt  Triton model configuration
  model_repository/<name>/1/model.onnx  the engine (or model.plan), with any external-data files
```
The engine is stored once, in the Triton layout, so `tritonserver --model-repository BUNDLE/model_repository`
and `slimline serve BUNDLE` load the same bytes.
"""

from __future__ import annotations

import logging
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

from slimline.benchmarking.report import Report
from slimline.core.artifact import (
    ModelDir,
    atomic_directory,
    atomic_write_text,
    sha256_file,
)
from slimline.core.errors import BundleError, CheckpointError
from slimline.core.machine import library_versions, machine_info
from slimline.core.outputs import check_output, claimed_output, input_paths, normalised_path
from slimline.deploy.archive import is_bundle_archive, write_archive
from slimline.deploy.manifest import (
    BUNDLE_MANIFEST,
    MODEL_REPOSITORY_DIR,
    PREPROCESSING_DIR,
    BundleManifest,
    bundle_files,
    file_sizes,
    verify_directory,
)
from slimline.deploy.model_card import render_model_card
from slimline.deploy.runtime import bundle_runtime, engine_outputs, runtime_for
from slimline.deploy.triton import TRITON_VERSION_DIR, config_for, engine_file_name, render_config_pbtxt
from slimline.profiles.schema import Profile, load_profile

log = logging.getLogger(__name__)

REPORT_FILES = ("report.json", "report.md", "report.html", "report-tradeoff.svg")


class PackagedBundle(BaseModel):
    path: str
    archive: str | None
    manifest_sha256: str
    manifest: BundleManifest
    #: Fingerprint of the signing key (sha256 of its DER public key); None when unsigned.
    signature_key_sha256: str | None = None


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
    """A run directory (its final model and report.json), a model directory (no report), or an ONNX file (or a
    directory holding one without a manifest), whose model directory slimline.formats builds."""
    from slimline.formats.model_files import model_file_checkpoint

    from_file = None if (source / "report.json").is_file() else model_file_checkpoint(source)
    if from_file is not None:
        return _engine_model(from_file), None
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
    return _engine_model(model), report


def _engine_model(model: ModelDir) -> ModelDir:
    """A bundle holds a deployable engine: a format some runtime's bundle layout takes (slimline.runtimes)."""
    try:
        bundle_runtime(model.manifest.format)
    except BundleError as err:
        raise BundleError(f"{model.path} is a {model.manifest.format} model; {err}".split("\n  fix:")[0],
                          fix=err.fix) from err
    return model


def _default_name(model: ModelDir, report: Report | None) -> str:
    source = next((s for s in model.manifest.lineage if s.kind == "source"), None)
    if source is not None and source.name in ("onnx-file", "torchscript") and "path" in source.config:
        return _sanitise_name(Path(str(source.config["path"])).stem)  # its cached directory is named by a hash
    if report is not None:
        return _sanitise_name(Path(report.checkpoint).name)
    for step in model.manifest.lineage:
        if step.kind == "source" and "path" in step.config:
            return _sanitise_name(Path(str(step.config["path"])).name)
    return _sanitise_name(model.path.name)


def _engine_files(model: ModelDir) -> list[str]:
    suffixes = bundle_runtime(model.manifest.format).engine_suffixes
    return sorted(rel for rel in model.manifest.files if "/" not in rel and rel.endswith(suffixes))


def _labels(model: ModelDir) -> list[str]:
    from slimline.core.data import label_names_of

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
        target = engine_file_name(fmt) if rel == model_file else rel
        shutil.copy2(model.path / rel, version_dir / target)
    preprocessing = tmp / PREPROCESSING_DIR
    for rel in model.manifest.files:
        if rel not in engine_files:
            (preprocessing / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model.path / rel, preprocessing / rel)
    preprocessing.mkdir(exist_ok=True)
    return f"{MODEL_REPOSITORY_DIR}/{name}/{TRITON_VERSION_DIR}/{engine_file_name(fmt)}"


def _write_manifest(root: Path, manifest: BundleManifest) -> BundleManifest:
    hashes, odd = bundle_files(root)
    if odd:
        raise BundleError(f"refusing to package links or special files: {odd}.", fix="remove them from the source.")
    manifest = manifest.model_copy(update={"files": hashes, "file_sizes": file_sizes(root, hashes)})
    atomic_write_text(root / BUNDLE_MANIFEST, manifest.model_dump_json(indent=2) + "\n")
    return manifest


def package(source: Path, out: Path, *, name: str | None = None, profile: Profile | None = None,
            replace: bool = False, archive: bool = False, sign_key: Path | None = None) -> PackagedBundle:
    """Build a verified bundle at `out` (atomically: all or nothing), and `out`.tar.gz when asked.

    The profile comes from the run's report unless given; a model directory without a report uses the
    `cpu` profile. With `sign_key` (an Ed25519 PEM private key) signature.json signs manifest.json. The
    bundle is verified (signature, hashes, runtime, a real load) before it is moved into place.
    """
    source, out = Path(source), Path(out)
    inputs = [*package_inputs(source), *input_paths(sign_key)]
    with claimed_output(out, "model", force=replace, inputs=inputs, exclusive=True) as claimed:  # rule, then lock
        archive_path = claimed.with_name(claimed.name + ".tar.gz") if archive else None
        if archive_path is not None:
            check_output(archive_path, "file", force=replace, inputs=inputs, ours=is_bundle_archive)
        return _package(source, out, archive_path, name, profile, sign_key)


def package_inputs(source: Path) -> list[Path]:
    """What packaging reads: a model directory, or a run directory's report files and measured model (a
    bundle may go inside the run directory, as the demo's does, but never over them)."""
    report = _find_report(source) if source.is_dir() else None
    if report is None:
        return input_paths(source)
    return input_paths(*(source / name for name in REPORT_FILES), _measured_model_dir(source, report))


def _package(source: Path, out: Path, archive_path: Path | None, name: str | None, profile: Profile | None,
             sign_key: Path | None) -> PackagedBundle:
    private_key = None
    if sign_key is not None:  # a bad key fails before any copying
        from slimline.deploy.signing import load_private_key

        private_key = load_private_key(Path(sign_key))
    model, report = resolve_source(source)
    if profile is None:
        profile = Profile.model_validate(report.profile) if report else load_profile("cpu")
    name = _sanitise_name(name) if name else _default_name(model, report)
    with atomic_directory(out, replace=True, exclusive=True) as tmp:
        engine = _copy_model_files(model, tmp, name)
        fmt = model.manifest.format
        outputs = engine_outputs(fmt, tmp / engine, model)
        triton = config_for(name, fmt, model.manifest.inputs, outputs, profile)
        triton_path = f"{MODEL_REPOSITORY_DIR}/{name}/config.pbtxt"
        (tmp / triton_path).write_text(render_config_pbtxt(triton), encoding="utf-8")
        caveat = bundle_runtime(fmt).triton_caveat(model.manifest.metadata)
        if caveat:
            log.warning("%s: %s", name, caveat)
        if report is not None:
            for file_name in REPORT_FILES:
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
        card = render_model_card(manifest, report, figure_file="report-tradeoff.svg"
                                 if (tmp / "report-tradeoff.svg").is_file() else None)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        manifest = _write_manifest(tmp, manifest)
        signer = None
        if private_key is not None:
            from slimline.deploy.signing import sign_bundle

            signer = sign_bundle(tmp, private_key).public_key_sha256
        verify_directory(tmp)
    if archive_path is not None:
        write_archive(normalised_path(out), archive_path)
    return PackagedBundle(path=str(out), archive=str(archive_path) if archive_path else None,
                          manifest_sha256=sha256_file(out / BUNDLE_MANIFEST), manifest=manifest,
                          signature_key_sha256=signer)
