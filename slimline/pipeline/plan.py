"""Plan a run: every check that can fail on bad input, before any heavy work (Olive's and llm-compressor's habit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.bench.evaluators.base import EvalSource, check_eval_source
from slimline.compress.base import ModelInfo, Problem
from slimline.compress.recipe import RecipeStep, order_problems, profile_recipe
from slimline.core.artifact import (
    ModelDir,
)
from slimline.core.data import DatasetSpec, validate_dataset
from slimline.core.errors import CheckpointError, MissingDependency, RecipeError
from slimline.core.machine import cpu_capabilities
from slimline.core.outputs import OutputKind, check_output, check_writable
from slimline.export.onnx import OnnxExportConfig
from slimline.export.tensorrt import TensorRTExportConfig
from slimline.formats.adapter import Adapter
from slimline.formats.architecture import refuse_unbuildable
from slimline.pipeline.adapter import open_source
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


@dataclass
class Plan:
    source: ModelDir
    torch_steps: list[RecipeStep]
    onnx_steps: list[RecipeStep]
    needs_export: bool
    eval_data: DatasetSpec | EvalSource | None
    warnings: list[str]
    adapter: Adapter | None = None  # merged into `source` by the first stage (source is its base until then)
    engine_step: str | None = None  # the runtime's engine build after the ONNX-level passes (export.tensorrt ...)
    choice: Any = None  # target.runtime auto: slimline.pipeline.runtime_choice.Choice (every viable candidate)

    @property
    def steps(self) -> list[RecipeStep]:
        return [*self.torch_steps, *self.onnx_steps]


def check_output_location(out: Path, kind: OutputKind, force: bool) -> None:
    """--out is slimline's (or empty/new, or forced) and can be written; creates nothing."""
    check_output(out, kind, force=force)
    check_writable(out)


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


def eval_data_for(source: ModelDir, requested: DatasetSpec | EvalSource | None) -> DatasetSpec | EvalSource | None:
    """The labelled data to measure accuracy on (given, or the checkpoint's hint), validated in full
    now (header, labels against the model's classes, rows in the split) so that bad data fails before
    any stage runs."""
    if requested is not None and source.manifest.task == "text-generation":  # perplexity: text, no labels
        from slimline.bench.evaluators.perplexity import check_text_data

        return check_text_data(requested)
    if isinstance(requested, EvalSource):  # images, an .npz or a callable: bench.evaluators reads it
        check_eval_source(requested)
        return requested
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
    source, adapter = open_source(request.checkpoint, request.base, request.task)
    if source.manifest.format == "hf":
        refuse_unbuildable(source.path, source.manifest.task)
    if source.manifest.format not in ("hf", "torch-module"):
        raise CheckpointError(f"{request.checkpoint} is a {source.manifest.format} model; `run` starts from a "
                              "Hugging Face checkpoint or a plain PyTorch module (--model-factory).",
                              fix="use `slimline bench` to measure an exported model.")
    ordering = order_problems(steps)
    if ordering:
        raise RecipeError("the recipe's passes cannot follow each other:\n  " + "\n  ".join(ordering),
                          fix="reorder the steps.")
    runtime = get_runtime(profile.target.runtime)
    runtime.config(profile.target)  # target.runtime_options against the runtime's own Config: exit 2 on a typo
    needs_export = runtime.needs_onnx_export
    problems: list[Problem] = []
    model_type = source.manifest.metadata.get("model_type")
    current = ModelInfo(source.manifest.format, source.manifest.task, model_type)
    exported = False
    for step in steps:
        if step.pass_.stage == "onnx" and not exported:
            if needs_export:
                problems += _export_problems(current, steps)
            else:
                problems.append(step.pass_.error("works on ONNX models, but the target runtime is torch (no export)",
                                                 fix="drop the step, or use an onnxruntime profile"))
            current, exported = ModelInfo("onnx", current.task, model_type), True
        problems += step.pass_.check(current, profile.target)
        current = ModelInfo(step.pass_.produces, current.task, model_type)
    if needs_export and not exported:
        problems += _export_problems(current, steps)
        current = ModelInfo("onnx", current.task, model_type)
    engine_step = runtime.engine_step if needs_export and current.format != runtime.engine_format else None
    if source.manifest.format == "torch-module":  # say why, not only "accepts ['hf']"
        problems += [step.pass_.error("works on transformers models (config.json + an Auto class); a plain PyTorch "
                                      "module has none - drop the step and use ONNX-level passes (e.g. "
                                      "quantize.ort-int8-static, profile cpu-vision)")
                     for step in steps if step.pass_.stage == "torch"]
    if request.eval_data is None and not source.manifest.metadata.get("eval_data"):  # none given nor hinted
        problems += [step.pass_.error("calibrates on the run's eval data (calibration.source: eval-data), and none "
                                      "was given: pass --eval-data (an image folder or .npz) or name the source")
                     for step in steps if getattr(getattr(step.pass_.config, "calibration", None), "source", None)
                     == "eval-data"]
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise RecipeError("the recipe cannot run on this target:\n  " + "\n  ".join(map(str, errors)),
                          fix="each step's fix line above says what to change (the recipe, or a profile whose "
                              "target suits it)" + (VISION_HINT if source.manifest.task == "image-classification"
                                                    or source.manifest.format == "torch-module" else "."))
    _check_runtime_available(profile, engine_step)
    problems += [Problem("warning", note, f"runtime {runtime.name}")
                 for note in runtime.preflight_notes(profile.target, cpu_capabilities())]
    eval_data = eval_data_for(source, request.eval_data)
    check_output_location(request.out_dir, "run", request.force)  # last: nothing is created before this
    return Plan(source=source, torch_steps=[s for s in steps if s.pass_.stage == "torch"],
                onnx_steps=[s for s in steps if s.pass_.stage == "onnx"], needs_export=needs_export,
                eval_data=eval_data, warnings=[str(p) for p in problems if p.severity == "warning"],
                adapter=adapter, engine_step=engine_step)
