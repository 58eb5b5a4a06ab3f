"""Stages: each writes `OUT/stages/NN-<step>-<hash8>/`, named by the hash of its input manifest and config,
so a rerun reuses finished stages and never overwrites a good one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.benchmarking.report import StageRecord
from slimline.compression.base import PassContext
from slimline.compression.recipe import RecipeStep, SkippedStep
from slimline.core.artifact import (
    LineageStep,
    Manifest,
    ModelDir,
    TensorSpec,
    atomic_directory,
    new_provenance,
    sha256_json,
    write_manifest,
)
from slimline.core.data import DatasetSpec
from slimline.core.errors import CheckpointError, StepNotApplicable
from slimline.core.machine import cpu_flags
from slimline.core.output_kinds import QUALITY_METRICS, ModelOutput, split_metric
from slimline.core.progress import reporter
from slimline.exporters.onnx import OnnxExportConfig, export_onnx
from slimline.exporters.tensorrt import TensorRTExportConfig, export_tensorrt
from slimline.pipeline.adapter import merge_stage, merged_dir
from slimline.pipeline.plan import EXPORT_STEP, Plan, RunRequest
from slimline.profiles.schema import Profile, Shape, Target
from slimline.runtimes import get_runtime
from slimline.runtimes.base import EngineExporter

#: Facts about the source that every stage carries forward (the eval-data hint, class names, an adapter merge's
#: check).
INHERITED_METADATA = ("model_type", "label_names", "eval_data", "adapter_merge", "image_preprocess", "factory",
                      "weights_sha256", "output_kinds")


@dataclass
class StageOutput:
    """What a stage's producer wrote: the manifest fields that depend on the stage."""

    format: str
    model_file: str | None
    inputs: list[TensorSpec]
    outputs: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    data_sha256: dict[str, str] = field(default_factory=dict)


def _stage_dir(out_dir: Path, index: int, name: str, parent: ModelDir, config: dict[str, Any]) -> Path:
    key = sha256_json({"parent": parent.manifest_sha256, "step": name, "config": config})[:8]
    return out_dir / "stages" / f"{index:02d}-{name}-{key}"


def _reusable(path: Path) -> ModelDir | None:
    if not path.exists():
        return None
    try:
        return ModelDir.open(path)
    except CheckpointError:
        return None  # damaged: rebuilt into a temporary sibling, swapped in only when complete


def run_stage(out_dir: Path, index: int, kind: str, name: str, config: dict[str, Any], parent: ModelDir,
              produce: Callable[[Path], StageOutput], seed: int = 0,
              context: dict[str, Any] | None = None) -> tuple[ModelDir, StageRecord]:
    """Run one stage into its hashed directory, or reuse it when already complete and intact.

    `produce(tmp)` writes the model files into `tmp` and describes them.
    """
    final = _stage_dir(out_dir, index, name, parent, {"config": config, "context": context})
    started = time.perf_counter()
    existing = _reusable(final)
    if existing is None:
        with reporter().step(f"stage {index:02d}: {name}"), atomic_directory(final, replace=True) as tmp:
            output: StageOutput = produce(tmp)
            lineage = [*parent.manifest.lineage, LineageStep(kind=kind, name=name, config=config, context=context,
                                                             parent_manifest_sha256=parent.manifest_sha256)]
            inherited = {k: v for k, v in parent.manifest.metadata.items() if k in INHERITED_METADATA}
            write_manifest(tmp, Manifest(
                format=output.format, task=parent.manifest.task, model_file=output.model_file, inputs=output.inputs,
                outputs=output.outputs, lineage=lineage,
                provenance=new_provenance(seeds={"run": seed}, data_sha256=output.data_sha256),
                metadata={**inherited, **output.metadata},
            ))
        existing = ModelDir.open(final)
        reused = False
    else:
        reused = True
    record = StageRecord(name=name, kind=kind, directory=str(final), manifest_sha256=existing.manifest_sha256,
                         reused=reused, seconds=round(time.perf_counter() - started, 2))
    return existing, record


def pass_producer(step: RecipeStep, model: ModelDir, context: PassContext) -> Callable[[Path], StageOutput]:
    def produce(tmp: Path) -> StageOutput:
        result = step.pass_.apply(model, tmp, context)
        inputs = model.manifest.inputs if result.inputs is None else result.inputs
        outputs = model.manifest.outputs if result.outputs is None else result.outputs
        return StageOutput(step.pass_.produces, result.model_file, inputs, outputs, result.metadata,
                           result.data_sha256)
    return produce


def export_producer(model: ModelDir, config: OnnxExportConfig) -> Callable[[Path], StageOutput]:
    def produce(tmp: Path) -> StageOutput:
        result = export_onnx(model, tmp, config)
        return StageOutput("onnx", result.model_file, result.inputs, result.outputs, result.metadata)
    return produce


def tensorrt_producer(model: ModelDir, config: TensorRTExportConfig,
                      shapes: list[Shape]) -> Callable[[Path], StageOutput]:
    def produce(tmp: Path) -> StageOutput:
        result = export_tensorrt(model, tmp, config, shapes)
        return StageOutput("tensorrt", result.model_file, result.inputs, result.outputs, result.metadata)
    return produce


def engine_producer(model: ModelDir, exporter: EngineExporter, config: Any,
                    shapes: list[Shape], engine_format: str) -> Callable[[Path], StageOutput]:
    """The target runtime's engine (a TensorRT plan, an OpenVINO IR) built from the last ONNX stage."""
    def produce(tmp: Path) -> StageOutput:
        result = exporter.build(model, tmp, config, shapes)
        return StageOutput(engine_format, result.model_file, result.inputs, result.outputs, result.metadata)
    return produce


def accuracy_budget_pt(profile: Profile) -> float | None:
    """The profile's allowed accuracy loss in points vs fp32, from whichever budget states it."""
    if "accuracy_drop_pt" in profile.budgets:
        return profile.budgets["accuracy_drop_pt"].limit
    budget = profile.budgets.get("accuracy_pct")
    return budget.limit if budget is not None and budget.kind == "max_drop" else None


def pass_context(profile: Profile, tuning_data: DatasetSpec | Any | None, seed: int, teacher: ModelDir,
                 outputs: list[ModelOutput] | None = None) -> PassContext:
    """`teacher` is the run's input checkpoint: what distillation learns from unless its config names another.
    `outputs`: the model's outputs with the kinds the plan decided (the fallback judges each by its kind)."""
    quality = {name: budget for name, budget in profile.budgets.items() if split_metric(name)[0] in QUALITY_METRICS}
    return PassContext(target=profile.target, seed=seed, shape=profile.shapes[0],
                       accuracy_drop_budget_pt=accuracy_budget_pt(profile), tuning_data=tuning_data, teacher=teacher,
                       size_budget_mb=_max_budget(profile, "size_mb"),
                       latency_p50_budget_ms=_max_budget(profile, "latency_p50_ms"),
                       quality_budgets=quality, quality_outputs=list(outputs or []))


def _max_budget(profile: Profile, metric: str) -> float | None:
    budget = profile.budgets.get(metric)
    return budget.limit if budget is not None and budget.kind == "max" else None


def target_key(target: Target, pass_stage: str) -> dict[str, Any]:
    """The part of the target a pass's output can depend on.

    A torch-level pass (pruning, distillation, torch or bitsandbytes quantization) runs in torch before the
    export: which runtime will load the export does not change what it writes, except through how pruning's
    pre-flight times the candidate (the runtime's `pruning_timer`). Keying such a stage by the runtime's name
    and options would make `slimline search` distil the same student again for every runtime it tries."""
    if pass_stage != "torch":
        return target.model_dump(mode="json")
    return {"device": target.device, "threads": target.threads, "precision": target.precision,
            "pruning_timer": get_runtime(target.runtime).pruning_timer}


def context_key(context: PassContext, pass_stage: str = "onnx") -> dict[str, Any]:
    """What besides its config can change a pass's output: part of the stage's hash and lineage."""
    return {"target": target_key(context.target, pass_stage), "shape": context.shape.model_dump(),
            "cpu_flags": list(cpu_flags()),  # defaults such as reduce_range depend on the instruction sets
            "accuracy_drop_budget_pt": context.accuracy_drop_budget_pt, "seed": context.seed,
            "size_budget_mb": context.size_budget_mb, "latency_p50_budget_ms": context.latency_p50_budget_ms,
            "tuning_data": context.tuning_data.model_dump() if context.tuning_data else None,
            "quality_budgets": {name: budget.model_dump() for name, budget in context.quality_budgets.items()},
            "quality_outputs": [[o.name, o.kind] for o in context.quality_outputs],
            "teacher_manifest_sha256": context.teacher.manifest_sha256 if context.teacher else None}


def skip_step(step: RecipeStep, err: StepNotApplicable) -> SkippedStep:
    """An optional step whose pass found nothing to do here: said on the console now, and in the report."""
    skipped = SkippedStep(step, err.reason)
    reporter().note(skipped.line)
    return skipped


@dataclass
class StagesDone:
    final: ModelDir
    onnx_stages: list[ModelDir]
    records: list[StageRecord]


def run_stages(request: RunRequest, plan: Plan) -> StagesDone:
    """(adapter merge ->) torch-level passes -> export -> ONNX-level passes (-> TensorRT build), each reused
    when already done. A merged adapter replaces `plan.source`: it is the fp32 baseline and the teacher."""
    records: list[StageRecord] = []
    if plan.adapter is not None:
        plan.source, merge_record = merge_stage(plan.adapter, merged_dir(plan.adapter, request.out_dir / "stages"))
        records.append(merge_record)
    context = pass_context(request.profile, plan.eval_data, request.seed, teacher=plan.source, outputs=plan.outputs)
    engine_build = [plan.engine_step] if plan.engine_step else []
    ordered: list[RecipeStep | str | None] = [*plan.torch_steps, *([None] if plan.needs_export else []),
                                              *plan.onnx_steps, *engine_build]
    current, onnx_stages = plan.source, []
    for index, step in enumerate(ordered, start=1):
        if step is None:  # the export between torch-level and ONNX-level passes
            kind, name, config, key = "exporter", EXPORT_STEP, request.export.model_dump(), None
            produce = export_producer(current, request.export)
        elif isinstance(step, str):  # the runtime's engine build (TensorRT, OpenVINO IR) after the ONNX passes
            runtime = get_runtime(request.profile.target.runtime)
            exporter = runtime.exporter()
            engine_config = exporter.config(request.profile.target, request.tensorrt)
            kind, name, config = "exporter", step, engine_config.model_dump(mode="json")
            key = exporter.context_key(request.profile.target, request.profile.shapes)
            produce = engine_producer(current, exporter, engine_config, request.profile.shapes,
                                      str(runtime.engine_format))
        else:
            kind, name, config, key = "pass", step.name, step.config_dict(), context_key(context, step.pass_.stage)
            produce = pass_producer(step, current, context)
        try:
            current, record = run_stage(request.out_dir, index, kind, name, config, current, produce, request.seed,
                                        key)
        except StepNotApplicable as err:
            if not isinstance(step, RecipeStep) or not step.optional:
                raise
            plan.skipped.append(skip_step(step, err))  # nothing was written; the next step gets `current`
            continue
        records.append(record)
        if current.manifest.format == "onnx":
            onnx_stages.append(current)
    return StagesDone(current, onnx_stages, records)
