"""Turn measurements into a verdict per budget: pass, fail, inconclusive or not_measured, always with the numbers.

The rule (`judge`): a budget whose figure has a ~95% interval passes only when the whole interval is
within the limit and fails only when the whole interval is outside it; an interval that straddles the
limit is `inconclusive`, with the interval and the reason. A figure without an interval (size on disk,
an accuracy drop) is compared as it is. Timing figures (latency, throughput, speed-ups, decoding) come
from the side-by-side timing where the run had one (bench.figures), and each row names its measurement.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from slimline.benchmarking.figures import TIMING_METRICS, timing_figure
from slimline.benchmarking.results_model import CandidateResult
from slimline.profiles.schema import Budget

Status = Literal["pass", "fail", "inconclusive", "not_measured"]
Verdict = Literal["pass", "fail", "inconclusive", "incomplete"]
#: Where a timing figure's interval straddles its limit: what to do about it.
INCONCLUSIVE_FIX = ("a longer timing (the profile's measurement.min_time_s) or a quieter machine narrows it; the "
                    "limit may also be too close to what this model does")


class BudgetResult(BaseModel):
    name: str
    kind: str
    limit: float
    measured: float | None
    spread: str | None = None
    status: Status
    note: str = ""
    #: ~95% interval of `measured` the status was judged on (None: compared as a point).
    interval: tuple[float, float] | None = None
    #: Timing budgets: "side_by_side" (the models timed together in one process) or "alone" (this model in its
    #: own worker, one after another: GPU targets, or a model the side-by-side timing did not cover).
    measurement: str | None = None
    samples: int | None = None


def judge(kind: str, limit: float, measured: float, interval: tuple[float, float] | None) -> Status:
    """pass / fail / inconclusive for a `max` or `min` budget. At the limit counts as within it."""
    low, high = interval if interval is not None else (measured, measured)
    if kind == "max":
        return "pass" if high <= limit else "fail" if low > limit else "inconclusive"
    if kind == "min":
        return "pass" if low >= limit else "fail" if high < limit else "inconclusive"
    raise ValueError(f"judge takes max or min budgets, not {kind}")


def metric_value(metric: str, candidate: CandidateResult) -> tuple[float | None, str | None]:
    """The measured value of `metric` at the profile's first shape, and a human-readable spread."""
    if metric in TIMING_METRICS:
        figure = timing_figure(metric, candidate, None)
        if figure is None and metric == "speedup_vs_baseline":
            return candidate.speedup_vs_baseline, None
        if figure is None and metric == "decode_speedup_vs_baseline":
            return candidate.decode_speedup_vs_baseline, None
        return (None, None) if figure is None else (figure.value, _spread(figure.ci95, figure.describe()))
    if metric == "size_mb":
        return candidate.size_mb, None
    if metric == "peak_rss_mb":
        return candidate.peak_rss_mb, None
    if metric == "gpu_memory_mb":
        return candidate.gpu_memory_mb, None
    if metric == "accuracy_pct":
        return candidate.accuracy_pct, None
    if metric == "accuracy_drop_pt" and candidate.accuracy_drop_pt is not None:
        return candidate.accuracy_drop_pt, None
    if metric == "agreement_pct" and candidate.agreement_with_baseline_pct is not None:
        return candidate.agreement_with_baseline_pct, None
    if metric == "top1_drop_pt" and "top1_drop_se_pt" in candidate.quality:
        return candidate.quality.get(metric), f"paired SE {candidate.quality['top1_drop_se_pt']:.2f} pt"
    if metric.split("@")[0] in ("top1_drop_pt", "accuracy_drop_pt") and candidate.quality.get("top1_drop_is_bound"):
        return candidate.quality.get(metric), "no labels: upper bound = disagreement with fp32"
    if metric in candidate.quality:  # an evaluator's metric (bench/evaluators): top1_drop_pt, max_abs_error ...
        return candidate.quality[metric], None
    return None, None  # e.g. gpu_memory_mb on a runner that cannot measure it


def _spread(interval: tuple[float, float] | None, described: str) -> str:
    if interval is None:
        return described
    return f"95% CI [{interval[0]:.4g}, {interval[1]:.4g}] ({described})"


def evaluate_timing_budget(metric: str, budget: Budget, candidate: CandidateResult,
                           baseline: CandidateResult | None) -> BudgetResult:
    figure = timing_figure(metric, candidate, baseline)
    base = dict(name=metric, kind=budget.kind, limit=budget.limit)
    if figure is None:
        return BudgetResult(**base, measured=None, status="not_measured",
                            note="this run could not measure it (e.g. no decode loop, or no baseline)")
    status = judge(budget.kind, budget.limit, figure.value, figure.ci95)
    note = ""
    if status == "inconclusive" and figure.ci95 is not None:
        note = (f"the 95% interval [{figure.ci95[0]:.4g}, {figure.ci95[1]:.4g}] contains the limit {budget.limit:g}: "
                f"this measurement cannot tell pass from fail; {INCONCLUSIVE_FIX}")
    return BudgetResult(**base, measured=figure.value, interval=figure.ci95, measurement=figure.measurement,
                        samples=figure.n, spread=_spread(figure.ci95, figure.describe()), status=status, note=note)


def evaluate_budget(metric: str, budget: Budget, candidate: CandidateResult,
                    baseline: CandidateResult | None) -> BudgetResult:
    if metric in TIMING_METRICS and budget.kind in ("max", "min"):
        return evaluate_timing_budget(metric, budget, candidate, baseline)
    measured, spread = metric_value(metric, candidate)
    base = dict(name=metric, kind=budget.kind, limit=budget.limit, spread=spread)
    if measured is None:
        return BudgetResult(**base, measured=None, status="not_measured",
                            note="this run could not measure it (no eval data, or the runner lacks the metric)")
    if budget.kind in ("max", "min"):
        return BudgetResult(**base, measured=measured, status=judge(budget.kind, budget.limit, measured, None))
    # max_drop: relative to the baseline's value of the same metric
    reference = metric_value(metric, baseline)[0] if baseline else None
    if reference is None:
        return BudgetResult(**base, measured=measured, status="not_measured", note="no baseline value")
    drop = reference - measured
    return BudgetResult(**base, measured=measured, status="pass" if drop <= budget.limit else "fail",
                        note=f"drop {drop:.3f} vs baseline {reference:.3f}")


def evaluate_budgets(budgets: dict[str, Budget], candidate: CandidateResult,
                     baseline: CandidateResult | None) -> tuple[list[BudgetResult], Verdict]:
    results = [evaluate_budget(metric, budget, candidate, baseline) for metric, budget in budgets.items()]
    return results, verdict_of(results)


def verdict_of(results: list[BudgetResult]) -> Verdict:
    """fail if any budget failed; incomplete if one could not be measured or none was set; inconclusive if
    one's interval straddles its limit; else pass. Every verdict but pass exits 1: a gate fails closed.

    incomplete outranks inconclusive: a budget with no measurement at all is further from a decision
    than one measured too close to its limit."""
    statuses = {r.status for r in results}
    if not results:
        return "incomplete"
    if "fail" in statuses:
        return "fail"
    if "not_measured" in statuses:
        return "incomplete"
    if "inconclusive" in statuses:
        return "inconclusive"
    return "pass"
