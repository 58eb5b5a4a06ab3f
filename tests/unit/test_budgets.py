"""Budget arithmetic: max / min / max_drop against measured values, and the verdict over all budgets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimline.benchmarking.budgets import BudgetResult, evaluate_budget, evaluate_budgets, verdict_of
from slimline.benchmarking.latency import summarize
from slimline.benchmarking.results_model import CandidateResult
from slimline.profiles.schema import Budget

value = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
percent = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


def candidate(*, latencies_ms: list[float] | None = None, batch_size: int = 1, size_mb: float = 10.0,
              peak_rss_mb: float = 300.0, accuracy_pct: float | None = None, accuracy_drop_pt: float | None = None,
              speedup: float | None = None) -> CandidateResult:
    stats = summarize(latencies_ms or [1.0, 2.0, 3.0, 4.0, 5.0], batch_size)
    return CandidateResult(label="c", runtime="onnxruntime", format="onnx", model_dir="/m",
                           latency={f"b{batch_size}_s128": stats}, size_mb=size_mb, peak_rss_mb=peak_rss_mb,
                           load_s=0.1, accuracy_pct=accuracy_pct, accuracy_drop_pt=accuracy_drop_pt,
                           speedup_vs_baseline=speedup)


def result(status: str) -> BudgetResult:
    return BudgetResult(name="m", kind="max", limit=1.0, measured=None if status == "not_measured" else 1.0,
                        status=status)


@given(measured=value, limit=value)
def test_a_max_budget_passes_exactly_when_the_measurement_is_at_or_below_the_limit(measured: float,
                                                                                    limit: float) -> None:
    outcome = evaluate_budget("size_mb", Budget(max=limit), candidate(size_mb=measured), None)
    assert outcome.status == ("pass" if measured <= limit else "fail")
    assert (outcome.measured, outcome.limit, outcome.kind) == (measured, limit, "max")


@given(measured=value, limit=value)
def test_a_min_budget_passes_exactly_when_the_measurement_is_at_or_above_the_limit(measured: float,
                                                                                    limit: float) -> None:
    outcome = evaluate_budget("speedup_vs_baseline", Budget(min=limit), candidate(speedup=measured), None)
    assert outcome.status == ("pass" if measured >= limit else "fail")
    assert (outcome.measured, outcome.limit, outcome.kind) == (measured, limit, "min")


@given(reference=percent, measured=percent, allowed=st.floats(min_value=0, max_value=100))
def test_a_max_drop_budget_compares_the_drop_from_the_baseline(reference: float, measured: float,
                                                              allowed: float) -> None:
    outcome = evaluate_budget("accuracy_pct", Budget(max_drop=allowed), candidate(accuracy_pct=measured),
                              candidate(accuracy_pct=reference))
    assert outcome.status == ("pass" if reference - measured <= allowed else "fail")
    assert outcome.measured == measured
    assert "vs baseline" in outcome.note


def test_an_accuracy_gain_always_passes_a_max_drop_budget() -> None:
    outcome = evaluate_budget("accuracy_pct", Budget(max_drop=0.0), candidate(accuracy_pct=91.0),
                              candidate(accuracy_pct=90.0))
    assert outcome.status == "pass"


def test_a_max_drop_budget_without_a_baseline_is_not_measured() -> None:
    outcome = evaluate_budget("accuracy_pct", Budget(max_drop=1.0), candidate(accuracy_pct=90.0), None)
    assert (outcome.status, outcome.measured) == ("not_measured", 90.0)
    missing_reference = evaluate_budget("accuracy_pct", Budget(max_drop=1.0), candidate(accuracy_pct=90.0),
                                        candidate(accuracy_pct=None))
    assert missing_reference.status == "not_measured"


@pytest.mark.parametrize(("metric", "budget"), [
    ("accuracy_pct", Budget(min=80)), ("accuracy_drop_pt", Budget(max=1)), ("speedup_vs_baseline", Budget(min=1)),
    ("gpu_memory_mb", Budget(max=100)),
])
def test_a_metric_the_run_could_not_measure_is_not_measured_not_passed(metric: str, budget: Budget) -> None:
    outcome = evaluate_budget(metric, budget, candidate(), candidate())
    assert outcome.status == "not_measured"
    assert outcome.measured is None
    assert outcome.note


@given(latencies=st.lists(st.floats(min_value=0.01, max_value=1e4), min_size=2, max_size=50),
       limit=st.floats(min_value=0.01, max_value=1e4),
       metric=st.sampled_from(["latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms"]))
def test_latency_budgets_read_the_matching_percentile_and_judge_its_interval(latencies: list[float], limit: float,
                                                                             metric: str) -> None:
    cand = candidate(latencies_ms=latencies)
    percentile = metric.removeprefix("latency_").removesuffix("_ms")
    expected = getattr(cand.primary_latency(), f"{percentile}_ms")
    low, high = cand.primary_latency().interval_of(percentile)
    outcome = evaluate_budget(metric, Budget(max=limit), cand, None)
    assert outcome.measured == expected
    assert outcome.interval == (low, high) and low <= expected <= high
    assert outcome.status == ("pass" if high <= limit else "fail" if low > limit else "inconclusive")
    assert outcome.measurement == "alone"
    assert f"n={len(latencies)}" in (outcome.spread or "")


@given(batch_size=st.integers(min_value=1, max_value=64), limit=value)
def test_a_throughput_budget_reads_samples_per_second(batch_size: int, limit: float) -> None:
    cand = candidate(latencies_ms=[2.0, 2.0, 2.0], batch_size=batch_size)
    outcome = evaluate_budget("throughput_sps", Budget(min=limit), cand, None)
    assert outcome.measured == pytest.approx(batch_size * 500.0)
    assert outcome.status == ("pass" if outcome.measured >= limit else "fail")


@given(statuses=st.lists(st.sampled_from(["pass", "fail", "inconclusive", "not_measured"]), max_size=8))
def test_the_verdict_is_fail_over_incomplete_over_inconclusive_over_pass(statuses: list[str]) -> None:
    verdict = verdict_of([result(s) for s in statuses])
    if "fail" in statuses:
        assert verdict == "fail"
    elif "not_measured" in statuses or not statuses:  # no budget at all: nothing was checked
        assert verdict == "incomplete"
    elif "inconclusive" in statuses:
        assert verdict == "inconclusive"
    else:
        assert verdict == "pass"


def test_evaluate_budgets_keeps_the_profile_order_and_gives_the_verdict() -> None:
    budgets = {"size_mb": Budget(max=5.0), "accuracy_drop_pt": Budget(max=1.0), "peak_rss_mb": Budget(max=1000)}
    results, verdict = evaluate_budgets(budgets, candidate(size_mb=4.0, accuracy_drop_pt=2.5), candidate())
    assert [(r.name, r.status) for r in results] == [("size_mb", "pass"), ("accuracy_drop_pt", "fail"),
                                                     ("peak_rss_mb", "pass")]
    assert verdict == "fail"
