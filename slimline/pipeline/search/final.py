"""The end of a search: re-time the best trials side by side, choose, and bench the choice on the test split.

Trial timings are normalised to the fp32 reference but were taken at different moments (and, under
Ray, while other trials ran). So the trials that pass every screened budget (the fastest few) are
timed again together with torch fp32 eager and the fp32 ONNX export, side by side in one process, and
the fastest that still passes the latency budgets is chosen. The chosen recipe's stages (all reused)
then get the same bench as `slimline run`: the test split, every budget of the profile, a verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.report import Report, write_report
from slimline.compression.recipe import build_step
from slimline.core.artifact import ModelDir
from slimline.core.progress import reporter
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.run import bench_and_report, check_stages_on_disk
from slimline.pipeline.search.outputs import SearchState, recipe_summary, trial_points, write_best, write_trials
from slimline.pipeline.search.runtime_dim import profile_for_recipe
from slimline.pipeline.search.selection import feasible
from slimline.pipeline.search.trial import TrialOutcome
from slimline.pipeline.side_by_side import runner_spec
from slimline.pipeline.stages import run_stages

LATENCY_BUDGETS = {"latency_p50_ms": "p50_ms", "latency_p95_ms": "p95_ms"}


def contenders(state: SearchState, top: int) -> list[TrialOutcome]:
    """The fastest trials that pass every screened budget (else the closest one to passing)."""
    done = [o for o in state.outcomes if o.ok and o.repeat_of is None]  # a repeat is its original's artifact
    passing = sorted((o for o in done if feasible(state.verdicts[o.number])), key=lambda o: o.latency_p50_ms)
    if passing:
        return passing[:top]
    chosen = next((o for o in done if o.number == state.best), None)
    return [chosen] if chosen else []


def rebench(prepared: Any, state: SearchState, candidates: list[TrialOutcome]) -> dict[str, Any]:
    profile = prepared.request.profile
    source = prepared.source
    reference = ModelDir.open(Path(state.reference["onnx_dir"]), verify=False)
    runners = [runner_spec("torch fp32 eager", source, "torch", profile),
               runner_spec("onnxruntime fp32", reference, "onnxruntime", profile)]
    for outcome in candidates:
        model = ModelDir.open(Path(outcome.model_dir), verify=False)
        trial_profile = profile_for_recipe(profile, outcome.recipe)
        runners.append(runner_spec(f"trial {outcome.number}", model, trial_profile.target.runtime, trial_profile))
    measurement = profile.measurement
    with reporter().step(f"search: re-timing {len(candidates)} trial(s) with the baselines, interleaved"):
        timing = time_interleaved(InterleavedSpec(
            runners=runners, shape=profile.shapes[0], seed=prepared.request.seed,
            timing=InterleavedTiming.of(measurement).model_copy(update={
                "min_time_s": measurement.min_time_s * 2, "max_time_s": measurement.max_time_s * 2}),
            threading=measurement.side_by_side_threading))
    return {"rounds": timing.rounds, "seconds": timing.seconds,
            "latency": {label: stats.model_dump() for label, stats in timing.latency_stats().items()}}


def choose(prepared: Any, candidates: list[TrialOutcome], rebenched: dict[str, Any]) -> TrialOutcome:
    """The fastest re-timed contender within the latency budgets (else the fastest)."""
    budgets = prepared.request.profile.budgets
    latency = rebenched["latency"]

    def within(outcome: TrialOutcome) -> bool:
        stats = latency[f"trial {outcome.number}"]
        return all(stats[field] <= budgets[metric].limit for metric, field in LATENCY_BUDGETS.items()
                   if metric in budgets)

    ordered = sorted(candidates, key=lambda o: latency[f"trial {o.number}"]["p50_ms"])
    return next((o for o in ordered if within(o)), ordered[0])


def finish(prepared: Any, state: SearchState, reference: dict[str, Any]) -> Report:
    request = prepared.request
    candidates = contenders(state, request.rebench_top)
    if not candidates:
        from slimline.core.errors import PassError

        raise PassError("no search trial finished, so there is nothing to choose: " +
                        "; ".join(f"trial {o.number}: {o.error}" for o in state.outcomes[-3:]),
                        fix="see trials.md for each trial's error; widen the space or raise the budget.")
    rebenched = rebench(prepared, state, candidates)
    chosen = choose(prepared, candidates, rebenched)
    state.best, state.best_reason = chosen.number, (
        "the fastest of the trials passing every screened budget, re-timed side by side with the baselines"
        if feasible(state.verdicts[chosen.number]) else "no trial passes every screened budget: the closest one")
    write_best(state, request.out_dir)
    write_trials(state, request.out_dir)
    steps = [build_step(i, raw, "chosen recipe") for i, raw in enumerate(chosen.recipe)]
    run_request = RunRequest(checkpoint=request.checkpoint, profile=profile_for_recipe(request.profile, chosen.recipe),
                             out_dir=request.out_dir,
                             recipe=steps, eval_data=prepared.eval_data.model_copy(update={"split": "test"}),
                             seed=request.seed, force=True)
    plan = plan_run(run_request)
    done = run_stages(run_request, plan)
    reference_model = ModelDir.open(Path(reference["onnx_dir"]))
    intermediates = [] if done.final.path == reference_model.path else [reference_model]
    report = bench_and_report(run_request, plan, done.final, intermediates, done.records)
    summary = {
        "space": state.space, "acceptance": state.rule.describe(), "resolution": state.rule.resolution(chosen),
        "trials": len(state.outcomes), "front": state.front, "chosen_trial": chosen.number,
        "chosen_recipe": recipe_summary(chosen.recipe), "why": state.best_reason, "notes": state.notes,
        "reference": reference, "rebench": rebenched,
        "contenders": [o.number for o in candidates], "points": trial_points(state),
    }
    report = report.model_copy(update={"search": summary})
    check_stages_on_disk(report)
    write_report(report, request.out_dir)
    return report
