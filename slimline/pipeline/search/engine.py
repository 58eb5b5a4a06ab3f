"""`slimline search`: the fastest artifact that passes every budget, found by an Optuna study over a space.

Pre-flight first (checkpoint, profile, space, eval data, --out), then in --out: the fp32 ONNX export
as the reference, the reference's validation logits and its latency next to torch fp32 eager, and the
study. Trials are sampled from the space, built as content-addressed stages, screened on the
validation split and timed interleaved with the reference (slimline.pipeline.search.trial). After every
trial the trials table, the front, its plot and the best so far are rewritten atomically. When the
trial count or the time budget is spent, the best trials are re-timed side by side and the chosen one
gets the full bench on the test split, with a verdict (slimline.pipeline.search.final).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.report import Report
from slimline.benchmarking.screening import ValidationScreen
from slimline.compression.search_space import SearchSpace
from slimline.compression.search_space_files import load_search_space
from slimline.core.artifact import ModelDir, sha256_json
from slimline.core.data import DatasetSpec
from slimline.core.errors import DataError, RecipeError
from slimline.core.machine import cpu_flags
from slimline.core.outputs import claimed_output, claimed_run_dir, input_paths
from slimline.core.progress import reporter
from slimline.pipeline.plan import Plan, RunRequest, plan_run
from slimline.pipeline.search import study as studies
from slimline.pipeline.search.early_stop import Calibration
from slimline.pipeline.search.executors import Executor, LocalExecutor, RayExecutor
from slimline.pipeline.search.outputs import SearchState, write_best, write_trials
from slimline.pipeline.search.runtime_dim import pre_build_problem
from slimline.pipeline.search.selection import (
    AcceptanceRule,
    accuracy_budget,
    best,
    constraints,
    objectives,
    pareto_front,
)
from slimline.pipeline.search.trial import ProbePlan, TrialArgs, TrialOutcome, quick_timing
from slimline.pipeline.side_by_side import runner_spec
from slimline.pipeline.stages import run_stages
from slimline.profiles.schema import Profile
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
DEFAULT_TIME_BUDGET_S = 20 * 60
#: Consecutive samples that repeat a finished recipe before the space counts as exhausted.
MAX_REPEATS = 25
#: Consecutive repeats after which the next samples are drawn at random (TPE on a mostly discrete space
#: converges and proposes its best finished recipe again and again; that is not the space being exhausted).
EXPLORE_AFTER_REPEATS = 3
#: Consecutive samples refused before building (slimline.pipeline.search.runtime_dim) before the search stops.
MAX_REJECTIONS = 50


@dataclass
class SearchRequest:
    checkpoint: Path
    profile: Profile
    out_dir: Path
    space: str | Path | None = None  # None: the profile's search_space, else by its device
    eval_data: DatasetSpec | None = None
    trials: int | None = None  # stop when this many trials have finished (over every resumed run)
    time_budget_s: float | None = None  # per invocation; no new trial starts after it
    seed: int = 0
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_num_cpus: int | None = None  # a local Ray's CPUs (tests: 2)
    parallel: int | None = None
    confidence_z: float = 0.0
    screen_samples: int | None = None
    rebench_top: int = 5
    timing: InterleavedTiming | None = None  # each trial's timing; None: from the profile's (trial.quick_timing)
    force: bool = False


@dataclass
class SearchResult:
    report: Report
    state: SearchState


def default_space(profile: Profile) -> str:
    return "gpu" if profile.target.device == "cuda" else "cpu"


@dataclass
class Prepared:
    request: SearchRequest
    space: SearchSpace
    plan: Plan  # the fp32 export's plan: its source checkpoint and the (validated) labelled data
    rule: AcceptanceRule
    flags: tuple[str, ...]
    fingerprint: dict[str, Any]

    @property
    def eval_data(self) -> DatasetSpec:
        assert self.plan.eval_data is not None  # prepare() refuses a search without labelled data
        return self.plan.eval_data

    @property
    def source(self) -> ModelDir:
        return self.plan.source


def prepare(request: SearchRequest) -> Prepared:
    """Every cheap check before anything is written (exit 2 on bad input)."""
    profile = request.profile
    if not get_runtime(profile.target.runtime).screens_search_trials:
        raise RecipeError(f"slimline search screens ONNX Runtime artifacts; profile {profile.name} runs "
                          f"{profile.target.runtime}.",
                          fix="search with an ONNX Runtime profile (cpu, gpu-t4), or run a fixed recipe with "
                              "`slimline run`.")
    if request.trials is not None and request.trials < 1:
        raise RecipeError("--trials must be at least 1.", fix="pass --trials N with N >= 1.")
    if request.time_budget_s is not None and request.time_budget_s <= 0:
        raise RecipeError("--time-budget must be positive.", fix="e.g. --time-budget 20m.")
    space = load_search_space(request.space or profile.search_space or default_space(profile))
    plan = plan_run(RunRequest(checkpoint=request.checkpoint, profile=profile, out_dir=request.out_dir, recipe=[],
                               eval_data=request.eval_data, force=request.force))
    if plan.eval_data is None:
        raise DataError("slimline search needs labelled data to screen trials (its validation split) and to "
                        "report the chosen one (its test split).",
                        fix="pass --eval-data (rotten-tomatoes, or a .csv/.jsonl with text and label columns).")
    if plan.source.manifest.task != "text-classification":
        raise RecipeError(f"slimline search screens text-classification models; {request.checkpoint} is "
                          f"{plan.source.manifest.task}.", fix="use `slimline run` with a fixed recipe.")
    rule = AcceptanceRule(accuracy_budget(profile), request.confidence_z)
    flags = cpu_flags()
    fingerprint = {"checkpoint": plan.source.manifest_sha256, "profile": sha256_json(profile.model_dump(mode="json")),
                   "space": sha256_json(space.raw), "eval_data": plan.eval_data.model_dump(mode="json"),
                   "cpu_flags": list(flags), "confidence_z": request.confidence_z,
                   "screen_samples": request.screen_samples, "seed": request.seed}
    return Prepared(request, space, plan, rule, flags, fingerprint)


def reference_facts(prepared: Prepared, study: Any, reference: ModelDir, logits_path: Path) -> dict[str, Any]:
    """Validation logits of the fp32 export, and its p50 next to torch fp32 eager (once per study)."""
    request = prepared.request
    profile = request.profile
    if not logits_path.is_file():
        with reporter().step("search: fp32 reference on the validation split"):
            screen = ValidationScreen(prepared.eval_data, reference.path, profile.shapes[0].sequence_length,
                                      profile.target.threads, profile.target.providers(), request.screen_samples)
            logits = screen.logits(reference.model_path)
            logits_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(logits_path, logits)
    stored = study.user_attrs.get("reference")
    if stored:
        return stored
    source, measurement = prepared.source, profile.measurement
    with reporter().step("search: timing torch fp32 eager and the fp32 ONNX export side by side"):
        timing = time_interleaved(InterleavedSpec(
            runners=[runner_spec("torch fp32 eager", source, "torch", profile),
                     runner_spec("onnxruntime fp32", reference, "onnxruntime", profile)],
            shape=profile.shapes[0], seed=request.seed,
            timing=InterleavedTiming.of(measurement).at_most(warmup_iters=10, min_iters=60, min_time_s=5.0),
            threading=measurement.side_by_side_threading))
    latency = timing.latency_stats(request.seed)
    facts = {"torch_p50_ms": latency["torch fp32 eager"].p50_ms,
             "onnx_p50_ms": latency["onnxruntime fp32"].p50_ms,
             "onnx_dir": str(reference.path), "machine_cpu_flags": list(prepared.flags)}
    study.set_user_attr("reference", facts)
    return facts


def _executor(request: SearchRequest) -> Executor:
    if request.executor == "ray":
        return RayExecutor(request.ray_address, request.parallel, local_num_cpus=request.ray_num_cpus)
    return LocalExecutor()


class Driver:
    """Asks the study for trials, records outcomes, and rewrites the outputs after each one."""

    def __init__(self, prepared: Prepared, study: Any, state: SearchState, reference: dict[str, Any],
                 logits_path: Path) -> None:
        self.prepared, self.study, self.state, self.reference = prepared, study, state, reference
        self.logits_path = logits_path
        self.started = time.monotonic()
        self.asked = 0
        self.repeats = 0
        self.rejections = 0
        self.reused: set[str] = set()  # student x scheme combinations already queued
        self.stop_reason = ""
        config_path = prepared.source.path / "config.json"
        self.source_config = json.loads(config_path.read_text()) if config_path.is_file() else {}

    def finished(self) -> int:
        """Trials that ran (a repeated recipe is recorded for the sampler but not counted)."""
        return sum(1 for o in self.state.outcomes if o.repeat_of is None and not o.rejected_before_build)

    def budget_left(self, in_flight: int = 0) -> bool:
        request = self.prepared.request
        if request.trials is not None and self.finished() + in_flight >= request.trials:
            self.stop_reason = f"{request.trials} trials finished"
            return False
        if request.time_budget_s is not None and time.monotonic() - self.started >= request.time_budget_s:
            self.stop_reason = f"time budget of {request.time_budget_s:.0f} s spent"
            return False
        if self.rejections >= MAX_REJECTIONS:
            self.stop_reason = f"{MAX_REJECTIONS} sampled trials in a row failed a budget known before building"
            return False
        if self.repeats >= MAX_REPEATS:
            self.stop_reason = "the space is exhausted (the sampler keeps proposing finished recipes)"
            return False
        return True

    def next_args(self, in_flight: int) -> tuple[Any, TrialArgs] | None:
        request = self.prepared.request
        while self.budget_left(in_flight):
            self.asked += 1
            try:
                with studies.exploring(self.study, self.repeats >= EXPLORE_AFTER_REPEATS, request.seed + self.asked):
                    trial = self.study.ask()
                    recipe = self.prepared.space.sample(trial, self.prepared.flags)
            except RecipeError as err:
                studies.fail(self.study, trial)
                log.warning("trial %d could not be sampled: %s", trial.number, err)
                continue
            repeat = next((o for o in self.state.outcomes if o.recipe == recipe and o.repeat_of is None), None)
            if repeat is not None:  # equal recipes are measured once
                self.repeats += 1
                self.record(trial, repeat.model_copy(update={"number": trial.number, "repeat_of": repeat.number,
                                                             "seconds": 0.0}))
                continue
            self.repeats = 0
            problem = pre_build_problem(recipe, request.profile, self.source_config)
            if problem is not None:  # nothing built: the sampler learns the region fails, the budget is kept
                self.rejections += 1
                log.info("trial %d rejected before building: %s", trial.number, problem)
                self.record(trial, TrialOutcome(number=trial.number, recipe=recipe, ok=False, error=problem,
                                                error_kind="rejected before building", rejected_before_build=True))
                continue
            self.rejections = 0
            return trial, TrialArgs(
                number=trial.number, recipe=recipe, checkpoint=str(request.checkpoint), profile=request.profile,
                out_dir=str(request.out_dir), eval_data=self.prepared.eval_data, seed=request.seed,
                reference_dir=self.reference["onnx_dir"], reference_logits=str(self.logits_path),
                reference_p50_ms=self.reference["onnx_p50_ms"], screen_samples=request.screen_samples,
                timing=request.timing or quick_timing(request.profile.measurement), probe=self.probe_plan())
        return None

    def probe_plan(self) -> ProbePlan | None:
        """Early stopping for the next trial, calibrated on every finished trial that had a probe."""
        early = self.prepared.space.early_stopping
        if not early.enabled:
            return None
        finished = [(o.probe, o.fidelity) for o in self.state.outcomes if o.ok and o.probe and o.repeat_of is None]
        calibration = Calibration.of(finished, early.probe_steps)
        return ProbePlan(steps=early.probe_steps, calibration_students=calibration.students,
                         best_gain_pt=calibration.best_gain_pt, budget_pt=self.prepared.rule.budget_pt)

    def record(self, trial: Any, outcome: TrialOutcome) -> None:
        outcome.student_of = trial.user_attrs.get("student_of")
        profile = self.prepared.request.profile
        verdict = constraints(outcome, profile, self.prepared.rule, self.reference["torch_p50_ms"]) \
            if outcome.ok else {}
        payload = outcome.model_dump(mode="json")
        if outcome.stopped_early:
            studies.prune(self.study, trial, studies.stopped_constraints(outcome.probe, self.prepared.rule.budget_pt),
                          payload)
        elif outcome.rejected_before_build:  # told as infeasible, so TPE learns the region (it ignores FAIL)
            studies.prune(self.study, trial, {"known_before_building": 1.0}, payload)
        else:
            studies.tell(self.study, trial, objectives(outcome) if outcome.ok else None, verdict, payload)
        self.state.outcomes.append(outcome)
        self.state.verdicts[outcome.number] = verdict
        refresh(self.state, self.prepared.request.out_dir)
        if outcome.ok and outcome.repeat_of is None and self.could_pass_accuracy(outcome):
            self.reuse_student(trial)

    def could_pass_accuracy(self, outcome: TrialOutcome) -> bool:
        """Within the accuracy budget, or within one paired SE of it (another scheme may lose less)."""
        budget = self.prepared.rule.budget_pt
        return budget is None or outcome.fidelity["drop_pt"] - outcome.fidelity["drop_se_pt"] <= budget

    def scheme_latency(self, params: dict[str, Any], finished: list[tuple[TrialOutcome, dict[str, Any]]]) -> float:
        """The best normalised p50 a `finished` trial measured with these schemes: the student tries the
        schemes that were fastest on this machine first (unmeasured ones last, in the space's order)."""
        student = self.prepared.space.student_params(params)
        schemes = {key: value for key, value in params.items() if key not in student}
        latencies = [o.latency_p50_ms for o, trial_params in finished
                     if o.ok and o.latency_p50_ms is not None
                     and all(trial_params.get(key) == value for key, value in schemes.items())]
        return min(latencies, default=float("inf"))

    def finished_with_params(self) -> list[tuple[TrialOutcome, dict[str, Any]]]:
        """Every recorded outcome with its trial's parameters (read from the study's storage once)."""
        params = {t.number: t.params for t in studies.finished_trials(self.study)}
        return [(o, params.get(o.number, {})) for o in self.state.outcomes]

    def reuse_student(self, trial: Any) -> None:
        """Queue the trial's trained student under every other scheme and runtime of the space: its
        stages are reused, so each costs only its quantization, screening and timing (minutes saved per
        student, and the best runtime for it is found by measurement rather than by the sampler's luck)."""
        finished = self.finished_with_params()
        variants = sorted(self.prepared.space.with_other_schemes(trial.params, self.prepared.flags),
                          key=lambda params: self.scheme_latency(params, finished))
        queued = 0
        for params in variants:
            key = json.dumps(params, sort_keys=True, default=str)
            if key in self.reused:
                continue
            self.reused.add(key)
            self.study.enqueue_trial(self.prepared.space.encode_params(params),
                                     user_attrs={"student_of": trial.number}, skip_if_exists=True)
            queued += 1
        if queued:
            log.info("trial %d's student queued under %d other scheme(s)", trial.number, queued)


def refresh(state: SearchState, out_dir: Path) -> None:
    """Front, best so far, and every output file, rewritten atomically."""
    state.front = [o.number for o in pareto_front(state.outcomes)]
    chosen, state.best_reason = best(state.outcomes, state.verdicts)
    state.best = chosen.number if chosen else None
    write_best(state, out_dir)  # first: a trials table that lists a trial implies the best/ it produced
    write_trials(state, out_dir)


def restore_state(prepared: Prepared, study: Any, reference: dict[str, Any]) -> SearchState:
    state = SearchState(space=prepared.space.source, rule=prepared.rule, reference=reference)
    for trial in studies.finished_trials(study):
        outcome = TrialOutcome.model_validate(trial.user_attrs["outcome"])
        outcome.number = trial.number
        state.outcomes.append(outcome)
        state.verdicts[trial.number] = constraints(outcome, prepared.request.profile, prepared.rule,
                                                   reference["torch_p50_ms"]) if outcome.ok else {}
    return state


def run_search(request: SearchRequest) -> SearchResult:
    """Claim --out first (the output rule and its lock: a refusal or a busy --out answers before the pre-flight)."""
    inputs = input_paths(request.checkpoint, request.space, getattr(request.eval_data, "source", None))
    with claimed_output(request.out_dir, "run", force=request.force, inputs=inputs):
        return _run_search(request)


def _run_search(request: SearchRequest) -> SearchResult:
    from slimline.pipeline.search.final import finish

    prepared = prepare(request)
    if request.trials is None and request.time_budget_s is None:
        request.time_budget_s = DEFAULT_TIME_BUDGET_S
    out = request.out_dir
    with claimed_run_dir(out):
        export_request = RunRequest(checkpoint=request.checkpoint, profile=request.profile, out_dir=out, recipe=[],
                                    eval_data=prepared.eval_data, seed=request.seed, force=True)
        reference_model = run_stages(export_request, prepared.plan).final  # planned (and checked) once, in prepare
        study, new = studies.open_study(out, prepared.fingerprint, request.seed)
        logits_path = out / "search" / "reference-logits.npy"
        reference = reference_facts(prepared, study, reference_model, logits_path)
        requeued = studies.requeue_interrupted(study)
        if new:
            for params in prepared.space.initial_trials:
                study.enqueue_trial(prepared.space.encode_params(params), skip_if_exists=True)
        state = restore_state(prepared, study, reference)
        if requeued:
            state.notes.append(f"{requeued} trial(s) interrupted by a previous stop ran again.")
        if state.outcomes:
            refresh(state, out)  # a kill between recording a trial and writing the outputs loses nothing
        driver = Driver(prepared, study, state, reference, logits_path)
        executor = _executor(request)
        if executor.note:
            state.notes.append(executor.note)
        in_flight: dict[int, Any] = {}

        def next_args() -> tuple[Any, TrialArgs] | None:
            item = driver.next_args(len(in_flight))
            if item is not None:
                in_flight[item[0].number] = item[0]
            return item

        try:
            with reporter().step("search: trials"):
                for trial, outcome in executor.run(next_args):
                    in_flight.pop(trial.number, None)
                    driver.record(trial, outcome)
                    log.info("trial %d done (%d finished)", trial.number, driver.finished())
        finally:  # an interrupted trial stays RUNNING in the study: the next run queues it again
            executor.close()
        state.notes.append(f"stopped: {driver.stop_reason or 'no trials left'}; {driver.finished()} trials in all.")
        report = finish(prepared, state, reference)
    return SearchResult(report=report, state=state)
