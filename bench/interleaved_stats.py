"""From a side-by-side timing's rounds to the figures budgets are judged on, each with an interval over rounds.

Every interval resamples whole rounds (slimline.core.stats.round_bootstrap_ci, which says why); a
speed-up resamples the same rounds for the baseline and the candidate, so what slowed both in one round
cancels in their ratio. Seeded: the same samples always give the same intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimline.benchmarking.interleaved import DecodeRounds, InterleavedResult
from slimline.benchmarking.latency import LatencyStats, summarize_rounds
from slimline.benchmarking.results_model import Figure
from slimline.core.stats import round_bootstrap_ci

ROUNDS_METHOD = "95% CI from resampled rounds"
PAIRED_METHOD = "95% CI from resampled rounds, paired with the baseline"


def _median_ratio(models: list[np.ndarray]) -> float:
    return float(np.median(models[0]) / np.median(models[1]))


def _figure(value: float, interval: tuple[float, float] | None, n: int, rounds: int, method: str) -> Figure:
    return Figure(value=float(value), ci95=interval, measurement="side_by_side", n=n, rounds=rounds, method=method)


def latency_figures(stats: LatencyStats, rounds: int) -> dict[str, Figure]:
    figures = {f"latency_p{q}_ms": _figure(getattr(stats, f"p{q}_ms"), stats.interval_of(f"p{q}"), stats.iterations,
                                           rounds, ROUNDS_METHOD) for q in (50, 90, 95, 99)}
    figures["throughput_sps"] = _figure(stats.throughput_sps, stats.throughput_ci95_sps, stats.iterations, rounds,
                                        ROUNDS_METHOD)
    return figures


def speedup_figure(baseline_rounds: list[list[float]], rounds: list[list[float]], seed: int) -> Figure:
    """Baseline p50 / this p50, both from the same rounds."""
    value, low, high = round_bootstrap_ci([baseline_rounds, rounds], _median_ratio, seed=seed)
    n = sum(len(block) for block in rounds)
    return _figure(value[0], (float(low[0]), float(high[0])), n, len(rounds), PAIRED_METHOD)


def decode_figures(mine: DecodeRounds, baseline: DecodeRounds | None, seed: int) -> dict[str, Figure]:
    rounds, n = len(mine.tokens_per_s), sum(len(block) for block in mine.tokens_per_s)
    figures = {}
    for metric, samples in (("prefill_p50_ms", mine.prefill_ms), ("decode_tokens_per_s", mine.tokens_per_s)):
        value, low, high = round_bootstrap_ci([samples], lambda m: float(np.median(m[0])), seed=seed)
        figures[metric] = _figure(value[0], (float(low[0]), float(high[0])), n, rounds, ROUNDS_METHOD)
    if baseline is not None:
        value, low, high = round_bootstrap_ci([mine.tokens_per_s, baseline.tokens_per_s], _median_ratio, seed=seed)
        figures["decode_speedup_vs_baseline"] = _figure(value[0], (float(low[0]), float(high[0])), n, rounds,
                                                        PAIRED_METHOD)
    return figures


def decode_summary(rounds: DecodeRounds) -> dict[str, Any]:
    """The report's row for one model decoded side by side (medians over every kept generation)."""
    prefill = [x for block in rounds.prefill_ms for x in block]
    rates = [x for block in rounds.tokens_per_s for x in block]
    return {"prompt_tokens": rounds.prompt_tokens, "new_tokens": rounds.new_tokens, "batch_size": rounds.batch_size,
            "generations": len(rates), "rounds": len(rounds.tokens_per_s), "prefill_p50_ms": float(np.median(prefill)),
            "decode_tokens_per_s": float(np.median(rates))}


def side_by_side_figures(result: InterleavedResult, baseline_label: str,
                         seed: int = 0) -> dict[str, tuple[LatencyStats, dict[str, Figure]]]:
    """Per label: its pooled latency (intervals over rounds) and every timing figure a budget can name.

    The baseline gets no speed-up figure; a model decoded side by side gets prefill, decode tokens/s and,
    when the baseline was decoded too, the decode speed-up.
    """
    out: dict[str, tuple[LatencyStats, dict[str, Figure]]] = {}
    base_rounds = result.samples_ms[baseline_label]
    decode = result.decode or {}
    for label, rounds in result.samples_ms.items():
        stats = summarize_rounds(rounds, result.batch_size, seed)
        figures = latency_figures(stats, result.rounds)
        if label != baseline_label:
            figures["speedup_vs_baseline"] = speedup_figure(base_rounds, rounds, seed)
        if label in decode:
            figures.update(decode_figures(decode[label], decode.get(baseline_label) if label != baseline_label
                                          else None, seed))
        out[label] = (stats, figures)
    return out
