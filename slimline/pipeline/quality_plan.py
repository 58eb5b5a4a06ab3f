"""The plan's quality checks: which evaluator and output kinds a run uses, and which budgets it can judge.

Everything here is cheap and runs before any stage: a budget the model's outputs cannot measure
(`perplexity_increase_pct` on a classifier, `agreement_pct` on an embedding) is refused with exit 2,
naming the budget, what the model outputs and the budgets that would fit, instead of a run that does
all the work and ends `not_measured`. So is calibration that would overlap the examples the verdict
is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimline.benchmarking.evaluators.base import EvalSource, evaluator_name_for, get_evaluator, source_has_labels
from slimline.compression.calibration import EVAL_DATA_SOURCE
from slimline.compression.recipe import RecipeStep
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.core.errors import DataError, ProfileError
from slimline.core.output_kinds import (
    GENERATION_METRICS,
    QUALITY_METRICS,
    ModelOutput,
    fitting_metrics,
    metric_fits,
    resolve_outputs,
    split_metric,
)
from slimline.profiles.schema import Profile, list_profiles, load_profile

#: Which data each evaluator reads (a labelled text dataset, text for perplexity, arrays/images).
TEXT_DATASET_EVALUATORS = frozenset({"text-classification", "text-embedding"})
ARRAY_EVALUATORS = frozenset({"image-top1", "agreement", "embedding"})


@dataclass
class QualityPlan:
    evaluator: str | None
    outputs: list[ModelOutput]
    has_labels: bool
    warnings: list[str] = field(default_factory=list)


def model_outputs(source: ModelDir, profile: Profile, evaluator: str | None) -> list[ModelOutput]:
    manifest = source.manifest
    names = manifest.outputs or ["logits"]
    unknown = sorted(set(profile.eval.outputs) - set(names))
    if unknown:
        raise ProfileError(f"profile {profile.name}: eval.outputs names {unknown}, but the model's outputs are "
                           f"{names}.", fix=f"name the model's outputs: {', '.join(names)}.")
    force = get_evaluator(evaluator).forces_kind if evaluator else None
    return resolve_outputs(manifest.task, names, manifest.metadata.get("output_kinds"), profile.eval.outputs, force)


def _check_evaluator_reads(evaluator: str, data: Any, task: str) -> None:
    text_dataset = data is not None and not isinstance(data, EvalSource)
    if evaluator == "perplexity" and task != "text-generation":
        raise DataError(f"evaluator perplexity scores a causal LM, but this model's task is {task}.",
                        fix="drop --evaluator / eval.evaluator, or run a text-generation checkpoint.")
    if data is None or evaluator == "perplexity":
        return
    if evaluator in TEXT_DATASET_EVALUATORS and not text_dataset:
        raise DataError(f"evaluator {evaluator} reads a labelled text dataset, but --eval-data is {data.source}.",
                        fix="pass rotten-tomatoes[:split] or a .csv/.jsonl with text and label columns.")
    if evaluator in ARRAY_EVALUATORS and text_dataset:
        raise DataError(f"evaluator {evaluator} reads images or model inputs (a folder, an .npz, pkg.module:function),"
                        f" but --eval-data is the text dataset {data.source}.",
                        fix="drop --evaluator to score text by the model's task, or pass images / arrays.")


def _unmeasurable(profile: Profile, task: str, outputs: list[ModelOutput], has_labels: bool) -> list[str]:
    """The profile's budgets this model's outputs (and data) cannot measure, each with the reason."""
    refused = []
    for name in profile.budgets:
        metric, output = split_metric(name)
        if metric in GENERATION_METRICS and task != "text-generation":
            refused.append(f"{name} (prefill and decoding are measured for causal LMs; this model's task is {task})")
        elif metric in QUALITY_METRICS and output is not None and output not in [o.name for o in outputs]:
            refused.append(f"{name} (the model has no output {output!r})")
        elif metric in QUALITY_METRICS and not metric_fits(name, outputs, has_labels):
            why = "these eval data have no labels" if metric_fits(name, outputs, True) else "no output measures it"
            refused.append(f"{name} ({why})")
    return refused


def _shipped_profiles_that_fit(profile: Profile, task: str, outputs: list[ModelOutput],
                               has_labels: bool) -> list[str]:
    """Shipped profiles for the same device and runtime whose every budget this model can measure (a causal LM
    on `cpu`: llm-cpu), so that the refusal names one that works instead of only saying what to edit."""
    fitting = []
    for name in list_profiles():
        shipped = load_profile(name)
        if (shipped.target.device, shipped.target.runtime) != (profile.target.device, profile.target.runtime):
            continue
        if name != profile.name and not _unmeasurable(shipped, task, outputs, has_labels):
            fitting.append(name)
    return fitting


def plan_quality(source: ModelDir, profile: Profile, eval_data: Any, override: str | None) -> QualityPlan:
    """The evaluator and output kinds, and every budget checked against them (ProfileError, exit 2)."""
    task = source.manifest.task
    chosen = override or profile.eval.evaluator
    if chosen:
        get_evaluator(chosen)  # an unknown name: DataError listing the known ones
    evaluator = evaluator_name_for(task, eval_data, chosen) if eval_data is not None or chosen else None
    if evaluator is not None:
        _check_evaluator_reads(evaluator, eval_data, task)
    outputs = model_outputs(source, profile, evaluator)
    has_labels = eval_data is None or (source_has_labels(eval_data) and evaluator != "perplexity")
    refused = _unmeasurable(profile, task, outputs, has_labels)
    if refused:
        described = "; ".join(o.describe() for o in outputs)
        fitting = fitting_metrics(outputs, has_labels)
        shipped = _shipped_profiles_that_fit(profile, task, outputs, has_labels)
        use = (f"use --profile {' or --profile '.join(shipped[:3])} (shipped for this target, with budgets this "
               "model can be judged on), or " if shipped else "")
        raise ProfileError(
            f"profile {profile.name} has budgets this model's outputs cannot measure: {'; '.join(refused)}. The "
            f"model (task {task}) outputs {described}; quality budgets that fit: {', '.join(fitting)} (and any "
            "latency, throughput, size or memory budget).",
            fix=use + "remove or replace those budgets (copy the profile: `slimline profiles show NAME > my.yaml`), "
                "or declare the outputs' kinds if they are wrong (input spec `output_kinds`, the profile's "
                "eval.outputs) or choose another --evaluator.")
    plan = QualityPlan(evaluator, outputs, has_labels)
    if len(outputs) > 1:
        gated = {split_metric(n)[1] for n in profile.budgets if split_metric(n)[0] in QUALITY_METRICS}
        if None not in gated:
            loose = [o.name for o in outputs if o.name not in gated]
            plan.warnings += [f"output {name} has no quality budget: its metrics are reported but do not gate the "
                              f"verdict (e.g. rel_error@{name})" for name in loose]
    return plan


def check_calibration_disjoint(steps: list[RecipeStep], eval_data: Any) -> None:
    """A step that calibrates on the run's eval data reads its calibration (`train`) split; the verdict must be
    judged on other examples: evaluating on `all` or on the calibration split itself is refused, and so is a
    calibration split with fewer than the step's min_samples (before any stage, not at quantization)."""
    if eval_data is None:
        return
    for step in steps:
        calibration = getattr(step.pass_.config, "calibration", None)
        if calibration is None:
            continue
        same_source = calibration.source == EVAL_DATA_SOURCE or calibration.source == str(eval_data.source)
        if not same_source:
            continue
        eval_split = getattr(eval_data, "split", "all")
        if eval_split == "all" or calibration.split in ("all", eval_split):
            raise DataError(f"step {step.index + 1} ({step.name}) calibrates on the {calibration.split!r} split of "
                            f"{eval_data.source}, and the verdict would be judged on its {eval_split!r} split: the "
                            "same examples would calibrate and judge the model.",
                            fix=f"evaluate on another split ({eval_data.source}:test is the default), or calibrate "
                                "on other data (calibration.source).")
        if calibration.source == EVAL_DATA_SOURCE:
            _check_calibration_count(step, calibration.resolved(eval_data))


def _check_calibration_count(step: RecipeStep, calibration: Any) -> None:
    """Enough examples in the eval data's calibration split (the pass's own check cannot see the run's data)."""
    from pathlib import Path

    import numpy as np

    from slimline.compression.calibration import check_calibration_set, is_array_source
    from slimline.core.data import split_indices
    from slimline.core.image_data import image_folder_files

    if not is_array_source(calibration.source):
        check_calibration_set(calibration)  # text: counts the split's rows, refuses below min_samples
        return
    path = Path(calibration.source).expanduser()
    if path.is_dir():
        count = len(image_folder_files(path)[0])
    else:
        with np.load(path, allow_pickle=False) as stored:
            arrays = [name for name in stored.files if name not in ("labels", "label_names")]
            count = len(stored[arrays[0]]) if arrays else 0
    available = min(len(split_indices(count, calibration.split, calibration.seed)), calibration.num_samples)
    if available < calibration.min_samples:
        raise DataError(f"step {step.index + 1} ({step.name}) calibrates on the {calibration.split!r} split of "
                        f"{calibration.source}: {available} examples, fewer than the {calibration.min_samples} "
                        "needed for stable activation ranges.",
                        fix="give more examples (the train split is 80% of them), or lower calibration.min_samples "
                            "knowingly.")


def hinted_eval_data(source: ModelDir, requested: Any) -> Any:
    """The run's eval data: as given, else (text classifiers) the checkpoint's own hint, e.g. the demo's."""
    if requested is not None or source.manifest.task != "text-classification":
        return requested
    hinted = source.manifest.metadata.get("eval_data")
    return DatasetSpec.model_validate(hinted) if hinted else None
