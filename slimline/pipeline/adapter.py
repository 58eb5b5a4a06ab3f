"""The merge stage: an adapter + its base become one plain checkpoint in a content-addressed directory.

`run` writes it as `OUT/stages/00-merge.peft-<hash8>/`; `export`, `compress` and `bench` (whose work
directories are temporary) keep it in the cache (`SLIMLINE_CACHE_DIR/merged-adapters/`), so the
exported model's lineage still names an existing fp32 baseline. The directory is named by the hash of
every adapter file, every base file and the merge settings: a rerun reuses it, a changed file rebuilds it.
"""

from __future__ import annotations

import time
from pathlib import Path

from slimline.benchmarking.report import StageRecord
from slimline.core.artifact import (
    LineageStep,
    Manifest,
    ModelDir,
    atomic_directory,
    new_provenance,
    sha256_json,
    write_manifest,
)
from slimline.core.errors import CheckpointError
from slimline.core.machine import library_versions
from slimline.core.paths import cache_root
from slimline.core.progress import reporter
from slimline.formats.adapter import MERGE_ATOL, MERGE_RTOL, Adapter, is_adapter_dir, merge_adapter, open_adapter
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.sanity import check_checkpoint
from slimline.profiles.schema import Profile

MERGE_STEP = "merge.peft"


def open_source(checkpoint: Path, base: Path | None, task: str | None, *, fp32_must_fit: bool = True,
                profile: Profile | None = None) -> tuple[ModelDir, Adapter | None]:
    """The input checkpoint, cheaply validated (against `profile`'s shapes where given). For an adapter directory:
    its base (which stands in for the merged model in every pre-flight check: same config, task and format) and
    the validated adapter."""
    if is_adapter_dir(checkpoint):
        adapter = open_adapter(checkpoint, base, task)
        _check_loadable(adapter.base, fp32_must_fit, profile)
        return adapter.base, adapter
    if base is not None:
        raise CheckpointError(f"--base was given, but {checkpoint} is not a PEFT adapter directory (no "
                              "adapter_config.json).",
                              fix="drop --base, or pass the adapter directory as the checkpoint.")
    source = open_checkpoint(checkpoint, task)
    _check_loadable(source, fp32_must_fit, profile)
    return source, None


def _check_loadable(model: ModelDir, fp32_must_fit: bool, profile: Profile | None) -> None:
    """A Hugging Face model's config, weights' shapes, memory, tokenizer and positions for the profile's shapes
    (slimline.formats.sanity): exit 2 in seconds instead of exit 3 when a stage first loads it."""
    if model.manifest.format == "hf":
        check_checkpoint(model.path, model.manifest.task, fp32_must_fit=fp32_must_fit, profile=profile)


def merge_settings() -> dict[str, object]:
    return {"atol": MERGE_ATOL, "rtol": MERGE_RTOL, "peft": library_versions().get("peft", "?")}


def merged_dir(adapter: Adapter, stages_root: Path, index: int | None = 0) -> Path:
    key = sha256_json({"adapter": adapter.files_sha256, "base": adapter.base.manifest.files, "task": adapter.task,
                       "merge": merge_settings()})
    prefix = f"{index:02d}-" if index is not None else ""
    return stages_root / f"{prefix}{MERGE_STEP}-{key[:8] if index is not None else key[:16]}"


def cached_merge_root() -> Path:
    return cache_root() / "merged-adapters"


def _reusable(path: Path) -> ModelDir | None:
    if not path.is_dir():
        return None
    try:
        return ModelDir.open(path)
    except CheckpointError:
        return None  # damaged: rebuilt into a temporary sibling and swapped in when complete


def merge_stage(adapter: Adapter, final: Path) -> tuple[ModelDir, StageRecord]:
    """Merge into `final` (or reuse it when complete and intact); the manifest's source step records the
    adapter's and the base's file hashes, the merge check's numbers go to metadata["adapter_merge"]."""
    started = time.perf_counter()
    existing = _reusable(final)
    reused = existing is not None
    if existing is None:
        with reporter().step(f"merging adapter {adapter.path.name} into {adapter.base.path.name}"), \
                atomic_directory(final, replace=True) as tmp:
            check = merge_adapter(adapter, tmp)
            metadata = {k: v for k, v in adapter.base.manifest.metadata.items() if k in ("model_type", "label_names")}
            lineage = [LineageStep(kind="source", name="peft-adapter",
                                   config=adapter.lineage_config(final, merge_settings()))]
            write_manifest(tmp, Manifest(format="hf", task=adapter.task, lineage=lineage,
                                         provenance=new_provenance(seeds={"merge_check": 0}),
                                         metadata={**metadata, "adapter_merge": check}))
        existing = ModelDir.open(final)
    record = StageRecord(name=MERGE_STEP, kind="pass", directory=str(final), manifest_sha256=existing.manifest_sha256,
                         reused=reused, seconds=round(time.perf_counter() - started, 2))
    return existing, record


def merged_checkpoint(adapter: Adapter) -> ModelDir:
    """The merged checkpoint in the cache (for the single-stage commands)."""
    return merge_stage(adapter, merged_dir(adapter, cached_merge_root(), index=None))[0]
