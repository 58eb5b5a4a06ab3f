"""Plan a run: every check that can fail on bad input, before any heavy work (Olive's and llm-compressor's habit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.benchmarking.evaluators.base import EvalSource, check_eval_source
from slimline.compression.base import ModelInfo, Problem
from slimline.compression.recipe import RecipeStep, SkippedStep, optional_skip, order_problems, profile_recipe
from slimline.core.artifact import (
    ModelDir,
)
from slimline.core.data import DatasetSpec, check_dataset_available, validate_dataset
from slimline.core.errors import CheckpointError, MissingDependency, RecipeError
from slimline.core.machine import cpu_capabilities
from slimline.core.output_kinds import ModelOutput
from slimline.core.outputs import OutputKind, check_output, check_writable, input_paths
from slimline.core.progress import reporter
from slimline.exporters.onnx import OnnxExportConfig
from slimline.exporters.tensorrt import TensorRTExportConfig
from slimline.formats.adapter import Adapter
from slimline.formats.architecture import refuse_unbuildable
from slimline.pipeline.adapter import open_source
from slimline.pipeline.quality_plan import check_calibration_disjoint, hinted_eval_data, plan_quality
from slimline.profiles.schema import Profile
from slimline.runtimes import get_runtime

EXPORT_STEP = "export.onnx"
#: Model formats the ONNX exporter reads.
EXPORT_ACCEPTS = frozenset({"hf", "torch-module"})
VISION_HINT = ("; for CNNs, vision transformers and plain PyTorch modules: --profile cpu-vision (static INT8 "
               "calibrated on --eval-data images).")


@dataclass
class RunRequest:
    checkpoint: Path
    profile: Profile
    out_dir: Path
    recipe: list[RecipeStep] | None = None  # None: the profile's default recipe
    task: str | None = None
    eval_data: DatasetSpec | EvalSource | None = None  # EvalSource: images, .npz, a callable (bench.evaluators)
    export: OnnxExportConfig = field(default_factory=OnnxExportConfig)
    bench_export: bool = False  # also measure the fp32 ONNX export: what the passes gained over plain ORT
    tensorrt: TensorRTExportConfig | None = None  # runtime tensorrt only; None: from the profile's target.precision
    seed: int = 0
    force: bool = False  # write into an --out that holds files slimline did not write
    base: Path | None = None  # the base checkpoint when `checkpoint` is a PEFT adapter directory
    evaluator: str | None = None  # --evaluator: overrides the profile's eval.evaluator and the choice by task


@dataclass
class Plan:
    source: ModelDir
    torch_steps: list[RecipeStep]
    onnx_steps: list[RecipeStep]
    needs_export: bool
    eval_data: DatasetSpec | EvalSource | None
    warnings: list[str]
    adapter: Adapter | None = None  # merged into `source` by the first stage (source is its base until then)
    #: How quality is measured (pipeline.quality_plan): the evaluator, and each output with its kind.
    evaluator: str | None = None
    outputs: list[ModelOutput] = field(default_factory=list)
    #: Optional steps that do not run: refused by their checks here, or found not to apply by run_stages.
    skipped: list[SkippedStep] = field(default_factory=list)
    engine_step: str | None = None  # the runtime's engine build after the ONNX-level passes (export.tensorrt ...)
    choice: Any = None  # target.runtime auto: slimline.pipeline.runtime_choice.Choice (every viable candidate)

    @property
    def steps(self) -> list[RecipeStep]:
        return [*self.torch_steps, *self.onnx_steps]


def check_output_location(out: Path, kind: OutputKind, force: bool, inputs: list[Path] | None = None) -> None:
    """--out follows the output rule (slimline.core.outputs: slimline's, new or forced; never an input) and can
    be written; creates nothing."""
    check_output(out, kind, force=force, inputs=inputs or ())
    check_writable(out)


def run_inputs(request: RunRequest) -> list[Path]:
    """The paths a run reads, which its --out must keep clear of."""
    data = getattr(request.eval_data, "source", None)
    return input_paths(request.checkpoint, request.base, data)


def _check_runtime_available(profile: Profile, engine_step: str | None = None) -> None:
    target = profile.target
    runtime = get_runtime(target.runtime)
    if engine_step:
        runtime.exporter().config(target)  # e.g. int4 has no TensorRT build: exit 2
    runtime.check_available(target, f"profile {profile.name}")  # names every missing piece, with the install line
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
                    f"{current.format} model, which cannot be exported to ONNX", EXPORT_STEP,
                    fix="run such a pass with a profile whose runtime is torch (cpu-torch), or use an ONNX-level "
                        "quantization pass instead")]


def plain_module_problems(fmt: str, steps: list[RecipeStep]) -> list[Problem]:
    """Torch-level passes on a plain PyTorch module: say why, not only "accepts ['hf']" (run and compress alike)."""
    if fmt != "torch-module":
        return []
    return [step.pass_.error("works on transformers models (config.json + an Auto class); a plain PyTorch module "
                             "has none - drop the step and use ONNX-level passes (e.g. quantize.ort-int8-static, "
                             "profile cpu-vision)")
            for step in steps if step.pass_.stage == "torch"]


def eval_data_for(source: ModelDir, requested: DatasetSpec | EvalSource | None) -> DatasetSpec | EvalSource | None:
    """The labelled data to measure accuracy on (given, or the checkpoint's hint), validated in full
    now (header, labels against the model's classes, rows in the split) so that bad data fails before
    any stage runs."""
    if requested is not None and source.manifest.task == "text-generation":  # perplexity: text, no labels
        from slimline.benchmarking.evaluators.perplexity import check_text_data

        return check_text_data(requested)
    if isinstance(requested, DatasetSpec) and source.manifest.task == "feature-extraction":  # texts, no labels
        check_dataset_available(requested)
        return requested
    if isinstance(requested, EvalSource):  # images, an .npz or a callable: bench.evaluators reads it
        from slimline.pipeline.module_source import materialised

        check_eval_source(requested)
        return materialised(requested)  # a callable's arrays as an .npz, split as the Python API splits them
    eval_data = requested
    if eval_data is None and source.manifest.task == "text-classification":
        hinted = source.manifest.metadata.get("eval_data")
        eval_data = DatasetSpec.model_validate(hinted) if hinted else None
    if eval_data is not None:
        validate_dataset(eval_data, source.path)
    return eval_data


def plan_run(request: RunRequest) -> Plan:
    """Every cheap check, in order; raises a BadInputError subclass (exit 2) on the first problem."""
    profile = request.profile
    if profile.target.candidates:  # target.runtime auto: each candidate planned as a run of its own
        from slimline.pipeline.runtime_choice import plan_choice

        return plan_choice(request)
    steps = request.recipe if request.recipe is not None else profile_recipe(profile)
    source, adapter = open_source(request.checkpoint, request.base, request.task, profile=profile)
    if source.manifest.format == "hf":
        refuse_unbuildable(source.path, source.manifest.task)
    onnx_source = source.manifest.format == "onnx"  # an ONNX file given as it is: no export, ONNX-level passes
    if source.manifest.format not in ("hf", "torch-module", "onnx"):
        raise CheckpointError(f"{request.checkpoint} is a {source.manifest.format} model; `run` starts from a "
                              "Hugging Face checkpoint, a plain PyTorch module (--model-factory), an ONNX file or a "
                              "TorchScript file.", fix="use `slimline bench` to measure an exported model.")
    runtime = get_runtime(profile.target.runtime)
    runtime.config(profile.target)  # target.runtime_options against the runtime's own Config: exit 2 on a typo
    if onnx_source and not runtime.needs_onnx_export:
        raise RecipeError(f"{request.checkpoint} is an ONNX model; profile {profile.name} runs {runtime.name}, which "
                          "cannot load it.", fix="use a profile whose runtime runs ONNX (cpu, cpu-openvino) or a "
                                                 "TensorRT one.")
    ordering = order_problems(steps)
    if ordering:
        raise RecipeError("the recipe's passes cannot follow each other:\n  " + "\n  ".join(ordering),
                          fix="reorder the steps.")
    needs_export = runtime.needs_onnx_export and not onnx_source
    problems: list[Problem] = []
    model_type = source.manifest.metadata.get("model_type")
    current = ModelInfo(source.manifest.format, source.manifest.task, model_type)
    exported, skipped = onnx_source, []
    for step in steps:
        first_onnx = step.pass_.stage == "onnx" and not exported
        step_problems = step.pass_.check(ModelInfo("onnx", current.task, model_type) if first_onnx else current,
                                         profile.target)
        if first_onnx and not needs_export:
            step_problems.append(step.pass_.error("works on ONNX models, but the target runtime is torch (no "
                                                  "export)", fix="drop the step, or use an onnxruntime profile"))
        skip = optional_skip(step, step_problems)
        if skip is not None:  # an optional step that cannot apply here: announced, and the run goes on
            skipped.append(skip)
            reporter().note(skip.line)
            continue
        if first_onnx:
            problems += _export_problems(current, steps) if needs_export else []
            exported = True
        problems += step_problems
        current = ModelInfo(step.pass_.produces, current.task, model_type)
    skipped_indexes = {s.step.index for s in skipped}
    steps = [step for step in steps if step.index not in skipped_indexes]
    if needs_export and not exported:
        problems += _export_problems(current, steps)
        current = ModelInfo("onnx", current.task, model_type)
    engine_step = (runtime.engine_step if runtime.needs_onnx_export and current.format != runtime.engine_format
                   else None)
    problems += plain_module_problems(source.manifest.format, steps)
    if hinted_eval_data(source, request.eval_data) is None:  # calibration on "the run's --eval-data" needs some
        problems += [step.pass_.error("calibrates on the run's eval data (calibration.source: eval-data, its train "
                                      "split), and none was given: pass --eval-data (your own text .csv/.jsonl, "
                                      "an image folder or .npz) or name calibration.source")
                     for step in steps if getattr(getattr(step.pass_.config, "calibration", None), "source", None)
                     == "eval-data"]
    # the model and its budgets before the recipe: a profile that cannot judge this model is the first thing to
    # change (and the same refusal for every runtime candidate of an auto profile)
    eval_data = eval_data_for(source, request.eval_data)
    quality = plan_quality(source, profile, eval_data, request.evaluator)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise RecipeError("the recipe cannot run on this target:\n  " + "\n  ".join(map(str, errors)),
                          fix="each step's fix line above says what to change (the recipe, or a profile whose "
                              "target suits it)" + (VISION_HINT if source.manifest.task == "image-classification"
                                                    or source.manifest.format == "torch-module" else "."))
    static_int8 = any("static" in step.name for step in steps)
    if source.manifest.task == "image-classification" and profile.target.device in runtime.onnx_int8_devices \
            and not static_int8:
        problems.append(Problem("warning", "an image classifier on a recipe without static INT8: --profile "
                                "cpu-vision (static INT8 calibrated on --eval-data images) usually runs it faster",
                                "recipe"))
    _check_runtime_available(profile, engine_step)
    problems += [Problem("warning", note, f"runtime {runtime.name}")
                 for note in runtime.preflight_notes(profile.target, cpu_capabilities())]
    check_calibration_disjoint(steps, eval_data)
    base = [adapter.base.path] if adapter is not None else []  # also the base an adapter_config.json names
    check_output_location(request.out_dir, "run", request.force, run_inputs(request) + base)
    return Plan(source=source, torch_steps=[s for s in steps if s.pass_.stage == "torch"],
                onnx_steps=[s for s in steps if s.pass_.stage == "onnx"], needs_export=needs_export,
                eval_data=eval_data, warnings=[str(p) for p in problems if p.severity == "warning"] + quality.warnings,
                adapter=adapter, evaluator=quality.evaluator, outputs=quality.outputs, skipped=skipped,
                engine_step=engine_step)
