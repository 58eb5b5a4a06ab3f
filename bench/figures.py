"""The timing figure behind each latency, throughput and speed-up budget, with its interval and its source.

Side by side first: when the run timed the baseline and the candidates together in one process
(bench.interleaved, figures from bench.interleaved_stats), every timing budget reads those samples; a
load that came and went while the models were timed one after another cannot skew them. Otherwise
(a GPU target, where one model owns the device; a report from before side-by-side timing covered the
model) the figure comes from the model's own worker, labelled "alone", with order-statistic intervals
of its independent iterations.
"""

from __future__ import annotations

from typing import Any

from slimline.benchmarking.results_model import CandidateResult, Figure
from slimline.core.stats import independent_ratio_ci

LATENCY_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms")
#: Budgets judged on timing figures (an interval and the measurement they came from).
TIMING_METRICS = frozenset({*LATENCY_METRICS, "throughput_sps", "speedup_vs_baseline", "prefill_p50_ms",
                            "decode_tokens_per_s", "decode_speedup_vs_baseline"})
ALONE_METHOD = "95% CI from order statistics of its own iterations"
ALONE_RATIO_METHOD = ("95% CI combining both models' intervals (log-space delta method); a load that changed "
                      "between the two timings is not in it")


def timing_figure(metric: str, candidate: CandidateResult, baseline: CandidateResult | None) -> Figure | None:
    """The figure a `metric` budget is judged on: side by side where measured, else alone; None: not measured."""
    if metric in candidate.side_by_side:
        return candidate.side_by_side[metric]
    return alone_figure(metric, candidate, baseline)


def alone_figure(metric: str, candidate: CandidateResult, baseline: CandidateResult | None) -> Figure | None:
    stats = candidate.primary_latency()
    if metric in LATENCY_METRICS:
        percentile = metric.removeprefix("latency_").removesuffix("_ms")
        return Figure(value=getattr(stats, f"{percentile}_ms"), ci95=stats.interval_of(percentile),
                      measurement="alone", n=stats.iterations, method=ALONE_METHOD)
    if metric == "throughput_sps":
        return Figure(value=stats.throughput_sps, ci95=stats.throughput_ci95_sps, measurement="alone",
                      n=stats.iterations, method="95% CI of the mean latency")
    if metric == "speedup_vs_baseline":
        value = _first_set(candidate.speedup_vs_baseline_alone, candidate.speedup_vs_baseline)
        if value is None:
            return None
        interval = None  # without the baseline's timing at hand: judged as a point
        if baseline is not None:
            base = baseline.primary_latency()
            interval = independent_ratio_ci(base.p50_ms, base.p50_ci95_ms, stats.p50_ms, stats.p50_ci95_ms)
        return Figure(value=value, ci95=interval, measurement="alone", n=stats.iterations, method=ALONE_RATIO_METHOD)
    decode = candidate.primary_decode()
    if metric == "prefill_p50_ms" and decode is not None:
        return Figure(value=decode["prefill_p50_ms"], ci95=_pair(decode.get("prefill_ci95_ms")), measurement="alone",
                      n=decode["runs"], method=ALONE_METHOD)
    if metric == "decode_tokens_per_s" and decode is not None:
        return Figure(value=decode["decode_tokens_per_s"], ci95=_pair(decode.get("decode_tokens_per_s_ci95")),
                      measurement="alone", n=decode["runs"], method=ALONE_METHOD)
    if metric == "decode_speedup_vs_baseline":
        return _alone_decode_speedup(candidate, baseline)
    return None


def _alone_decode_speedup(candidate: CandidateResult, baseline: CandidateResult | None) -> Figure | None:
    value = _first_set(candidate.decode_speedup_vs_baseline_alone, candidate.decode_speedup_vs_baseline)
    mine, theirs = candidate.primary_decode(), baseline.primary_decode() if baseline else None
    if value is None:
        return None
    mine_ci = _pair(mine.get("decode_tokens_per_s_ci95")) if mine else None
    theirs_ci = _pair(theirs.get("decode_tokens_per_s_ci95")) if theirs else None
    interval = None
    if mine and theirs and mine_ci is not None and theirs_ci is not None:
        interval = independent_ratio_ci(mine["decode_tokens_per_s"], mine_ci, theirs["decode_tokens_per_s"], theirs_ci)
    return Figure(value=value, ci95=interval, measurement="alone", n=mine["runs"] if mine else None,
                  method=ALONE_RATIO_METHOD)


def _first_set(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))
