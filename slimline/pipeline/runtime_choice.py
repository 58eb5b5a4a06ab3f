"""`target.runtime: auto`: the runtime (and precision) chosen by measurement on this CPU, not by name.

A profile lists `target.candidates`: a runtime and the ONNX-level recipe that makes its artifact (ONNX
Runtime fused INT8, OpenVINO + NNCF INT8, OpenVINO bf16 ...), each only where the CPU has what it
`requires`. The plan checks every candidate like a run of its own (a candidate whose runtime is not
installed, or whose recipe cannot run on this model, is dropped with the reason; bad input still fails
the run). The run then builds each candidate after the shared torch-level steps and the ONNX export (those
stages are content-addressed, so they are made once), times all of them side by side in one process at the
profile's first shape (bench.interleaved), scores each on the validation split against the fp32 export,
and continues with the fastest that meets every budget it can already judge (latency, size, accuracy
drop); when none meets them all, the fastest within the accuracy budget, else the most accurate. The
report's `runtime_choice` holds the table and the reason.

With an explicit recipe (--recipe) nothing is timed: the run takes the first candidate whose runtime can
run that recipe (an OpenVINO pass goes to an OpenVINO candidate), and the report says so.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.report import Report
from slimline.compression.recipe import RecipeStep, load_recipe, parse_recipe, profile_recipe, recipe_as_data
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec, encode_labelled, trimmed_batches
from slimline.core.errors import BundleError, MissingDependency, PassError, ProfileError, RecipeError, SlimlineError
from slimline.core.machine import cpu_capabilities
from slimline.core.progress import reporter
from slimline.core.stats import paired_drop_pt
from slimline.pipeline.plan import Plan, RunRequest, plan_run
from slimline.pipeline.side_by_side import runner_spec
from slimline.profiles.schema import Profile, RuntimeCandidate
from slimline.runtimes import get_runtime, make_runner

log = logging.getLogger(__name__)
#: Per-candidate budgets that can be judged before the full benchmark: metric -> (where, limit kind).
LATENCY_BUDGETS = {"latency_p50_ms": "p50_ms", "latency_p90_ms": "p90_ms", "latency_p95_ms": "p95_ms",
                   "latency_p99_ms": "p99_ms"}
REFERENCE_RUNTIME = "onnxruntime"  # the fp32 export's accuracy is read on ONNX Runtime, as the fallback does


@dataclass
class CandidatePlan:
    candidate: RuntimeCandidate
    request: RunRequest  # the run's request with the candidate's profile (runtime, options, recipe)
    plan: Plan


@dataclass
class Choice:
    """What the plan found: the candidates that can run here, and the ones dropped with why."""

    viable: list[CandidatePlan]
    skipped: list[dict[str, str]] = field(default_factory=list)
    explicit_recipe: bool = False


def candidate_profile(profile: Profile, candidate: RuntimeCandidate, steps: list[RecipeStep]) -> Profile:
    target = profile.target.model_copy(update={"runtime": candidate.runtime, "candidates": [],
                                               "runtime_options": dict(candidate.runtime_options)})
    return profile.model_copy(update={"target": target, "recipe": recipe_as_data(steps)})


def _unmet(candidate: RuntimeCandidate, capabilities: dict[str, Any]) -> str | None:
    missing = [f"{name}={wanted}" for name, wanted in candidate.requires.items()
               if bool(capabilities.get(name)) != wanted]
    return f"needs a CPU with {', '.join(missing)} ({capabilities.get('kind')} here)" if missing else None


def _candidate_steps(candidate: RuntimeCandidate) -> list[RecipeStep]:
    steps = load_recipe(candidate.recipe) if isinstance(candidate.recipe, str) else \
        parse_recipe(candidate.recipe, f"candidate {candidate.name()}")
    torch_level = [s.name for s in steps if s.pass_.stage == "torch"]
    if torch_level:
        raise RecipeError(f"runtime candidate {candidate.name()} has torch-level steps {torch_level}; a candidate "
                          "recipe holds the ONNX-level steps that make its artifact.",
                          fix="move torch-level steps (pruning, distillation) to the profile's recipe: every "
                              "candidate starts from them.")
    return steps


def profile_for_format(profile: Profile, model_format: str) -> Profile:
    """For measuring an existing model: the profile's runtime when it loads the format, else the first candidate
    runtime that does (`slimline bench` of an OpenVINO IR with the cpu profile), else the profile as it is."""
    if model_format in get_runtime(profile.target.runtime).loads:
        return profile
    for candidate in profile.target.candidates:
        if model_format in get_runtime(candidate.runtime).loads:
            return profile.model_copy(update={"target": profile.target.model_copy(update={
                "runtime": candidate.runtime, "candidates": [], "runtime_options": dict(candidate.runtime_options)})})
    return profile


def candidate_recipes(profile: Profile) -> dict[str, list[RecipeStep]]:
    """Each candidate's steps by label (RecipeError, exit 2, on an unknown pass or option)."""
    return {candidate.name(): _candidate_steps(candidate) for candidate in profile.target.candidates}


def _try_plan(request: RunRequest, candidate: RuntimeCandidate,
              steps: list[RecipeStep]) -> CandidatePlan | MissingDependency | RecipeError | ProfileError:
    """The candidate's plan, or why it cannot run here (its runtime missing, its recipe refused); any other
    error (the checkpoint, the data, --out) is the run's, not the candidate's, and is raised."""
    profile = candidate_profile(request.profile, candidate, steps)
    candidate_request = dataclasses.replace(request, profile=profile, recipe=steps)
    try:
        return CandidatePlan(candidate, candidate_request, plan_run(candidate_request))
    except (MissingDependency, RecipeError, ProfileError) as err:
        return err


def _message(err: Exception) -> str:
    """The error's message on one line, without its fix."""
    fix = getattr(err, "fix", None)
    text = str(err).removesuffix(f"\n  fix: {fix}") if fix else str(err)
    return " ".join(line.strip() for line in text.splitlines())


def _why(err: Exception) -> str:
    fix = getattr(err, "fix", None)
    return _message(err) + (f" (fix: {fix})" if fix else "")


def plan_choice(request: RunRequest) -> Plan:
    """Plan every candidate; returns the first viable one's plan with the Choice attached (plan.choice)."""
    profile = request.profile
    capabilities = cpu_capabilities()
    explicit = request.recipe is not None
    shared = list(request.recipe) if explicit else profile_recipe(profile)
    if not explicit:
        onnx_level = [s.name for s in shared if s.pass_.stage != "torch"]
        if onnx_level:
            raise RecipeError(f"profile {profile.name} chooses its runtime (target.candidates), but its recipe has "
                              f"ONNX-level steps {onnx_level}, which belong to one runtime.",
                              fix="move them into the candidates' recipes; the profile's recipe keeps the "
                                  "torch-level steps every candidate shares.")
    viable: list[CandidatePlan] = []
    skipped: list[dict[str, str]] = []
    errors: list[Exception] = []
    for candidate in profile.target.candidates:
        unmet = None if explicit else _unmet(candidate, capabilities)
        if unmet:
            skipped.append({"label": candidate.name(), "why": unmet})
            continue
        steps = shared if explicit else [*shared, *_candidate_steps(candidate)]
        planned = _try_plan(request, candidate, steps)
        if isinstance(planned, Exception):
            skipped.append({"label": candidate.name(), "why": _why(planned)})
            errors.append(planned)
            continue
        viable.append(planned)
        if explicit:
            break  # the first runtime that runs the given recipe
    if not viable and explicit and errors:
        raise errors[0]  # the recipe is the problem: say so as a fixed-runtime profile would
    if not viable and errors and len(errors) == len(skipped) and len({_message(e) for e in errors}) == 1:
        raise errors[0]  # every candidate refused for one reason: the model, data or budgets, not a runtime
    if not viable:
        reasons = "\n  ".join(f"{s['label']}: {s['why']}" for s in skipped)
        raise RecipeError(f"no runtime candidate of profile {profile.name} can run here:\n  {reasons}",
                          fix="install what the candidates need (`slimline doctor`), or use a profile with a "
                              "fixed runtime.")
    first = viable[0]
    first.plan.choice = Choice(viable, skipped, explicit)
    request.profile, request.recipe = first.request.profile, first.request.recipe
    return first.plan


def execute_choice(request: RunRequest, plan: Plan) -> Report:
    """Build every viable candidate, time them side by side, score them, continue with the chosen one."""
    from slimline.pipeline.run import bench_and_report

    item, done, summary = build_and_choose(plan)
    intermediates = done.onnx_stages[:1] if item.request.bench_export and len(done.onnx_stages) > 1 else []
    report = bench_and_report(item.request, item.plan, done.final, intermediates, done.records)
    request.profile, request.recipe = item.request.profile, item.request.recipe
    return report.model_copy(update={"runtime_choice": summary})


def build_and_choose(plan: Plan) -> tuple[CandidatePlan, Any, dict[str, Any]]:
    """Every viable candidate built (a failing one is dropped with why), timed, scored; the chosen one's plan,
    its stages (StagesDone) and the summary the report keeps."""
    from slimline.pipeline.stages import run_stages

    choice: Choice = plan.choice
    built = []
    for item in choice.viable:
        try:
            with reporter().step(f"runtime candidate: {item.candidate.name()}"):
                done = run_stages(item.request, item.plan)
                _check_loads(item, done.final)
                built.append((item, done))
        except SlimlineError as err:  # one candidate's pass failing leaves the others to choose from
            if len(choice.viable) == 1:
                raise
            log.warning("runtime candidate %s failed: %s", item.candidate.name(), err)
            choice.skipped.append({"label": item.candidate.name(), "why": f"failed while building: {_why(err)}"})
    if not built:
        raise PassError("every runtime candidate failed while building:\n  " + "\n  ".join(
            f"{s['label']}: {s['why']}" for s in choice.skipped), fix="see each candidate's error above.")
    rows, timing = _measure(built) if len(built) > 1 else ([], None)
    chosen_index, reason = _choose(rows, built[0][0].request.profile) if rows else (0, _single_reason(choice))
    item, done = built[chosen_index]
    summary = {"chosen": item.candidate.name(), "runtime": item.candidate.runtime, "reason": reason,
               "candidates": rows, "skipped": choice.skipped, "explicit_recipe": choice.explicit_recipe,
               "cpu_capabilities": cpu_capabilities(), "timing": timing}
    return item, done, summary


def _check_loads(item: CandidatePlan, model: ModelDir) -> None:
    """A candidate that built is not yet one that runs: OpenVINO's CPU plugin refuses some graphs only when it
    compiles them (an If with a dynamic rank in DeBERTa's export), so each artifact is loaded once here, before
    the side-by-side timing, and one that cannot load is dropped instead of failing the whole choice."""
    runtime = get_runtime(item.candidate.runtime)
    if not runtime.needs_onnx_export:  # the torch-level model itself: nothing was built to load
        return
    try:
        runtime.load_check(model.model_path, model.manifest.inputs, item.request.profile.target)
    except BundleError as err:
        raise PassError(f"runtime candidate {item.candidate.name()}: its artifact does not load on {runtime.name}: "
                        f"{err.message}", fix="the other candidates are compared without it.") from err


def _single_reason(choice: Choice) -> str:
    if choice.explicit_recipe:
        return "an explicit recipe: the first candidate runtime that can run it (nothing timed)"
    return "the only candidate that can run here (nothing to time it against)"


def _measure(built: list) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    profile = built[0][0].request.profile
    labels = [item.candidate.name() for item, _ in built]
    rows = [{"label": label, "runtime": item.candidate.runtime, "model_dir": str(done.final.path),
             "format": done.final.manifest.format, "size_mb": round(done.final.size_mb(), 3)}
            for label, (item, done) in zip(labels, built, strict=True)]
    timing = None
    if all(get_runtime(item.candidate.runtime).times_side_by_side for item, _ in built):
        with reporter().step(f"runtime choice: {len(built)} candidates side by side (round-robin, one process)"):
            result = time_interleaved(InterleavedSpec(
                runners=[runner_spec(label, done.final, item.candidate.runtime, item.request.profile)
                         for label, (item, done) in zip(labels, built, strict=True)],
                shape=profile.shapes[0], timing=InterleavedTiming.of(profile.measurement),
                threading=profile.measurement.side_by_side_threading))
        timing = {"rounds": result.rounds, "seconds": result.seconds, "shape": profile.shapes[0].label()}
        latency = result.latency_stats()
        for row in rows:
            stats = latency[row["label"]]
            row.update({key: round(getattr(stats, key), 4) for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms")})
    reference = built[0][1].onnx_stages[0] if built[0][1].onnx_stages else None
    data = built[0][0].plan.eval_data
    if isinstance(data, DatasetSpec) and reference is not None and reference.manifest.task == "text-classification":
        with reporter().step("runtime choice: validation accuracy of each candidate"):
            _score(rows, built, reference, data, profile)
    return rows, timing


def _score(rows: list[dict[str, Any]], built: list, reference: ModelDir, data: DatasetSpec, profile: Profile) -> None:
    """Validation accuracy of each candidate, and its paired drop vs the fp32 export (never the test split)."""
    spec = data.model_copy(update={"split": "validation", "max_samples": profile.measurement.eval_max_samples})
    arrays, labelled = encode_labelled(spec, reference.path, profile.shapes[0].sequence_length)

    def correct(model: ModelDir, runtime: str, candidate_profile: Profile) -> np.ndarray:
        runner = make_runner(runner_spec("score", model, runtime, candidate_profile))
        names = {s.name for s in model.manifest.inputs} or set(arrays)
        logits = np.concatenate([runner.run({k: v for k, v in batch.items() if k in names})
                                 for batch in trimmed_batches(arrays, 32)])
        return logits.argmax(-1) == labelled.labels

    base = correct(reference, REFERENCE_RUNTIME, profile)
    for row, (item, done) in zip(rows, built, strict=True):
        mine = correct(done.final, item.candidate.runtime, item.request.profile)
        drop, se = paired_drop_pt(base, mine)
        row.update(validation_accuracy_pct=round(100.0 * float(np.mean(mine)), 3), drop_pt=round(drop, 3),
                   drop_se_pt=round(se, 3), validation_examples=len(mine))


def _budget_failures(row: dict[str, Any], profile: Profile) -> list[str]:
    failures = []
    for metric, budget in profile.budgets.items():
        value = None
        if metric in LATENCY_BUDGETS:
            value = row.get(LATENCY_BUDGETS[metric])
        elif metric == "size_mb":
            value = row.get("size_mb")
        elif metric == "accuracy_drop_pt" or (metric == "accuracy_pct" and budget.kind == "max_drop"):
            value = row.get("drop_pt")
        if value is None or budget.kind not in ("max", "max_drop"):
            continue
        if value > budget.limit:
            failures.append(f"{metric} {value:g} > {budget.limit:g}")
    return failures


def _choose(rows: list[dict[str, Any]], profile: Profile) -> tuple[int, str]:
    for row in rows:
        row["budget_failures"] = _budget_failures(row, profile)
    timed = [i for i, row in enumerate(rows) if "p50_ms" in row]
    if not timed:
        return 0, "the candidates could not be timed side by side: the first candidate is kept"
    def fastest(indices: list[int]) -> int:
        return min(indices, key=lambda i: rows[i]["p50_ms"])

    within = [i for i in timed if not rows[i]["budget_failures"]]
    if within:
        best = fastest(within)
        others = [rows[i] for i in timed if i != best]
        margin = (f"; next fastest {min(others, key=lambda r: r['p50_ms'])['label']} at "
                  f"{min(r['p50_ms'] for r in others) / rows[best]['p50_ms']:.2f}x its p50") if others else ""
        return best, f"the fastest (p50 {rows[best]['p50_ms']:.2f} ms side by side) of those within every budget " \
                     f"judged before the benchmark{margin}"
    accurate = [i for i in timed if not any(f.startswith(("accuracy", "drop")) for f in rows[i]["budget_failures"])]
    if accurate:
        best = fastest(accurate)
        return best, "no candidate meets every budget: the fastest within the accuracy budget"
    best = min(timed, key=lambda i: rows[i].get("drop_pt", 0.0))
    return best, "no candidate meets the accuracy budget: the most accurate"
