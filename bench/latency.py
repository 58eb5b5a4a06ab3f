"""Latency sampling and statistics.

Timing loop: warm-up iterations (not counted), then at least `min_iters` iterations AND at least
`min_time_s`, capped by `max_time_s`. Statistics are order statistics of the per-iteration times
plus a distribution-free 95% confidence interval of the median (order statistics, see
slimline.core.stats), so a verdict can say how sure it is without inflating the worker's peak memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from slimline.core.stats import median_ci
from slimline.profiles.schema import Measurement


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
    )
