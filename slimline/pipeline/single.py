"""The single-stage commands (`export`, `compress`, `bench`) on top of the pipeline's stage runner.

Each claims `--out` first (slimline.core.outputs: the one output rule, then the lock, before anything
heavy). Intermediate stages go to a hidden temporary work directory beside `--out`, removed when done;
the final directory is copied into `--out` atomically, so an existing good `--out` is replaced only by
a complete new one, and only where slimline wrote it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from slimline.benchmarking.report import Report, write_report
from slimline.compression.base import ModelInfo
from slimline.compression.recipe import RecipeStep, SkippedStep, optional_skip, order_problems
from slimline.core.artifact import ModelDir, atomic_directory, describe_os_error, full_disk_cause, write_manifest
from slimline.core.data import DatasetSpec, validate_dataset
from slimline.core.errors import CheckpointError, PassError, RecipeError, StepNotApplicable
from slimline.core.outputs import (
    claimed_output,
    claimed_run_dir,
    input_paths,
    normalised_path,
    temporary_path,
)
from slimline.core.progress import reporter
from slimline.exporters.onnx import OnnxExportConfig
from slimline.formats.architecture import refuse_unbuildable
from slimline.formats.model_files import model_file_checkpoint
from slimline.pipeline.adapter import merged_checkpoint, open_source
from slimline.pipeline.plan import (
    EXPORT_ACCEPTS,
    EXPORT_STEP,
    Plan,
    RunRequest,
    check_output_location,
    eval_data_for,
    plain_module_problems,
)
from slimline.pipeline.quality_plan import plan_quality
from slimline.pipeline.run import bench_and_report
from slimline.pipeline.runtime_choice import profile_for_format
from slimline.pipeline.stages import context_key, export_producer, pass_context, pass_producer, run_stage, skip_step
from slimline.profiles.schema import Profile
from slimline.runtimes import get_runtime, runtimes_loading

#: What a baseline can be: the PyTorch original (measured eager) or an fp32 ONNX model (on ONNX Runtime).
BASELINE_FORMATS = ("hf", "torch-module", "onnx")


@contextlib.contextmanager
def _work_dir(out: Path) -> Iterator[Path]:
    """A hidden temporary beside --out for the intermediate stages, removed when done (failed or not: a full
    disk keeps nothing). Named for the lock's session, so what a killed writer left is swept by the next."""
    final = normalised_path(out)
    work = temporary_path(final.parent, final.name, "work")
    try:
        work.mkdir()
    except OSError as err:
        raise describe_os_error(err, out) from err
    try:
        yield work
    except BaseException as err:
        full = full_disk_cause(err)
        if full is not None:  # name --out's disk, not the hidden stage directory that filled it
            raise describe_os_error(full, out) from err
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(stage: ModelDir, out: Path, skipped: list[SkippedStep] | None = None) -> ModelDir:
    """Copy the last stage to `out`; skipped optional steps are recorded in its manifest's metadata."""
    with atomic_directory(out, replace=True) as tmp:
        shutil.copytree(stage.path, tmp, dirs_exist_ok=True)
        if skipped:
            metadata = {**stage.manifest.metadata, "skipped_steps": [s.as_data() for s in skipped]}
            write_manifest(tmp, stage.manifest.model_copy(update={"metadata": metadata}))
    return ModelDir.open(out)


def _refuse_unexportable(checkpoint: Path, source: ModelDir) -> None:
    """Only a Hugging Face checkpoint or a PyTorch module (a plain one, TorchScript) has a forward to export: an
    ONNX file is refused before any work (exit 2) with what to do instead, not after it as a stage failure."""
    fmt = source.manifest.format
    if fmt in EXPORT_ACCEPTS:
        return
    if fmt == "onnx":
        raise CheckpointError(f"{checkpoint} is already an ONNX model: there is nothing to export.",
                              fix="give it as it is to `slimline run`, `slimline bench`, `slimline compress` or "
                                  "`slimline package` (its inputs and outputs are read from the graph).")
    raise CheckpointError(f"{checkpoint} is a {fmt} model, which cannot be exported to ONNX.",
                          fix="export the fp32 Hugging Face checkpoint or PyTorch module it was made from.")


def export_to(checkpoint: Path, out: Path, *, task: str | None = None, opset: int = 18,
              exporter: str = "auto", force: bool = False, base: Path | None = None) -> ModelDir:
    """`base`: the base checkpoint when `checkpoint` is a PEFT adapter directory (merged first, cached)."""
    inputs = input_paths(checkpoint, base)
    with claimed_output(out, "model", force=force, inputs=inputs):  # before anything heavy; re-entrant
        source, adapter = open_source(checkpoint, base, task)
        if source.manifest.format == "hf":
            refuse_unbuildable(source.path, source.manifest.task)
        _refuse_unexportable(checkpoint, source)
        config = OnnxExportConfig(opset=opset, exporter=exporter)  # type: ignore[arg-type]
        check_output_location(out, "model", force, inputs + ([adapter.base.path] if adapter else []))
        if adapter is not None:
            source = merged_checkpoint(adapter)
        with _work_dir(out) as work:
            stage, _ = run_stage(work, 1, "exporter", EXPORT_STEP, config.model_dump(), source,
                                 export_producer(source, config))
            return _publish(stage, out)


def compress_to(model_path: Path, out: Path, steps: list[RecipeStep], profile: Profile,
                tuning_data: DatasetSpec | None = None, force: bool = False, base: Path | None = None) -> ModelDir:
    """Apply the recipe's passes in order; every pass must accept the format the previous one produced.

    `tuning_data` feeds accuracy-aware passes (they use its validation split) with the profile's budget.
    """
    if not steps:
        raise RecipeError("the recipe has no passes.", fix="add at least one {pass: NAME} step.")
    inputs = input_paths(model_path, base, tuning_data.source if tuning_data is not None else None)
    with claimed_output(out, "model", force=force, inputs=inputs):  # before anything heavy; re-entrant
        model, adapter = open_source(model_path, base, None, fp32_must_fit=False,  # passes may load it quantized
                                     profile=profile)
        ordering = order_problems(steps)
        if ordering:
            raise RecipeError("the recipe's passes cannot follow each other:\n  " + "\n  ".join(ordering),
                              fix="reorder the steps.")
        info = ModelInfo(model.manifest.format, model.manifest.task, model.manifest.metadata.get("model_type"))
        problems, skipped = [], []
        for step in steps:
            step_problems = step.pass_.check(info, profile.target)
            skip = optional_skip(step, step_problems)
            if skip is not None:
                skipped.append(skip)
                continue
            problems += [p for p in step_problems if p.severity == "error"]
            info = ModelInfo(step.pass_.produces, info.task, info.model_type)
        skipped_now = {s.step.index for s in skipped}
        problems += plain_module_problems(model.manifest.format, [s for s in steps if s.index not in skipped_now])
        if len(skipped) == len(steps):
            raise RecipeError("every step of the recipe is optional and none applies to this model:\n  "
                              + "\n  ".join(s.line for s in skipped),
                              fix="nothing would be written; use a recipe with a step that applies to this model.")
        if problems:
            raise RecipeError("the recipe cannot run on this model and target:\n  " + "\n  ".join(map(str, problems)),
                              fix="each step's fix line above says what to change (the recipe, the --profile, or "
                                  "the input model).")
        if tuning_data is not None:
            validate_dataset(tuning_data, model.path)
        check_output_location(out, "model", force, inputs + ([adapter.base.path] if adapter else []))
        if adapter is not None:
            model = merged_checkpoint(adapter)
        for skip in skipped:
            reporter().note(skip.line)
        skipped_indexes = {s.step.index for s in skipped}
        context = pass_context(profile, tuning_data, seed=0, teacher=model)
        source = model
        with _work_dir(out) as work:
            for index, step in enumerate(steps, start=1):
                if step.index in skipped_indexes:
                    continue
                try:
                    model, _ = run_stage(work, index, "pass", step.name, step.config_dict(), model,
                                         pass_producer(step, model, context),
                                         context=context_key(context, step.pass_.stage))
                except StepNotApplicable as err:
                    if not step.optional:
                        raise
                    skipped.append(skip_step(step, err))
            if model is source:  # never publish the input as if a recipe had made it
                raise PassError("no step of the recipe applied to this model:\n  "
                                + "\n  ".join(s.line for s in skipped),
                                fix="nothing was written; use a recipe with a step that applies to this model.")
            return _publish(model, out, sorted(skipped, key=lambda s: s.step.index))


def _lineage_source(model: ModelDir) -> Path:
    if [s.kind for s in model.manifest.lineage] == ["source"] and model.manifest.format == "onnx":
        return model.path  # an ONNX file as it came in: its own fp32 baseline (even if the file has moved since)
    for step in model.manifest.lineage:
        if step.kind == "source" and "path" in step.config:
            return Path(step.config["path"])
    raise CheckpointError(f"{model.path}'s lineage names no source checkpoint to use as the baseline (a model "
                          "directory made by hand, or compressed from one).",
                          fix="pass --baseline with the fp32 original: a Hugging Face checkpoint, or an ONNX model "
                              "directory (the one this was compressed from; the model itself to measure it alone).")


def bench_model(model_path: Path, profile: Profile, out: Path, *, baseline: Path | None = None,
                eval_data: DatasetSpec | None = None, force: bool = False, base: Path | None = None,
                evaluator: str | None = None) -> Report:
    """Benchmark an existing model directory (or an ONNX / TorchScript file) against its fp32 source on `profile`."""
    inputs = input_paths(model_path, baseline, base, getattr(eval_data, "source", None))
    with claimed_output(out, "run", force=force, inputs=inputs):  # before anything heavy; re-entrant
        model = model_file_checkpoint(model_path) or ModelDir.open(model_path)
        profile = profile_for_format(profile, model.manifest.format)  # runtime auto: the candidate that loads it
        runtimes = runtimes_loading(model.manifest.format)
        if model.manifest.format not in get_runtime(profile.target.runtime).loads:
            raise RecipeError(f"{model_path} is a {model.manifest.format} model; profile {profile.name} runs "
                              f"{profile.target.runtime}, which cannot load it.",
                              fix=f"use a profile whose runtime is one of {list(runtimes)}.")
        # The baseline does the model's task: it is never guessed from config.json (so never "pass --task").
        source, adapter = open_source(baseline or _lineage_source(model), base, model.manifest.task,  # adapter: base
                                      profile=profile)
        if source.manifest.format not in BASELINE_FORMATS:
            raise CheckpointError(f"the baseline {source.path} is a {source.manifest.format} model.",
                                  fix="pass --baseline with the fp32 original: a Hugging Face checkpoint or an ONNX "
                                      "model directory.")
        if model.manifest.task == "text-classification" or eval_data is not None:
            eval_data = eval_data_for(source, eval_data)
        quality = plan_quality(source, profile, eval_data, evaluator)
        inputs += [source.path] + ([adapter.base.path] if adapter else [])  # the lineage's source, the base
        check_output_location(out, "run", force, inputs)
        if adapter is not None:
            source = merged_checkpoint(adapter)
        request = RunRequest(checkpoint=source.path, profile=profile, out_dir=out, eval_data=eval_data,
                             evaluator=evaluator)
        plan = Plan(source=source, torch_steps=[], onnx_steps=[], needs_export=False, eval_data=eval_data,
                    warnings=quality.warnings, evaluator=quality.evaluator, outputs=quality.outputs)
        with claimed_run_dir(out):
            report = bench_and_report(request, plan, model, [], [])
            write_report(report, out)
    return report
