"""Latency statistics and the timing loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimline.benchmarking.latency import sample_latencies_ms, summarize
from slimline.profiles.schema import Measurement

latencies = st.lists(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False),
                     min_size=2, max_size=200)


@given(samples=latencies, batch_size=st.integers(min_value=1, max_value=256))
def test_percentiles_are_ordered_and_lie_within_the_samples(samples: list[float], batch_size: int) -> None:
    stats = summarize(samples, batch_size)
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    assert stats.min_ms == min(samples) and stats.max_ms == max(samples)
    assert stats.iterations == len(samples)


@given(samples=latencies)
def test_the_median_confidence_interval_is_ordered_and_within_the_samples(samples: list[float]) -> None:
    low, high = summarize(samples, 1).p50_ci95_ms
    assert min(samples) <= low <= high <= max(samples)


@given(samples=latencies, batch_size=st.integers(min_value=1, max_value=256))
def test_throughput_is_batch_size_per_mean_latency(samples: list[float], batch_size: int) -> None:
    stats = summarize(samples, batch_size)
    assert stats.throughput_sps == pytest.approx(batch_size * 1000.0 / stats.mean_ms)
    assert stats.cv == pytest.approx(stats.stdev_ms / stats.mean_ms)
    assert stats.cv >= 0


def test_identical_samples_have_no_spread() -> None:
    stats = summarize([2.0] * 10, 4)
    assert (stats.p50_ms, stats.p99_ms, stats.stdev_ms, stats.cv) == (2.0, 2.0, 0.0, 0.0)
    assert stats.p50_ci95_ms == (2.0, 2.0)
    assert stats.throughput_sps == pytest.approx(2000.0)


def test_the_confidence_interval_is_deterministic() -> None:
    samples = [1.0, 1.5, 1.2, 3.0, 0.9, 1.1, 1.4, 2.2]
    assert summarize(samples, 1).p50_ci95_ms == summarize(samples, 1).p50_ci95_ms


def test_one_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two"):
        summarize([1.0], 1)


@given(warmup=st.integers(min_value=0, max_value=5), min_iters=st.integers(min_value=5, max_value=40))
def test_without_a_minimum_time_exactly_min_iters_are_timed_after_the_warm_up(warmup: int, min_iters: int) -> None:
    calls: list[int] = []
    syncs: list[int] = []
    measurement = Measurement(warmup_iters=warmup, min_iters=min_iters, min_time_s=0.0, max_time_s=60.0)
    samples = sample_latencies_ms(lambda: calls.append(1), measurement, lambda: syncs.append(1))
    assert len(samples) == min_iters
    assert len(calls) == warmup + min_iters
    assert len(syncs) == min_iters + 1  # once after the warm-up, once closing each timed iteration
    assert all(sample >= 0 for sample in samples)


def test_a_minimum_time_keeps_sampling_past_min_iters() -> None:
    import time

    measurement = Measurement(warmup_iters=0, min_iters=5, min_time_s=0.05, max_time_s=10.0)
    started = time.perf_counter()
    samples = sample_latencies_ms(lambda: time.sleep(0.002), measurement)
    assert time.perf_counter() - started >= 0.05
    assert len(samples) > 5


def test_the_maximum_time_caps_sampling_once_five_samples_exist() -> None:
    import time

    measurement = Measurement(warmup_iters=0, min_iters=1000, min_time_s=0.0, max_time_s=0.02)
    samples = sample_latencies_ms(lambda: time.sleep(0.005), measurement)
    assert 5 <= len(samples) < 1000
