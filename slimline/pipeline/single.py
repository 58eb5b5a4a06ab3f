"""The single-stage commands (`export`, `compress`, `bench`) on top of the pipeline's stage runner.

Intermediate stages go to a hidden work directory beside `--out`; the final directory is copied
into `--out` atomically, so an existing good `--out` is replaced only by a complete new one. An
`--out` holding anything but a slimline model directory is refused unless `force`, and one writer at
a time holds its lock.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from slimline.bench.report import Report, write_report
from slimline.compress.base import ModelInfo
from slimline.compress.recipe import RecipeStep, order_problems
from slimline.core.artifact import ModelDir, atomic_directory
from slimline.core.data import DatasetSpec, validate_dataset
from slimline.core.errors import CheckpointError, RecipeError
from slimline.core.outputs import claimed_run_dir, output_lock, sweep_stale_temporaries
from slimline.export.onnx import OnnxExportConfig
from slimline.formats.architecture import refuse_unbuildable
from slimline.pipeline.adapter import merged_checkpoint, open_source
from slimline.pipeline.plan import EXPORT_STEP, Plan, RunRequest, check_output_location, eval_data_for
from slimline.pipeline.run import bench_and_report
from slimline.pipeline.runtime_choice import profile_for_format
from slimline.pipeline.stages import context_key, export_producer, pass_context, pass_producer, run_stage
from slimline.profiles.schema import Profile
from slimline.runtimes import get_runtime, runtimes_loading

#: What a baseline can be: the PyTorch original (measured eager) or an fp32 ONNX model (on ONNX Runtime).
BASELINE_FORMATS = ("hf", "torch-module", "onnx")


def _work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.work"


@contextlib.contextmanager
def _claimed_model_output(out: Path) -> Iterator[Path]:
    """Hold `out`'s lock and sweep what a killed writer of it left (temporary siblings, its work dir)."""
    with output_lock(out, "model"):
        sweep_stale_temporaries(out.absolute().parent, out.name)
        sweep_stale_temporaries(_work_dir(out) / "stages")
        yield _work_dir(out)


def _publish(stage: ModelDir, out: Path) -> ModelDir:
    with atomic_directory(out, replace=True) as tmp:
        shutil.copytree(stage.path, tmp, dirs_exist_ok=True)
    shutil.rmtree(_work_dir(out), ignore_errors=True)
    return ModelDir.open(out)


def export_to(checkpoint: Path, out: Path, *, task: str | None = None, opset: int = 18,
              exporter: str = "auto", force: bool = False, base: Path | None = None) -> ModelDir:
    """`base`: the base checkpoint when `checkpoint` is a PEFT adapter directory (merged first, cached)."""
    source, adapter = open_source(checkpoint, base, task)
    if source.manifest.format == "hf":
        refuse_unbuildable(source.path, source.manifest.task)
    config = OnnxExportConfig(opset=opset, exporter=exporter)  # type: ignore[arg-type]
    check_output_location(out, "model", force)
    if adapter is not None:
        source = merged_checkpoint(adapter)
    with _claimed_model_output(out) as work:
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
    model, adapter = open_source(model_path, base, None)
    ordering = order_problems(steps)
    if ordering:
        raise RecipeError("the recipe's passes cannot follow each other:\n  " + "\n  ".join(ordering),
                          fix="reorder the steps.")
    info = ModelInfo(model.manifest.format, model.manifest.task, model.manifest.metadata.get("model_type"))
    problems = []
    for step in steps:
        problems += [p for p in step.pass_.check(info, profile.target) if p.severity == "error"]
        info = ModelInfo(step.pass_.produces, info.task, info.model_type)
    if problems:
        raise RecipeError("the recipe cannot run on this model and target:\n  " + "\n  ".join(map(str, problems)),
                          fix="each step's fix line above says what to change (the recipe, the --profile, or the "
                              "input model).")
    if tuning_data is not None:
        validate_dataset(tuning_data, model.path)
    check_output_location(out, "model", force)
    if adapter is not None:
        model = merged_checkpoint(adapter)
    context = pass_context(profile, tuning_data, seed=0, teacher=model)
    with _claimed_model_output(out) as work:
        for index, step in enumerate(steps, start=1):
            model, _ = run_stage(work, index, "pass", step.name, step.config_dict(), model,
                                 pass_producer(step, model, context), context=context_key(context))
        return _publish(model, out)


def _lineage_source(model: ModelDir) -> Path:
    for step in model.manifest.lineage:
        if step.kind == "source" and "path" in step.config:
            return Path(step.config["path"])
    raise CheckpointError(f"{model.path}'s lineage names no source checkpoint to use as the baseline (a model "
                          "directory made by hand, or compressed from one).",
                          fix="pass --baseline with the fp32 original: a Hugging Face checkpoint, or an ONNX model "
                              "directory (the one this was compressed from; the model itself to measure it alone).")


def bench_model(model_path: Path, profile: Profile, out: Path, *, baseline: Path | None = None,
                eval_data: DatasetSpec | None = None, force: bool = False, base: Path | None = None) -> Report:
    """Benchmark an existing model directory against its fp32 source checkpoint on `profile`."""
    model = ModelDir.open(model_path)
    profile = profile_for_format(profile, model.manifest.format)  # runtime auto: the candidate that loads it
    runtimes = runtimes_loading(model.manifest.format)
    if model.manifest.format not in get_runtime(profile.target.runtime).loads:
        raise RecipeError(f"{model_path} is a {model.manifest.format} model; profile {profile.name} runs "
                          f"{profile.target.runtime}, which cannot load it.",
                          fix=f"use a profile whose runtime is one of {list(runtimes)}.")
    # The baseline does the model's task: it is never guessed from config.json (so never "pass --task").
    source, adapter = open_source(baseline or _lineage_source(model), base, model.manifest.task)  # adapter: its base
    if source.manifest.format not in BASELINE_FORMATS:
        raise CheckpointError(f"the baseline {source.path} is a {source.manifest.format} model.",
                              fix="pass --baseline with the fp32 original: a Hugging Face checkpoint or an ONNX "
                                  "model directory.")
    eval_data = eval_data_for(source, eval_data) if model.manifest.task == "text-classification" else eval_data
    check_output_location(out, "run", force)
    if adapter is not None:
        source = merged_checkpoint(adapter)
    request = RunRequest(checkpoint=source.path, profile=profile, out_dir=out, eval_data=eval_data)
    plan = Plan(source=source, torch_steps=[], onnx_steps=[], needs_export=False, eval_data=eval_data, warnings=[])
    with claimed_run_dir(out):
        report = bench_and_report(request, plan, model, [], [])
        write_report(report, out)
    return report
