"""run = check everything -> torch-level passes -> export -> ONNX-level passes -> bench -> report.

Each stage writes `OUT/stages/NN-<step>-<hash8>/`, named by the hash of its input manifest and
its config: a rerun reuses finished stages and never overwrites a good one. All checks that can
fail on bad input run before any heavy work (Olive's and llm-compressor's habit).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.benchmark import Candidate, measure
from bench.budgets import evaluate_budgets
from bench.eval_data import build_eval_npz
from bench.report import Report, StageRecord, write_report
from bench.runners.base import torch_baseline_precision
from compress.base import ModelInfo, PassContext, Problem
from compress.recipe import RecipeStep, order_problems, parse_recipe
from export.onnx import OnnxExportConfig, export_onnx
from export.tensorrt import TENSORRT_EXPORT_STEP, TensorRTExportConfig, current_engine_facts, export_tensorrt
from profiles.schema import Profile, Shape
from slimline.artifact import (
    LineageStep,
    Manifest,
    ModelDir,
    TensorSpec,
    atomic_directory,
    describe_os_error,
    new_provenance,
    sha256_json,
    write_manifest,
)
from slimline.checkpoint import open_checkpoint
from slimline.data import DatasetSpec, check_dataset_available
from slimline.errors import CheckpointError, MissingDependency, OutputError, RecipeError
from slimline.inputs import default_input_specs
from slimline.machine import cpu_flags, library_versions, machine_info
from slimline.progress import reporter

EXPORT_STEP = "export.onnx"
#: Model formats the ONNX exporter reads.
EXPORT_ACCEPTS = frozenset({"hf"})
#: Facts about the source that every stage carries forward (the eval-data hint, class names).
INHERITED_METADATA = ("model_type", "label_names", "eval_data")


@dataclass
class StageOutput:
    """What a stage's producer wrote: the manifest fields that depend on the stage."""

    format: str
    model_file: str | None
    inputs: list[TensorSpec]
    outputs: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    data_sha256: dict[str, str] = field(default_factory=dict)


@dataclass
class RunRequest:
    checkpoint: Path
    profile: Profile
    out_dir: Path
    recipe: list[RecipeStep] | None = None  # None: the profile's default recipe
    task: str | None = None
    eval_data: DatasetSpec | None = None
    export: OnnxExportConfig = field(default_factory=OnnxExportConfig)
    bench_export: bool = False  # also measure the fp32 ONNX export: what the passes gained over plain ORT
    tensorrt: TensorRTExportConfig | None = None  # runtime tensorrt only; None: from the profile's target.precision
    seed: int = 0


@dataclass
class Plan:
    source: ModelDir
    torch_steps: list[RecipeStep]
    onnx_steps: list[RecipeStep]
    needs_export: bool
    eval_data: DatasetSpec | None
    warnings: list[str]

    @property
    def steps(self) -> list[RecipeStep]:
        return [*self.torch_steps, *self.onnx_steps]


def ensure_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".slimline-write-test-"):
            pass
    except OSError as err:
        raise describe_os_error(err, out_dir) from err


def _check_runtime_available(profile: Profile) -> None:
    target = profile.target
    if target.runtime == "tensorrt":
        from slimline.gpu import require_tensorrt

        TensorRTExportConfig.for_target_precision(target.precision)  # e.g. int4 has no TensorRT build: exit 2
        require_tensorrt(f"profile {profile.name}")  # names every missing piece (module, CUDA torch, device)
    if target.runtime == "onnxruntime":
        from bench.runners.ort_runner import check_providers

        check_providers(target.providers())
    if target.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MissingDependency(f"profile {profile.name} targets a CUDA GPU, but this machine has none visible "
                                    "to torch.", fix="run it on an NVIDIA GPU machine with a CUDA build of torch.")


def _export_problems(current: ModelInfo, steps: list[RecipeStep]) -> list[Problem]:
    """The exporter reads only Hugging Face models: a torch-level pass that produced anything else
    (e.g. torch-quantized) leaves nothing the ONNX export can take."""
    if current.format in EXPORT_ACCEPTS:
        return []
    producer = next((s for s in reversed(steps) if s.pass_.stage == "torch"), None)
    after = f"step {producer.index + 1} ({producer.name})" if producer else "the input"
    return [Problem("error", f"accepts only {sorted(EXPORT_ACCEPTS)} models, but {after} produces a "
                    f"{current.format} model, which cannot be exported to ONNX; such a pass needs a profile "
                    "whose runtime is torch", EXPORT_STEP)]


def plan_run(request: RunRequest) -> Plan:
    """Every cheap check, in order; raises a BadInputError subclass (exit 2) on the first problem."""
    profile = request.profile
    steps = request.recipe if request.recipe is not None else parse_recipe(profile.recipe, f"profile {profile.name}")
    source = open_checkpoint(request.checkpoint, request.task)
    if source.manifest.format != "hf":
        raise CheckpointError(f"{request.checkpoint} is a {source.manifest.format} model; `run` starts from a "
                              "Hugging Face checkpoint.", fix="use `slimline bench` to measure an exported model.")
    ordering = order_problems(steps)
    if ordering:
        raise RecipeError("the recipe's passes cannot follow each other:\n  " + "\n  ".join(ordering),
                          fix="reorder the steps.")
    needs_export = profile.target.runtime != "torch"
    problems: list[Problem] = []
    model_type = source.manifest.metadata.get("model_type")
    current = ModelInfo("hf", source.manifest.task, model_type)
    exported = False
    for step in steps:
        if step.pass_.stage == "onnx" and not exported:
            if needs_export:
                problems += _export_problems(current, steps)
            else:
                problems.append(step.pass_.error("works on ONNX models, but the target runtime is torch (no export)"))
            current, exported = ModelInfo("onnx", current.task, model_type), True
        problems += step.pass_.check(current, profile.target)
        current = ModelInfo(step.pass_.produces, current.task, model_type)
    if needs_export and not exported:
        problems += _export_problems(current, steps)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise RecipeError("the recipe cannot run on this target:\n  " + "\n  ".join(map(str, errors)),
                          fix="change the recipe or pick a profile whose target suits it.")
    _check_runtime_available(profile)
    ensure_writable(request.out_dir)
    eval_data = request.eval_data
    if eval_data is None and source.manifest.task == "text-classification":
        hinted = source.manifest.metadata.get("eval_data")
        eval_data = DatasetSpec.model_validate(hinted) if hinted else None
    if eval_data is not None:
        check_dataset_available(eval_data)
    return Plan(source=source, torch_steps=[s for s in steps if s.pass_.stage == "torch"],
                onnx_steps=[s for s in steps if s.pass_.stage == "onnx"], needs_export=needs_export,
                eval_data=eval_data, warnings=[str(p) for p in problems if p.severity == "warning"])


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
        return StageOutput(step.pass_.produces, result.model_file, model.manifest.inputs, model.manifest.outputs,
                           result.metadata, result.data_sha256)
    return produce


def export_producer(model: ModelDir, config: OnnxExportConfig) -> Callable[[Path], StageOutput]:
    def produce(tmp: Path) -> StageOutput:
        result = export_onnx(model, tmp, config)
        return StageOutput("onnx", result.model_file, result.inputs, result.outputs, result.metadata)
    return produce


def tensorrt_config(request: RunRequest) -> TensorRTExportConfig:
    return request.tensorrt or TensorRTExportConfig.for_target_precision(request.profile.target.precision)


def tensorrt_context_key(request: RunRequest) -> dict[str, Any]:
    """An engine depends on the shapes and on the GPU and TensorRT release it was built on: a rerun
    elsewhere rebuilds instead of reusing an engine this machine cannot load (a driver update does not)."""
    engine = current_engine_facts().model_dump(include={"tensorrt_version", "compute_capability", "gpu_name"})
    return {"shapes": [s.model_dump() for s in request.profile.shapes], "engine": engine}


def tensorrt_producer(model: ModelDir, config: TensorRTExportConfig,
                      shapes: list[Shape]) -> Callable[[Path], StageOutput]:
    def produce(tmp: Path) -> StageOutput:
        result = export_tensorrt(model, tmp, config, shapes)
        return StageOutput("tensorrt", result.model_file, result.inputs, result.outputs, result.metadata)
    return produce


def accuracy_budget_pt(profile: Profile) -> float | None:
    """The profile's allowed accuracy loss in points vs fp32, from whichever budget states it."""
    if "accuracy_drop_pt" in profile.budgets:
        return profile.budgets["accuracy_drop_pt"].limit
    budget = profile.budgets.get("accuracy_pct")
    return budget.limit if budget is not None and budget.kind == "max_drop" else None


def pass_context(profile: Profile, tuning_data: DatasetSpec | None, seed: int, teacher: ModelDir) -> PassContext:
    """`teacher` is the run's input checkpoint: what distillation learns from unless its config names another."""
    return PassContext(target=profile.target, seed=seed, shape=profile.shapes[0],
                       accuracy_drop_budget_pt=accuracy_budget_pt(profile), tuning_data=tuning_data, teacher=teacher)


def context_key(context: PassContext) -> dict[str, Any]:
    """What besides its config can change a pass's output: part of the stage's hash and lineage."""
    return {"target": context.target.model_dump(mode="json"), "shape": context.shape.model_dump(),
            "cpu_flags": list(cpu_flags()),  # defaults such as reduce_range depend on the instruction sets
            "accuracy_drop_budget_pt": context.accuracy_drop_budget_pt, "seed": context.seed,
            "tuning_data": context.tuning_data.model_dump() if context.tuning_data else None,
            "teacher_manifest_sha256": context.teacher.manifest_sha256 if context.teacher else None}


@dataclass
class StagesDone:
    final: ModelDir
    onnx_stages: list[ModelDir]
    records: list[StageRecord]


def run_stages(request: RunRequest, plan: Plan) -> StagesDone:
    """torch-level passes -> export -> ONNX-level passes (-> TensorRT build), each reused when already done."""
    context = pass_context(request.profile, plan.eval_data, request.seed, teacher=plan.source)
    engine_build = [TENSORRT_EXPORT_STEP] if request.profile.target.runtime == "tensorrt" else []
    ordered: list[RecipeStep | str | None] = [*plan.torch_steps, *([None] if plan.needs_export else []),
                                              *plan.onnx_steps, *engine_build]
    current, records, onnx_stages = plan.source, [], []
    for index, step in enumerate(ordered, start=1):
        if step is None:  # the export between torch-level and ONNX-level passes
            kind, name, config, key = "exporter", EXPORT_STEP, request.export.model_dump(), None
            produce = export_producer(current, request.export)
        elif isinstance(step, str):  # the TensorRT build after the ONNX-level passes
            trt_config = tensorrt_config(request)
            kind, name, config = "exporter", step, trt_config.model_dump(mode="json")
            key = tensorrt_context_key(request)
            produce = tensorrt_producer(current, trt_config, request.profile.shapes)
        else:
            kind, name, config, key = "pass", step.name, step.config_dict(), context_key(context)
            produce = pass_producer(step, current, context)
        current, record = run_stage(request.out_dir, index, kind, name, config, current, produce, request.seed, key)
        records.append(record)
        if current.manifest.format == "onnx":
            onnx_stages.append(current)
    return StagesDone(current, onnx_stages, records)


def execute(request: RunRequest, plan: Plan) -> Report:
    done = run_stages(request, plan)
    intermediates = done.onnx_stages[:1] if request.bench_export and len(done.onnx_stages) > 1 else []
    return bench_and_report(request, plan, done.final, intermediates, done.records)


def _label(model: ModelDir) -> str:
    """Short name for tables: the last step that made the model (the export alone means fp32 ONNX)."""
    steps = [s.name for s in model.manifest.lineage if s.kind != "source"]
    if not steps:
        return "source"
    if steps[-1] == TENSORRT_EXPORT_STEP:
        return f"{steps[-1]} ({model.manifest.metadata.get('tensorrt', {}).get('precision', '?')})"
    return f"{steps[-1]} (fp32)" if steps[-1].startswith("export.") else steps[-1]


def bench_and_report(request: RunRequest, plan: Plan, final: ModelDir, intermediates: list[ModelDir],
                     records: list[StageRecord]) -> Report:
    profile = request.profile
    runtime = profile.target.runtime
    inputs = final.manifest.inputs or default_input_specs(final.manifest.task)
    with tempfile.TemporaryDirectory(prefix="slimline-eval-") as scratch:
        eval_facts, eval_npz = None, None
        if plan.eval_data is not None:
            spec = plan.eval_data
            if profile.measurement.eval_max_samples:
                spec = spec.model_copy(update={"max_samples": profile.measurement.eval_max_samples})
            eval_npz = Path(scratch) / "eval.npz"
            with reporter().step(f"bench: tokenising {spec.source}/{spec.split}"):
                eval_facts = build_eval_npz(spec, plan.source.path, profile.shapes[0].sequence_length, eval_npz)
        baseline_precision = torch_baseline_precision(profile.target.device, profile.target.precision)
        baseline = Candidate(f"torch {baseline_precision} eager (baseline)", plan.source, "torch")
        # ONNX intermediates of a TensorRT run are measured on ONNX Runtime (the profile's CUDA providers)
        candidates = [Candidate(_label(m), m, "onnxruntime" if m.manifest.format == "onnx" and runtime == "tensorrt"
                                else runtime) for m in intermediates]
        candidates.append(Candidate(_label(final), final, runtime))
        baseline_result, results = measure(candidates, baseline, profile, inputs, eval_npz)
    final_result = results[-1]
    budgets, verdict = evaluate_budgets(profile.budgets, final_result, baseline_result)
    warnings = [*plan.warnings, *baseline_result.warnings, *final_result.warnings]
    if plan.eval_data is None:
        warnings.append("no labelled eval data: accuracy was not measured (pass --eval-data)")
    return Report(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine=machine_info(),
        versions=library_versions(), profile=profile.model_dump(mode="json"),
        recipe=[{"pass": s.name, "with": s.config_dict()} for s in plan.steps], checkpoint=str(plan.source.path),
        stages=records, eval_data=eval_facts, baseline=baseline_result, measurements=final_result,
        intermediates=results[:-1], speedup_vs_baseline=final_result.speedup_vs_baseline,
        accuracy_drop_pt=final_result.accuracy_drop_pt, budgets=budgets, verdict=verdict, warnings=warnings,
        accuracy_fallback=final.manifest.metadata.get("accuracy_fallback"),
    )


def run(request: RunRequest) -> Report:
    """Plan (all cheap checks), execute the stages, benchmark, and write report.json/report.md."""
    plan = plan_run(request)
    report = execute(request, plan)
    write_report(report, request.out_dir)
    return report


def load_report(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "report.json"
    if not path.is_file():
        raise OutputError(f"{path} does not exist.", fix="run `slimline run` first.")
    return json.loads(path.read_text())
