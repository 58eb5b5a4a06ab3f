"""The rule that turns a timing figure and its interval into pass / fail / inconclusive, the intervals themselves
(rounds resampled, pairs kept together), and which measurement a budget reads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimline.benchmarking.budgets import BudgetResult, evaluate_budget, evaluate_budgets, judge, verdict_of
from slimline.benchmarking.interleaved import InterleavedResult
from slimline.benchmarking.interleaved_stats import side_by_side_figures
from slimline.benchmarking.latency import summarize, summarize_rounds
from slimline.benchmarking.results_model import CandidateResult, Figure
from slimline.core.stats import round_bootstrap_ci
from slimline.profiles.schema import Budget

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


def candidate(label: str = "c", latencies_ms: list[float] | None = None, **fields: object) -> CandidateResult:
    stats = summarize(latencies_ms or [1.0, 1.1, 1.2, 1.3, 1.4], 1)
    return CandidateResult(label=label, runtime="onnxruntime", format="onnx", model_dir="/m",
                           latency={"b1_s128": stats}, size_mb=1.0, peak_rss_mb=1.0, load_s=0.1, **fields)


@pytest.mark.parametrize(("kind", "limit", "interval", "status"), [
    ("max", 10.0, (8.0, 10.0), "pass"),         # the whole interval at or under the limit
    ("max", 10.0, (10.0, 10.0), "pass"),        # exactly at the limit counts as within it
    ("max", 10.0, (9.0, 10.5), "inconclusive"),  # straddles
    ("max", 10.0, (10.0, 10.5), "inconclusive"),  # touches the limit from above: not a clear fail
    ("max", 10.0, (10.01, 12.0), "fail"),
    ("min", 2.0, (2.0, 3.0), "pass"),
    ("min", 2.0, (1.9, 2.1), "inconclusive"),
    ("min", 2.0, (1.5, 2.0), "inconclusive"),
    ("min", 2.0, (1.0, 1.99), "fail"),
])
def test_a_budget_passes_or_fails_only_when_its_interval_is_on_one_side_of_the_limit(
        kind: str, limit: float, interval: tuple[float, float], status: str) -> None:
    assert judge(kind, limit, sum(interval) / 2, interval) == status


@given(a=finite, b=finite, limit=finite, kind=st.sampled_from(["max", "min"]))
def test_the_rule_agrees_with_where_the_interval_lies(a: float, b: float, limit: float, kind: str) -> None:
    low, high = min(a, b), max(a, b)
    status = judge(kind, limit, (low + high) / 2, (low, high))
    within = (lambda x: x <= limit) if kind == "max" else (lambda x: x >= limit)
    if within(low) and within(high):
        assert status == "pass"
    elif not within(low) and not within(high):
        assert status == "fail"
    else:
        assert status == "inconclusive"
    assert judge(kind, limit, low, None) == ("pass" if within(low) else "fail")  # no interval: a point


@given(low=finite, width=finite, extra=finite, limit=finite, kind=st.sampled_from(["max", "min"]))
def test_a_wider_interval_never_turns_a_verdict_into_its_opposite(low: float, width: float, extra: float,
                                                                   limit: float, kind: str) -> None:
    narrow = judge(kind, limit, low, (low, low + width))
    wide = judge(kind, limit, low, (max(0.0, low - extra), low + width + extra))
    assert wide == narrow or wide == "inconclusive"


rounds_strategy = st.lists(st.lists(st.floats(min_value=0.1, max_value=100.0), min_size=1, max_size=6),
                           min_size=2, max_size=12)


@settings(max_examples=40, deadline=None)
@given(rounds=rounds_strategy, seed=st.integers(min_value=0, max_value=1000))
def test_a_round_interval_contains_its_estimate_and_lies_within_the_samples(rounds: list[list[float]],
                                                                             seed: int) -> None:
    estimate, low, high = round_bootstrap_ci([rounds], lambda m: float(np.median(m[0])), resamples=200, seed=seed)
    flat = [x for block in rounds for x in block]
    assert min(flat) <= low[0] <= estimate[0] <= high[0] <= max(flat)
    again = round_bootstrap_ci([rounds], lambda m: float(np.median(m[0])), resamples=200, seed=seed)
    assert [list(a) for a in again] == [list(estimate), list(low), list(high)]  # seeded: the same every time


@settings(max_examples=40, deadline=None)
@given(loads=st.lists(st.floats(min_value=0.5, max_value=20.0), min_size=3, max_size=15),
       ratio=st.floats(min_value=0.1, max_value=50.0), block=st.integers(min_value=1, max_value=5))
def test_a_load_shared_by_both_models_of_a_round_cancels_in_their_ratio(loads: list[float], ratio: float,
                                                                         block: int) -> None:
    """Rounds are resampled in pairs: whatever slowed both models of a round (any amount) is not in the ratio."""
    candidate_rounds = [[load * (1 + 0.01 * i) for i in range(block)] for load in loads]
    baseline_rounds = [[ratio * x for x in r] for r in candidate_rounds]
    estimate, low, high = round_bootstrap_ci([baseline_rounds, candidate_rounds],
                                             lambda m: float(np.median(m[0]) / np.median(m[1])), resamples=200)
    assert estimate[0] == pytest.approx(ratio) and low[0] == pytest.approx(ratio) and high[0] == pytest.approx(ratio)


def test_the_ratio_interval_covers_the_true_ratio_about_95_percent_of_the_time() -> None:
    """Rounds with their own load (lognormal, shared by both models) and independent per-iteration noise."""
    rng = np.random.default_rng(0)
    trials, covered = 150, 0
    for _ in range(trials):
        loads = rng.lognormal(0.0, 0.4, size=15)
        base = [list(2.0 * load * rng.lognormal(0.0, 0.1, size=5)) for load in loads]
        cand = [list(1.0 * load * rng.lognormal(0.0, 0.1, size=5)) for load in loads]
        _, low, high = round_bootstrap_ci([base, cand], lambda m: float(np.median(m[0]) / np.median(m[1])),
                                          resamples=400)
        covered += low[0] <= 2.0 <= high[0]
    assert 0.88 <= covered / trials <= 1.0


def test_side_by_side_latency_intervals_are_wider_than_order_statistics_when_rounds_differ() -> None:
    """Iterations of one block share their round's load: treating them as independent would overstate certainty."""
    rng = np.random.default_rng(1)
    rounds = [list(load * rng.lognormal(0.0, 0.02, size=10)) for load in rng.lognormal(0.0, 0.3, size=12)]
    by_rounds = summarize_rounds(rounds, 1)
    naive = summarize([x for r in rounds for x in r], 1)
    assert by_rounds.p50_ms == naive.p50_ms and by_rounds.rounds == 12
    width = by_rounds.p50_ci95_ms[1] - by_rounds.p50_ci95_ms[0]
    assert width > naive.p50_ci95_ms[1] - naive.p50_ci95_ms[0]
    for name in ("p90", "p95", "p99"):
        low, high = by_rounds.interval_of(name)
        assert low <= getattr(by_rounds, f"{name}_ms") <= high


def interleaved(baseline_ms: list[list[float]], candidate_ms: list[list[float]]) -> InterleavedResult:
    return InterleavedResult(rounds=len(baseline_ms), seconds=1.0, batch_size=1, threading="runtime-defaults",
                             samples_ms={"base": baseline_ms, "cand": candidate_ms},
                             blocks={"base": (2, len(baseline_ms[0])), "cand": (2, len(candidate_ms[0]))})


def test_budgets_read_the_side_by_side_figures_and_say_so() -> None:
    rng = np.random.default_rng(2)
    base_rounds = [list(20.0 + rng.normal(0, 0.2, 6)) for _ in range(10)]
    cand_rounds = [list(5.0 + rng.normal(0, 0.05, 6)) for _ in range(10)]
    figures = side_by_side_figures(interleaved(base_rounds, cand_rounds), "base")
    stats, own = figures["cand"]
    # alone the candidate looked as slow as the baseline: a load that came and went while it was timed
    cand = candidate("cand", [20.0] * 5, speedup_vs_baseline=1.0, speedup_vs_baseline_alone=1.0,
                     side_by_side=own, side_by_side_latency=stats)
    base = candidate("base", [20.0] * 5)
    results, verdict = evaluate_budgets({"latency_p95_ms": Budget(max=10.0), "speedup_vs_baseline": Budget(min=3.0)},
                                        cand, base)
    assert verdict == "pass"
    for row in results:
        assert row.measurement == "side_by_side" and row.interval is not None and row.samples == 60
        assert "side by side, 10 rounds" in (row.spread or "")
    speedup = next(r for r in results if r.name == "speedup_vs_baseline")
    assert speedup.measured == pytest.approx(4.0, rel=0.05) and speedup.interval[0] > 3.0


def test_a_speedup_whose_interval_straddles_the_limit_is_inconclusive_with_the_interval_and_the_reason() -> None:
    figure = Figure(value=1.32, ci95=(1.21, 1.44), measurement="side_by_side", n=100, rounds=12, method="m")
    cand = candidate(speedup_vs_baseline=1.32, side_by_side={"speedup_vs_baseline": figure})
    row = evaluate_budget("speedup_vs_baseline", Budget(min=1.3), cand, candidate())
    assert row.status == "inconclusive" and row.interval == (1.21, 1.44) and row.measured == 1.32
    assert "[1.21, 1.44]" in row.note and "1.3" in row.note
    assert verdict_of([row]) == "inconclusive"


def test_without_a_side_by_side_timing_a_budget_is_judged_alone_and_labelled_so() -> None:
    base, cand = candidate("base", [10.0, 10.2, 9.9, 10.1] * 10), candidate("cand", [2.0, 2.1, 1.9, 2.05] * 10,
                                                                          speedup_vs_baseline_alone=5.0)
    row = evaluate_budget("speedup_vs_baseline", Budget(min=3.0), cand, base)
    assert row.measurement == "alone" and row.status == "pass" and row.interval[0] <= 5.0 <= row.interval[1]
    latency = evaluate_budget("latency_p50_ms", Budget(max=2.0), cand, base)
    assert latency.measurement == "alone" and latency.status == "inconclusive"


def test_decode_budgets_read_the_side_by_side_generations() -> None:
    timed = interleaved([[20.0] * 3] * 6, [[5.0] * 3] * 6).model_dump()
    result = InterleavedResult.model_validate({**timed, "decode": {
        "base": {"prompt_tokens": 8, "new_tokens": 4, "batch_size": 1, "prefill_ms": [[3.0]] * 6,
                 "tokens_per_s": [[10.0 + i * 0.1] for i in range(6)]},
        "cand": {"prompt_tokens": 8, "new_tokens": 4, "batch_size": 1, "prefill_ms": [[1.0]] * 6,
                 "tokens_per_s": [[40.0 + i * 0.4] for i in range(6)]}}})
    _, own = side_by_side_figures(result, "base")["cand"]
    assert own["decode_speedup_vs_baseline"].value == pytest.approx(4.0)
    assert own["decode_speedup_vs_baseline"].ci95 == pytest.approx((4.0, 4.0))
    cand = candidate(side_by_side=own, decode_speedup_vs_baseline=4.0)
    rows = {name: evaluate_budget(name, budget, cand, candidate()) for name, budget in {
        "decode_speedup_vs_baseline": Budget(min=2.0), "decode_tokens_per_s": Budget(min=30.0),
        "prefill_p50_ms": Budget(max=2.0)}.items()}
    assert {name: (row.status, row.measurement) for name, row in rows.items()} == {
        name: ("pass", "side_by_side") for name in rows}


def test_an_inconclusive_verdict_exits_one_like_a_failed_one() -> None:
    from slimline.cli.console import verdict_exit

    class Stub:
        verdict = "inconclusive"

    assert verdict_exit(Stub()) == 1
    row = BudgetResult(name="latency_p95_ms", kind="max", limit=1.0, measured=1.0, status="inconclusive")
    assert verdict_of([row, row.model_copy(update={"status": "pass"})]) == "inconclusive"


def test_a_gpu_target_is_timed_alone_and_its_report_says_so(tiny_bert) -> None:
    from slimline.benchmarking.benchmark import Candidate
    from slimline.formats.checkpoint import open_checkpoint
    from slimline.pipeline.side_by_side import GPU_NOTE, not_applicable, summary
    from slimline.profiles.schema import load_profile

    model = open_checkpoint(tiny_bert)
    models = [Candidate("a", model, "torch"), Candidate("b", model, "onnxruntime")]
    gpu = load_profile("gpu-t4")
    assert not_applicable(gpu, models) == GPU_NOTE
    assert not_applicable(load_profile("cpu"), models) is None
    assert "single model" in not_applicable(load_profile("cpu"), models[:1])
    assert "tensorrt" in not_applicable(load_profile("cpu"), [*models, Candidate("c", model, "tensorrt")])
    assert summary(None, GPU_NOTE, gpu, [], "b1_s128") == {"measured": False, "reason": GPU_NOTE}


def test_a_busy_machine_is_named_in_a_warning() -> None:
    from slimline.pipeline.side_by_side import busy_machine_warning

    assert busy_machine_warning(1.0, 2.5, 2) is None
    warning = busy_machine_warning(1.0, 10.2, 2)
    assert warning is not None and "10.2 on 2 cores" in warning and "side_by_side_threading" in warning
    assert busy_machine_warning(None, None, 2) is None
