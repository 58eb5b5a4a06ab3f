"""`slimline compare --retime`: both runs' artifacts timed again, side by side, now, on this machine.

Each recorded run's latency interval is within-run: it says how precisely that run measured its model under
the conditions of that moment, not how much the machine itself drifts between two moments (load, clock
boost, thermal state, a neighbour's job). Two identical models recorded an hour apart can therefore differ
"beyond the spread" of their own intervals. Timing both artifacts in one process, in shuffled rounds of
blocks (slimline.benchmarking.interleaved), puts both under the same conditions; the ratio of their medians
resamples the same rounds for both, so a load that slowed one round cancels. The difference is judged on
that ratio's interval.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.interleaved_stats import side_by_side_figures
from slimline.core.artifact import ModelDir
from slimline.core.errors import BadInputError, SlimlineError
from slimline.history.records import RunRecord
from slimline.pipeline.side_by_side import runner_spec
from slimline.profiles.schema import Profile
from slimline.runtimes import get_runtime

RETIME_FIX = "compare without --retime (each run's own interval is within-run only), or rerun both on this machine."


@dataclass(frozen=True)
class Retimed:
    """Both artifacts' p50 timed side by side now, and B's p50 over A's with its paired 95% interval."""

    shape: str
    p50_a_ms: float
    p50_a_ci95_ms: tuple[float, float]
    p50_b_ms: float
    p50_b_ci95_ms: tuple[float, float]
    ratio_b_over_a: float
    ratio_ci95: tuple[float, float]
    rounds: int
    seconds: float

    @property
    def beyond_spread(self) -> bool:
        """The difference is real when the ratio's interval excludes 1 (equal speed)."""
        return not self.ratio_ci95[0] <= 1.0 <= self.ratio_ci95[1]


def _artifact(record: RunRecord, tag: str) -> ModelDir:
    """The run's final model, on this machine and unchanged since it was recorded."""
    path = Path(record.report.measurements.model_dir)
    if not (path / "manifest.json").is_file():
        raise BadInputError(f"--retime: run #{record.id}'s ({tag}) artifact {path} is not on this machine.",
                            fix=RETIME_FIX)
    try:
        model = ModelDir.open(path)  # verifies every file's sha256 against its manifest
    except SlimlineError as err:
        raise BadInputError(f"--retime: run #{record.id}'s ({tag}) artifact {path} cannot be opened: {err.message}",
                            fix=RETIME_FIX) from err
    recorded = record.artifact_sha256
    if recorded and hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest() != recorded:
        raise BadInputError(f"--retime: {path} is no longer the artifact run #{record.id} ({tag}) measured (its "
                            "manifest changed since).", fix=RETIME_FIX)
    return model


def retime_runs(a: RunRecord, b: RunRecord, seed: int = 0) -> Retimed:
    """Time A's and B's final models side by side (A's profile: its shape, threads and measurement length)."""
    profile_a = Profile.model_validate(a.report.profile)
    profile_b = Profile.model_validate(b.report.profile)
    runtimes = {a.report.measurements.runtime, b.report.measurements.runtime}
    untimed = sorted(r for r in runtimes if not get_runtime(r).times_side_by_side)
    if profile_a.target.device != "cpu" or profile_b.target.device != "cpu" or untimed:
        raise BadInputError(f"--retime times CPU models side by side in one process ({', '.join(untimed) or 'a GPU'} "
                            f"cannot be); these runs ran on {sorted(runtimes)} "
                            f"({profile_a.target.device}/{profile_b.target.device}).", fix=RETIME_FIX)
    models = [_artifact(a, "A"), _artifact(b, "B")]
    labels = [f"A #{a.id}", f"B #{b.id}"]
    specs = [runner_spec(label, model, record.report.measurements.runtime, profile)
             for label, model, record, profile in zip(labels, models, (a, b), (profile_a, profile_b), strict=True)]
    shape = profile_a.shapes[0]
    timing = InterleavedTiming.of(profile_a.measurement)
    result = time_interleaved(InterleavedSpec(runners=specs, shape=shape, timing=timing, seed=seed,
                                              threading=profile_a.measurement.side_by_side_threading))
    figures = side_by_side_figures(result, labels[0], seed)
    stats_a, stats_b = figures[labels[0]][0], figures[labels[1]][0]
    speedup = figures[labels[1]][1]["speedup_vs_baseline"]  # A's p50 / B's p50, paired over rounds
    assert speedup.ci95 is not None  # side-by-side figures always carry one
    low, high = speedup.ci95
    return Retimed(shape=next(iter(a.report.measurements.latency)),
                   p50_a_ms=stats_a.p50_ms, p50_a_ci95_ms=tuple(stats_a.p50_ci95_ms),  # type: ignore[arg-type]
                   p50_b_ms=stats_b.p50_ms, p50_b_ci95_ms=tuple(stats_b.p50_ci95_ms),  # type: ignore[arg-type]
                   ratio_b_over_a=1.0 / speedup.value, ratio_ci95=(1.0 / high, 1.0 / low), rounds=result.rounds,
                   seconds=result.seconds)
