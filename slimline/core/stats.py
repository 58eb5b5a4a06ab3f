"""Statistics shared by the benchmark, the accuracy fallback and the search: cheap and allocation-free.

The median's confidence interval comes from order statistics (distribution-free, O(n log n), no
resampling matrix): the benchmark worker reads its own peak RSS after summarising, and a bootstrap's
resamples x samples matrix (0.5 GB for 16,000 samples) would be counted as the model's memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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


def quantile_ci_ranks(n: int, q: float, z: float = Z_95) -> tuple[int, int]:
    """0-based ranks bracketing the q-quantile of n independent samples (the median's rule for any q):
    the count below the true quantile is Binomial(n, q), so the ranks are n*q -/+ z*sqrt(n*q*(1-q))."""
    if n < 1:
        raise ValueError("need at least one sample")
    half_width = z * math.sqrt(n * q * (1 - q))
    return max(math.floor(n * q - half_width), 0), min(math.ceil(n * q + half_width), n - 1)


def quantile_ci(samples: Sequence[float] | np.ndarray, q: float, z: float = Z_95) -> tuple[float, float]:
    """Distribution-free ~95% interval of the q-quantile of independent samples, from order statistics."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    low, high = quantile_ci_ranks(len(ordered), q, z)
    return float(ordered[low]), float(ordered[high])


def independent_ratio_ci(numerator: float, numerator_ci: tuple[float, float], denominator: float,
                         denominator_ci: tuple[float, float]) -> tuple[float, float]:
    """~95% interval of numerator / denominator measured independently (e.g. two models timed one after the
    other), from each one's 95% interval: half-widths combined in log space (the delta method), as the
    regression budget combines two runs' medians. It cannot see a load that changed between the two
    measurements: that is what side-by-side timing is for."""
    def relative_half_width(value: float, interval: tuple[float, float]) -> float:
        low, high = interval
        return max(math.log(value / low) if low > 0 else math.inf, math.log(high / value) if high > 0 else 0.0)

    ratio = numerator / denominator
    spread = math.hypot(relative_half_width(numerator, numerator_ci), relative_half_width(denominator, denominator_ci))
    return ratio * math.exp(-spread), ratio * math.exp(spread)


def round_bootstrap_ci(rounds: Sequence[Sequence[Sequence[float]]],
                       statistic: Callable[[list[np.ndarray]], float | Sequence[float] | np.ndarray], *,
                       resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimates, lows, highs) of `statistic` over models timed side by side in rounds, by resampling rounds.

    `rounds[model][round]` holds one model's samples of one round (a block of consecutive iterations);
    `statistic` gets every model's pooled samples and returns one figure or several (computed on the same
    resamples), e.g. `lambda m: median(m[0]) / median(m[1])` for a speed-up, or
    `lambda m: percentile(m[0], [50, 95])` for one model's percentiles.

    Why rounds and not samples: iterations of one block share the machine's state (a neighbour's burst,
    the cache, the clock), so they are not independent and an order-statistic interval over iterations
    would be too narrow. Rounds are the independent units: each round runs every model once, in a fresh
    random order. Resampling whole rounds, the same rounds for every model, keeps the pairing: a load
    that slowed every model of one round moves all of them together in each resample, so a ratio's
    interval is only as wide as the ratio's own round-to-round scatter (the cluster bootstrap; Davison &
    Hinkley, Bootstrap Methods and their Application, 1997, section 3.8). A ratio of medians has no
    closed-form interval, and the order-statistic interval of per-round ratios would bound the median
    of those ratios, not the ratio of the pooled medians the report shows; resampling the same statistic
    does. The interval is the percentile interval of `resamples` seeded resamples, widened to contain the
    estimate itself (it does unless the resampling distribution is very skewed, and a verdict must never
    read an interval that excludes the figure it reports). With one round there is nothing to resample:
    the interval is the estimate. Deterministic for a given seed. Runs in the parent process (never in a
    benchmark worker, whose peak memory is measured).
    """
    model_count, round_count = len(rounds), len(rounds[0]) if rounds else 0
    if model_count == 0 or round_count == 0 or any(len(r) != round_count for r in rounds):
        raise ValueError("every model needs the same number of rounds, at least one")
    flat = [np.concatenate([np.asarray(block, dtype=np.float64) for block in model]) for model in rounds]
    estimate = np.atleast_1d(np.asarray(statistic(flat), dtype=np.float64))
    if round_count == 1:
        return estimate, estimate.copy(), estimate.copy()
    pickers = [_round_picker(model) for model in rounds]
    rng = np.random.default_rng(seed)
    values = np.empty((resamples, len(estimate)))
    for draw in range(resamples):
        chosen = rng.integers(0, round_count, size=round_count)
        values[draw] = statistic([flat[m][pickers[m](chosen)] for m in range(model_count)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail], axis=0)
    return estimate, np.minimum(low, estimate), np.maximum(high, estimate)


def _round_picker(model: Sequence[Sequence[float]]) -> Callable[[np.ndarray], np.ndarray]:
    """chosen round numbers -> indices of their samples in the model's pooled array (vectorised when every
    round holds the same number of samples, as the blocks of one model do)."""
    lengths = [len(block) for block in model]
    if len(set(lengths)) == 1:
        offsets = np.arange(lengths[0])
        return lambda chosen: (chosen[:, None] * lengths[0] + offsets).ravel()
    edges = np.cumsum([0, *lengths])
    spans = [np.arange(edges[i], edges[i + 1]) for i in range(len(lengths))]
    return lambda chosen: np.concatenate([spans[r] for r in chosen])
