"""One search trial: build its recipe's stages, screen it on the validation split, time it against fp32.

A trial takes and returns plain data, so it runs the same in this process or as a Ray task. Its
stages are the content-addressed stage directories of `slimline run` inside the search's --out, so
trials sharing a prefix (the same pruned + distilled student under several quantizations) build it
once. A trial with a student first screens it after a short distillation and stops when it cannot
reach the accuracy budget (slimline.pipeline.search.early_stop). Its latency is timed interleaved
with the fp32 ONNX reference in one process and reported normalised to the reference's latency at the
start of the search, so a busy minute does not reorder trials measured at different times.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.screening import ValidationScreen
from slimline.compression.recipe import build_step
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.core.errors import SlimlineError
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.search.early_stop import Calibration, probe_recipe, stop_reason
from slimline.pipeline.search.runtime_dim import profile_for_recipe
from slimline.pipeline.side_by_side import runner_spec
from slimline.pipeline.stages import run_stages
from slimline.profiles.schema import Measurement, Profile
from slimline.runtimes import make_runner, runtime_for_format

log = logging.getLogger(__name__)


def quick_timing(measurement: Measurement) -> InterleavedTiming:
    """Each trial's interleaved timing: enough to rank, never more than the profile asks of a full bench."""
    return InterleavedTiming.of(measurement).at_most(warmup_iters=5, min_iters=40, min_time_s=3.0, max_time_s=30.0)


class ProbePlan(BaseModel):
    """Early stopping for a trial with a student: the probe's length and what finished students calibrate."""

    steps: int
    calibration_students: int = 0
    best_gain_pt: float | None = None
    budget_pt: float | None = None

    def calibration(self) -> Calibration:
        return Calibration(self.steps, self.calibration_students, self.best_gain_pt)


class TrialArgs(BaseModel):
    number: int
    recipe: list[dict[str, Any]]
    checkpoint: str
    profile: Profile
    out_dir: str
    eval_data: DatasetSpec
    seed: int = 0
    reference_dir: str  # the fp32 ONNX export: the latency reference and the screening reference
    reference_logits: str  # .npy of the reference's validation logits
    reference_p50_ms: float  # the reference's p50 when the search started (normalisation)
    screen_samples: int | None = None
    timing: InterleavedTiming
    probe: ProbePlan | None = None  # None: no early stopping


class TrialOutcome(BaseModel):
    number: int
    recipe: list[dict[str, Any]]
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    model_dir: str | None = None
    stages: list[str] = Field(default_factory=list)
    latency_p50_ms: float | None = None  # normalised: candidate/reference ratio x the reference's initial p50
    latency_p95_ms: float | None = None
    latency_ratio_vs_reference: float | None = None
    raw_p50_ms: float | None = None
    raw_reference_p50_ms: float | None = None
    size_mb: float | None = None
    fidelity: dict[str, float] = Field(default_factory=dict)
    seconds: float = 0.0
    repeat_of: int | None = None  # the sampler proposed a finished recipe again: its outcome, not rebuilt
    #: Refused before any stage was built (a budget known to fail, its runtime missing): not counted as a trial.
    rejected_before_build: bool = False
    runtime: str | None = None  # the runtime the trial was screened and timed on
    #: The student after a short distillation: steps, its validation fidelity (drop_pt, drop_se_pt, ...), seconds.
    probe: dict[str, float] | None = None
    stopped_early: bool = False  # the probe showed the student cannot reach the accuracy budget
    student_of: int | None = None  # queued to try that trial's trained student under another scheme


def _build(args: TrialArgs, recipe: list[dict[str, Any]]) -> tuple[ModelDir, list[str]]:
    """The recipe's stages (reused where an earlier trial built the same prefix) and their directories."""
    steps = [build_step(i, raw, f"trial {args.number}") for i, raw in enumerate(recipe)]
    request = RunRequest(checkpoint=Path(args.checkpoint), profile=profile_for_recipe(args.profile, recipe),
                         out_dir=Path(args.out_dir), recipe=steps, eval_data=args.eval_data, seed=args.seed)
    done = run_stages(request, plan_run(request))
    return done.final, [record.directory for record in done.records]


def build_trial(args: TrialArgs) -> tuple[ModelDir, list[str]]:
    return _build(args, args.recipe)


def screen_probe(args: TrialArgs) -> dict[str, float] | None:
    """The trial's student after `args.probe.steps` distillation steps, screened in fp32 on the
    validation split as the profile's runtime runs it; None when the trial has no student worth probing."""
    assert args.probe is not None
    recipe = probe_recipe(args.recipe, args.probe.steps)
    if recipe is None:
        return None
    started = time.perf_counter()
    student, _ = _build(args, recipe)  # the float student as the profile's runtime loads it (an fp32 export)
    fidelity = _screen(args, student, profile_for_recipe(args.profile, recipe))
    return {"steps": float(args.probe.steps), **fidelity, "seconds": round(time.perf_counter() - started, 2)}


def _screen(args: TrialArgs, model: ModelDir, profile: Profile) -> dict[str, float]:
    """The model's validation fidelity against the fp32 reference, run by the runtime that loads it."""
    runtime = runtime_for_format(model.manifest.format, profile.target.runtime).name
    screen = ValidationScreen(args.eval_data, model.path, profile.shapes[0].sequence_length,
                              profile.target.threads, profile.target.providers(), args.screen_samples)
    logits = screen.logits(model.model_path) if runtime == args.profile.target.runtime and \
        model.manifest.format == "onnx" else screen.run_logits(make_runner(runner_spec("screen", model, runtime,
                                                                                     profile)).run)
    return screen.fidelity(logits, np.load(args.reference_logits)).as_dict()


def run_trial(args: TrialArgs) -> TrialOutcome:
    """Never raises for a bad trial (a pass refusing this combination is an outcome, not a crash);
    KeyboardInterrupt still propagates."""
    started = time.perf_counter()
    outcome = TrialOutcome(number=args.number, recipe=args.recipe, ok=False)
    try:
        if args.probe is not None:
            outcome.probe = screen_probe(args)
            reason = outcome.probe and stop_reason(outcome.probe, args.probe.calibration(), args.probe.budget_pt)
            if reason:
                outcome.error, outcome.error_kind, outcome.stopped_early = reason, "stopped early", True
                log.info("trial %d %s", args.number, reason)
                outcome.seconds = round(time.perf_counter() - started, 2)
                return outcome
        model, stages = build_trial(args)
        outcome.model_dir, outcome.stages = str(model.path), stages
        profile = profile_for_recipe(args.profile, args.recipe)
        runtime = runtime_for_format(model.manifest.format, profile.target.runtime).name
        outcome.runtime = runtime
        outcome.fidelity = _screen(args, model, profile)
        reference = ModelDir.open(Path(args.reference_dir), verify=False)
        timing = time_interleaved(InterleavedSpec(
            runners=[runner_spec("reference", reference, runtime_for_format("onnx").name, profile),
                     runner_spec("candidate", model, runtime, profile)],
            shape=profile.shapes[0], timing=args.timing, seed=args.seed + args.number,
            threading=profile.measurement.side_by_side_threading))
        latency = timing.latency_stats(args.seed + args.number)
        candidate, ref = latency["candidate"], latency["reference"]
        ratio = candidate.p50_ms / ref.p50_ms
        outcome.latency_ratio_vs_reference = ratio
        outcome.latency_p50_ms = ratio * args.reference_p50_ms
        outcome.latency_p95_ms = candidate.p95_ms / ref.p50_ms * args.reference_p50_ms
        outcome.raw_p50_ms, outcome.raw_reference_p50_ms = candidate.p50_ms, ref.p50_ms
        outcome.size_mb = round(model.size_mb(), 3)
        outcome.ok = True
    except SlimlineError as err:
        outcome.error, outcome.error_kind = str(err), type(err).__name__
        log.warning("trial %d failed: %s", args.number, err)
    except Exception as err:  # a library failing on one combination must not end the whole search
        outcome.error, outcome.error_kind = f"{type(err).__name__}: {err}", "unexpected"
        log.warning("trial %d failed unexpectedly:\n%s", args.number, traceback.format_exc())
    outcome.seconds = round(time.perf_counter() - started, 2)
    return outcome
