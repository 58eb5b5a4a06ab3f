"""Latency sampling and statistics.

Timing loop: warm-up iterations (not counted), then at least `min_iters` iterations AND at least
`min_time_s`, capped by `max_time_s`. Statistics are order statistics of the per-iteration times
plus a distribution-free 95% confidence interval of the median (order statistics, see
slimline.core.stats), so a verdict can say how sure it is without inflating the worker's peak memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from slimline.core.stats import Z_95, median_ci, quantile_ci, round_bootstrap_ci
from slimline.profiles.schema import Measurement

#: The tail percentiles a latency budget can name (latency_pNN_ms), besides the median.
TAIL_PERCENTILES = (90, 95, 99)


class LatencyStats(BaseModel):
    iterations: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    max_ms: float
    cv: float
    p50_ci95_ms: tuple[float, float]
    throughput_sps: float
    batch_size: int
    #: The distribution, not only its percentiles: every whole percentile 0..100 of the samples (101 values,
    #: compact for any n). Reports draw it; None in reports written before it was recorded.
    quantiles_ms: list[float] | None = None
    #: ~95% intervals of the tail percentiles ("p90", "p95", "p99"), like p50_ci95_ms: order statistics of the
    #: samples taken alone, or resampled rounds for a side-by-side timing. None in reports written before.
    percentile_ci95_ms: dict[str, tuple[float, float]] | None = None
    #: ~95% interval of throughput_sps (from the mean latency's interval). None in reports written before.
    throughput_ci95_sps: tuple[float, float] | None = None
    #: Side-by-side timings: the rounds the samples came from (the intervals resample rounds); None alone.
    rounds: int | None = None

    def interval_of(self, percentile: str) -> tuple[float, float] | None:
        """The ~95% interval of "p50", "p90", "p95" or "p99", where it was recorded."""
        if percentile == "p50":
            return self.p50_ci95_ms
        return (self.percentile_ci95_ms or {}).get(percentile)



def sample_latencies_ms(run_once: Callable[[], object], measurement: Measurement,
                        synchronize: Callable[[], None] | None = None) -> list[float]:
    """Per-iteration wall times in ms; `synchronize` (e.g. cuda.synchronize) closes each iteration."""
    for _ in range(measurement.warmup_iters):
        run_once()
    if synchronize:
        synchronize()
    samples: list[float] = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        run_once()
        if synchronize:
            synchronize()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - started
        enough = len(samples) >= measurement.min_iters and elapsed >= measurement.min_time_s
        if enough or (elapsed >= measurement.max_time_s and len(samples) >= 5):
            return samples


def summarize(samples_ms: list[float], batch_size: int) -> LatencyStats:
    if len(samples_ms) < 2:
        raise ValueError("need at least two latency samples")
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    mean = float(values.mean())
    stdev = float(values.std(ddof=1))
    return LatencyStats(
        iterations=len(values), p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
        mean_ms=mean, stdev_ms=stdev, min_ms=float(values.min()), max_ms=float(values.max()),
        cv=stdev / mean if mean > 0 else 0.0, p50_ci95_ms=median_ci(values),
        throughput_sps=batch_size * 1000.0 / mean if mean > 0 else 0.0, batch_size=batch_size,
        quantiles_ms=[round(float(q), 4) for q in np.percentile(values, np.arange(101))],
        percentile_ci95_ms={f"p{q}": _containing(quantile_ci(values, q / 100), float(value))
                            for q, value in zip(TAIL_PERCENTILES, (p90, p95, p99), strict=True)},
        throughput_ci95_sps=_throughput_interval(batch_size, mean, Z_95 * stdev / math.sqrt(len(values))),
    )


def summarize_rounds(rounds_ms: list[list[float]], batch_size: int, seed: int = 0) -> LatencyStats:
    """`summarize` of a side-by-side timing's pooled samples, with every interval from resampled rounds
    (slimline.core.stats.round_bootstrap_ci: iterations of one block are not independent)."""
    stats = summarize([sample for block in rounds_ms for sample in block], batch_size)
    percentiles = [50, *TAIL_PERCENTILES]

    def figures(models: list[np.ndarray]) -> np.ndarray:
        return np.append(np.percentile(models[0], percentiles), models[0].mean())

    _, low, high = round_bootstrap_ci([rounds_ms], figures, seed=seed)
    values = [stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms]
    intervals = {f"p{q}": (min(float(lo), value), max(float(hi), value))
                 for q, lo, hi, value in zip(percentiles, low, high, values, strict=False)}
    mean_low, mean_high = float(low[-1]), float(high[-1])
    return stats.model_copy(update={
        "p50_ci95_ms": intervals.pop("p50"), "percentile_ci95_ms": intervals, "rounds": len(rounds_ms),
        "throughput_ci95_sps": (batch_size * 1000.0 / mean_high, batch_size * 1000.0 / mean_low)
        if mean_low > 0 else None})


def _throughput_interval(batch_size: int, mean_ms: float, half_ms: float) -> tuple[float, float] | None:
    """batch / mean latency over the mean's normal ~95% interval (independent samples taken alone)."""
    if mean_ms <= 0 or mean_ms - half_ms <= 0:
        return None
    return batch_size * 1000.0 / (mean_ms + half_ms), batch_size * 1000.0 / (mean_ms - half_ms)


def _containing(interval: tuple[float, float], value: float) -> tuple[float, float]:
    """The interval widened to hold the (interpolated) percentile itself: with few samples the order-statistic
    ranks of a tail percentile can sit on one side of np.percentile's interpolation."""
    return min(interval[0], value), max(interval[1], value)
