"""The baseline and every candidate timed again together, in blocks, in one process: the figures verdicts use.

Each model's own worker gives its absolute latency and peak memory with the machine to itself, but
taken one after another, a busy minute can favour one model over another. The side-by-side timing
(slimline.benchmarking.interleaved: blocks of iterations in a shuffled order each round, each runtime with its
own threading) gives figures a noisy neighbour cannot reorder, with intervals over rounds. Every
latency, throughput and speed-up budget is judged on them (bench.figures), for every kind of model the
CPU runners take: text and image classifiers, plain PyTorch modules, and decoder LLMs (prefill and
greedy decoding side by side). The alone figures stay in the report, labelled as such.

CPU targets only: on a GPU one model at a time owns the device, and its budgets are judged on the
alone timing (each row says so).
"""

from __future__ import annotations

import logging
from typing import Any

from slimline.benchmarking.benchmark import Candidate
from slimline.benchmarking.interleaved import InterleavedResult, InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.interleaved_stats import decode_summary, side_by_side_figures
from slimline.benchmarking.results_model import CandidateResult
from slimline.benchmarking.runners.base import RunnerSpec
from slimline.core.artifact import ModelDir
from slimline.core.errors import BenchError
from slimline.core.progress import reporter
from slimline.formats.inputs import default_input_specs, shape_label
from slimline.profiles.schema import Profile, Target
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
#: Runtimes the interleaved worker can hold side by side in one process.
#: Side-by-side and alone may differ by this much (relative) before the report warns.
DISAGREEMENT = 0.15
GPU_NOTE = ("GPU target: each model was timed alone (one model owns the device at a time); every timing budget "
            "is judged on that timing")


def runner_spec(label: str, model: ModelDir, runtime: str, profile: Profile) -> RunnerSpec:
    target = profile.target
    return RunnerSpec(label=label, runtime=runtime, model_path=str(model.model_path), model_dir=str(model.path),
                      model_format=model.manifest.format, task=model.manifest.task, device=target.device,
                      precision=target.precision, threads=target.threads,
                      providers=get_runtime(runtime).providers(target), runtime_options=_options(runtime, target),
                      inputs=model.manifest.inputs or default_input_specs(model.manifest.task),
                      shapes=profile.shapes[:1], measurement=profile.measurement)


def _options(runtime: str, target: Target) -> dict[str, Any]:
    """The target's runtime options go to its own runtime's runners only (the baseline is torch eager)."""
    return dict(target.runtime_options) if runtime == target.runtime else {}


def not_applicable(profile: Profile, models: list[Candidate]) -> str | None:
    """Why the models cannot be timed side by side here, or None when they can."""
    if profile.target.device != "cpu":
        return GPU_NOTE
    if len(models) < 2:
        return "a single model: nothing to time side by side; its budgets are judged on its own timing"
    odd = sorted({m.runtime for m in models if not get_runtime(m.runtime).times_side_by_side})
    if odd:
        return f"runtime(s) {odd} cannot share a process with the others; timing budgets use the alone timing"
    return None


def interleaved_spec(profile: Profile, models: list[Candidate], seed: int = 0) -> InterleavedSpec:
    measurement = profile.measurement
    decodes = any(m.model.manifest.task == "text-generation" for m in models)
    return InterleavedSpec(runners=[runner_spec(m.label, m.model, m.runtime, profile) for m in models],
                           shape=profile.shapes[0], timing=InterleavedTiming.of(measurement),
                           decode=InterleavedTiming.decode_of(measurement) if decodes else None,
                           decode_tokens=measurement.decode_tokens, threading=measurement.side_by_side_threading,
                           seed=seed)


def time_side_by_side(profile: Profile, baseline: Candidate, candidates: list[Candidate],
                      seed: int = 0) -> tuple[InterleavedResult | None, str | None]:
    """(the side-by-side timing, None) or (None, why there is none): not applicable, or it failed (logged;
    the alone timings then stand, and every budget row says which measurement it used)."""
    models = [baseline, *candidates]
    why = not_applicable(profile, models)
    if why is not None:
        return None, why
    try:
        with reporter().step(f"bench: {len(models)} models side by side (blocks, shuffled rounds, one process)"):
            return time_interleaved(interleaved_spec(profile, models, seed)), None
    except BenchError as err:
        log.warning("side-by-side timing failed (%s); the report keeps the per-model timings", err)
        return None, f"the side-by-side timing failed ({err}); timing budgets use the alone timing"


def busy_machine_warning(load_before: float | None, load_after: float | None, cores: int | None) -> str | None:
    """A warning when the cores were oversubscribed while the models were timed (the 1-minute load average
    above 1.5x the cores, measured before and after): thread pools that spin, or wait for each other at
    every op, slow down unevenly then, so latencies and even speed-ups describe that load."""
    loads = [load for load in (load_before, load_after) if load is not None]
    if not loads or not cores or max(loads) <= 1.5 * cores:
        return None
    return (f"the machine was busy while the models were timed (1-minute load average up to {max(loads):.1f} on "
            f"{cores} cores): runtimes' thread pools slow down unevenly when the cores are oversubscribed, so "
            "these latencies and speed-ups describe that load; time on a quieter machine to gate a release on them "
            "(measurement.side_by_side_threading: auto, the default, waits passively when others kept the cores busy "
            "just before the timing)")


def load_average() -> float | None:
    import os

    try:
        return os.getloadavg()[0]
    except OSError:  # not on this platform
        return None


def attach(timing: InterleavedResult, baseline: CandidateResult, results: list[CandidateResult],
           seed: int = 0) -> tuple[CandidateResult, list[CandidateResult]]:
    """The results with their side-by-side figures; a candidate's speed-ups become the side-by-side ones
    (the alone ratios stay in `*_alone`)."""
    figures = side_by_side_figures(timing, baseline.label, seed)

    def with_figures(result: CandidateResult) -> CandidateResult:
        if result.label not in figures:
            return result
        stats, own = figures[result.label]
        update: dict[str, Any] = {"side_by_side": own, "side_by_side_latency": stats}
        if "speedup_vs_baseline" in own:
            update["speedup_vs_baseline"] = own["speedup_vs_baseline"].value
        if "decode_speedup_vs_baseline" in own:
            update["decode_speedup_vs_baseline"] = own["decode_speedup_vs_baseline"].value
        return result.model_copy(update=update)

    return with_figures(baseline), [with_figures(r) for r in results]


def summary(timing: InterleavedResult | None, why_not: str | None, profile: Profile,
            models: list[CandidateResult], inputs_label: str) -> dict[str, Any]:
    """report.json's `side_by_side`: how the models were timed together (or why not), and their figures."""
    if timing is None:
        return {"measured": False, "reason": why_not}
    spec_timing = InterleavedTiming.of(profile.measurement)
    out: dict[str, Any] = {
        "measured": True, "method": "block-interleaved", "shape": inputs_label, "rounds": timing.rounds,
        "seconds": timing.seconds, "threading": "each runtime's defaults" if timing.threading == "runtime-defaults"
        else "passive waits (OMP_WAIT_POLICY=PASSIVE, ONNX Runtime not spinning)",
        "threading_reason": timing.threading_reason, "settings": spec_timing.model_dump(),
        "blocks": {label: {"dropped": d, "kept": k} for label, (d, k) in timing.blocks.items()},
        "latency": {m.label: m.side_by_side_latency.model_dump() for m in models if m.side_by_side_latency},
        "speedup_vs_baseline": {m.label: m.side_by_side["speedup_vs_baseline"].value for m in models
                                if "speedup_vs_baseline" in m.side_by_side},
        "speedup_ci95": {m.label: m.side_by_side["speedup_vs_baseline"].ci95 for m in models
                         if "speedup_vs_baseline" in m.side_by_side},
    }
    if timing.decode:
        out["decode"] = {label: decode_summary(rounds) for label, rounds in timing.decode.items()}
        out["decode_rounds"], out["decode_seconds"] = timing.decode_rounds, timing.decode_seconds
    if timing.decode_skipped:
        out["decode_skipped"] = timing.decode_skipped
    return out


def disagreements(models: list[CandidateResult]) -> list[str]:
    """Warnings where a model's speed-up alone and side by side differ by more than DISAGREEMENT."""
    warnings = []
    for result in models:
        figure, alone = result.side_by_side.get("speedup_vs_baseline"), result.speedup_vs_baseline_alone
        if figure is None or not alone:
            continue
        if abs(alone - figure.value) / figure.value > DISAGREEMENT:
            warnings.append(f"{result.label}: speed-up {alone:.2f}x timed alone but {figure.value:.2f}x side by side "
                            "with the baseline; the verdict uses the side-by-side ratio (a load that came and went "
                            "while the models were timed one after another cannot skew it)")
    return warnings


def model_inputs_label(model: ModelDir, profile: Profile) -> str:
    """The first shape's label from the model's declared inputs (b1_s128, b1_3x224x224, b1_t160x40)."""
    import json

    config_path = model.path / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return shape_label(model.manifest.inputs or default_input_specs(model.manifest.task), profile.shapes[0], config)
