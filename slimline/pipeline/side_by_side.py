"""The baseline and every candidate timed again together, round-robin in one process.

Each model's own worker gives its absolute latency and peak memory with the machine to itself, but
taken one after another, a busy minute can favour one model over another. The side-by-side timing
(slimline.bench.interleaved: one iteration of each per round, idle pools not spinning) gives the
ratios a noisy neighbour cannot reorder; the report shows both, and warns where they disagree.
CPU targets only: on a GPU one model at a time owns the device anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from slimline.bench.benchmark import Candidate
from slimline.bench.interleaved import InterleavedSpec, RoundRobinTiming, time_interleaved
from slimline.bench.runners.base import RunnerSpec
from slimline.core.artifact import ModelDir
from slimline.core.errors import BenchError
from slimline.core.progress import reporter
from slimline.formats.inputs import default_input_specs
from slimline.profiles.schema import Profile, Target
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
#: Tasks whose runners take synthetic feeds at a fixed shape (a generation benchmark times decoding instead).
TIMED_TASKS = frozenset({"text-classification", "image-classification"})
#: Side-by-side and alone may differ by this much (relative) before the report warns.
DISAGREEMENT = 0.15


def runner_spec(label: str, model: ModelDir, runtime: str, profile: Profile) -> RunnerSpec:
    target = profile.target
    return RunnerSpec(label=label, runtime=runtime, model_path=str(model.model_path), model_dir=str(model.path),
                      model_format=model.manifest.format, task=model.manifest.task, device=target.device,
                      precision=target.precision, threads=target.threads,
                      providers=get_runtime(runtime).providers(target), runtime_options=_options(runtime, target),
                      inputs=model.manifest.inputs or default_input_specs(model.manifest.task),
                      shapes=profile.shapes[:1], measurement=profile.measurement, allow_spinning=False)


def _options(runtime: str, target: Target) -> dict[str, Any]:
    """The target's runtime options go to its own runtime's runners only (the baseline is torch eager)."""
    return dict(target.runtime_options) if runtime == target.runtime else {}


def applies(profile: Profile, models: list[Candidate]) -> bool:
    return profile.target.device == "cpu" and len(models) > 1 and all(
        get_runtime(m.runtime).times_side_by_side and m.model.manifest.task in TIMED_TASKS for m in models)


def time_side_by_side(profile: Profile, baseline: Candidate, candidates: list[Candidate]) -> dict[str, Any] | None:
    """{rounds, seconds, latency: {label: stats}, speedup_vs_baseline: {label: ratio}}, or None where it does
    not apply or fails (the per-model measurements stand on their own; the failure is logged)."""
    models = [baseline, *candidates]
    if not applies(profile, models):
        return None
    labels = [m.label for m in models]
    try:
        with reporter().step(f"bench: {len(models)} models side by side (round-robin, one process)"):
            timing = time_interleaved(InterleavedSpec(
                runners=[runner_spec(m.label, m.model, m.runtime, profile) for m in models],
                shape=profile.shapes[0], timing=RoundRobinTiming.of(profile.measurement)))
    except BenchError as err:
        log.warning("side-by-side timing failed (%s); the report keeps the per-model timings", err)
        return None
    base_p50 = timing.latency[baseline.label].p50_ms
    return {"rounds": timing.rounds, "seconds": timing.seconds,
            "latency": {label: timing.latency[label].model_dump() for label in labels},
            "speedup_vs_baseline": {label: base_p50 / timing.latency[label].p50_ms for label in labels[1:]}}


def disagreements(side_by_side: dict[str, Any] | None, alone: dict[str, float]) -> list[str]:
    """Warnings where a model's speed-up alone and side by side differ by more than DISAGREEMENT."""
    if not side_by_side:
        return []
    warnings = []
    for label, ratio in side_by_side["speedup_vs_baseline"].items():
        measured = alone.get(label)
        if measured and abs(measured - ratio) / ratio > DISAGREEMENT:
            warnings.append(f"{label}: speed-up {measured:.2f}x timed alone but {ratio:.2f}x side by side with the "
                            "baseline; trust the side-by-side ratio (a load that came and went while the models were "
                            "timed one after another cannot skew it)")
    return warnings
