"""The shared statistics: the median's interval covers as promised and costs no memory to speak of."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimline.benchmarking.latency import summarize
from slimline.core.stats import median_ci, median_ci_ranks, paired_drop_pt


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    trials, n = 2000, 101
    covered = 0
    for _ in range(trials):
        samples = rng.lognormal(mean=0.0, sigma=0.5, size=n)  # skewed, like latencies; true median 1.0
        low, high = median_ci(samples)
        covered += low <= 1.0 <= high
    assert 0.93 <= covered / trials <= 0.99


@given(st.integers(min_value=1, max_value=100_000))
def test_median_interval_ranks_stay_inside_the_sample_and_bracket_the_middle(n: int) -> None:
    low, high = median_ci_ranks(n)
    assert 0 <= low <= (n - 1) // 2 <= n // 2 <= high <= n - 1


def test_summarizing_16000_samples_allocates_no_resampling_matrix() -> None:
    """A bootstrap matrix (2000 x 16000 float64 = 256 MB) inflated the worker's peak RSS by ~0.5 GB."""
    samples = list(np.random.default_rng(1).normal(1.0, 0.1, size=16_000))
    tracemalloc.start()
    summarize(samples, 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5 * 2**20


def test_paired_drop_counts_only_disagreements() -> None:
    reference = np.array([True, True, False, False, True])
    candidate = np.array([True, False, True, False, True])
    drop, error = paired_drop_pt(reference, candidate)
    assert drop == pytest.approx(0.0)
    assert error > 0
