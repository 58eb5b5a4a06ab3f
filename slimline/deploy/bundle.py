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

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

from slimline.bench.report import Report
from slimline.core.artifact import (
    ModelDir,
    atomic_directory,
    atomic_write_text,
    sha256_file,
)
from slimline.core.errors import BundleError, CheckpointError
from slimline.core.machine import library_versions, machine_info
from slimline.deploy.archive import write_archive
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
    try:
        bundle_runtime(model.manifest.format)
    except BundleError as err:
        raise BundleError(f"{model.path} is a {model.manifest.format} model; {err}".split("\n  fix:")[0],
                          fix=err.fix) from err
    return model, report


def _default_name(model: ModelDir, report: Report | None) -> str:
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
    private_key = None
    if sign_key is not None:  # a bad key fails before any copying
        from slimline.deploy.signing import load_private_key

        private_key = load_private_key(Path(sign_key))
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
            for file_name in ("report.json", "report.md", "report.html", "report-tradeoff.svg"):
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
    archive_path = write_archive(out, out.with_name(out.name + ".tar.gz")) if archive else None
    return PackagedBundle(path=str(out), archive=str(archive_path) if archive_path else None,
                          manifest_sha256=sha256_file(out / BUNDLE_MANIFEST), manifest=manifest,
                          signature_key_sha256=signer)
