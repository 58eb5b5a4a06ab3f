"""Statistics shared by the benchmark, the accuracy fallback and the search: cheap and allocation-free.

The median's confidence interval comes from order statistics (distribution-free, O(n log n), no
resampling matrix): the benchmark worker reads its own peak RSS after summarising, and a bootstrap's
resamples x samples matrix (0.5 GB for 16,000 samples) would be counted as the model's memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: z for a two-sided 95% interval.
Z_95 = 1.959963984540054


def median_ci_ranks(n: int, z: float = Z_95) -> tuple[int, int]:
    """0-based ranks (low, high) of the sorted sample that bracket the median with ~95% coverage.

    The count of samples below the true median is Binomial(n, 1/2); its normal approximation gives
    the ranks n/2 -/+ z*sqrt(n)/2 (Conover, Practical Nonparametric Statistics, 3.6), widened outward
    so that the coverage never falls short for small n.
    """
    if n < 1:
        raise ValueError("need at least one sample")
    half_width = z * math.sqrt(n) / 2
    low = math.floor(n / 2 - half_width)
    high = math.ceil(n / 2 + half_width)
    return max(low, 0), min(high, n - 1)


def median_ci(samples: Sequence[float] | np.ndarray, z: float = Z_95) -> tuple[float, float]:
    """Distribution-free ~95% confidence interval of the median from order statistics."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    low, high = median_ci_ranks(len(ordered), z)
    return float(ordered[low]), float(ordered[high])


def paired_drop_pt(reference_correct: np.ndarray, candidate_correct: np.ndarray) -> tuple[float, float]:
    """Accuracy drop in points and its standard error from paired outcomes on the same examples.

    Only the examples where the two models disagree carry information (McNemar): with b lost and c
    gained, drop = (b - c) / n and its variance is (b + c - (b - c)^2 / n) / n^2.
    """
    n = len(reference_correct)
    lost = int(np.sum(reference_correct & ~candidate_correct))
    gained = int(np.sum(~reference_correct & candidate_correct))
    variance = max(lost + gained - (lost - gained) ** 2 / n, 0.0) / n**2
    return 100.0 * (lost - gained) / n, 100.0 * float(np.sqrt(variance))


def wilson_interval_pct(accuracy_pct: float, examples: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy (a proportion), in percent: honest near 0 and 100%."""
    if examples <= 0:
        return (float("nan"), float("nan"))
    p, n, z2 = accuracy_pct / 100, examples, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))
