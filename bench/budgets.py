"""Turn measurements into a verdict per budget: pass, fail or not_measured, always with the numbers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from slimline.bench.results_model import CandidateResult
from slimline.profiles.schema import Budget

Status = Literal["pass", "fail", "not_measured"]
Verdict = Literal["pass", "fail", "incomplete"]


class BudgetResult(BaseModel):
    name: str
    kind: str
    limit: float
    measured: float | None
    spread: str | None = None
    status: Status
    note: str = ""


def metric_value(metric: str, candidate: CandidateResult) -> tuple[float | None, str | None]:
    """The measured value of `metric` at the profile's first shape, and a human-readable spread."""
    stats = candidate.primary_latency()
    if metric.startswith("latency_p") and metric.endswith("_ms"):
        value = getattr(stats, metric.removeprefix("latency_"), None)
        low, high = stats.p50_ci95_ms
        return value, f"p50 95% CI [{low:.2f}, {high:.2f}] ms, cv {stats.cv:.2f}, n={stats.iterations}"
    if metric == "throughput_sps":
        return stats.throughput_sps, f"cv {stats.cv:.2f}"
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
    if metric == "speedup_vs_baseline":
        return candidate.speedup_vs_baseline, None
    if metric == "agreement_pct" and candidate.agreement_with_baseline_pct is not None:
        return candidate.agreement_with_baseline_pct, None
    if metric == "top1_drop_pt" and "top1_drop_se_pt" in candidate.quality:
        return candidate.quality.get(metric), f"paired SE {candidate.quality['top1_drop_se_pt']:.2f} pt"
    if metric.split("@")[0] in ("top1_drop_pt", "accuracy_drop_pt") and candidate.quality.get("top1_drop_is_bound"):
        return candidate.quality.get(metric), "no labels: upper bound = disagreement with fp32"
    decode = candidate.primary_decode()
    if metric in ("prefill_p50_ms", "decode_tokens_per_s") and decode is not None:
        return decode[metric], f"{decode['runs']} runs of {decode['new_tokens']} tokens, cv {decode['decode_cv']:.2f}"
    if metric == "decode_speedup_vs_baseline":
        return candidate.decode_speedup_vs_baseline, None
    if metric in candidate.quality:  # an evaluator's metric (bench/evaluators): top1_drop_pt, max_abs_error ...
        return candidate.quality[metric], None
    return None, None  # e.g. gpu_memory_mb on a runner that cannot measure it


def evaluate_budget(metric: str, budget: Budget, candidate: CandidateResult,
                    baseline: CandidateResult | None) -> BudgetResult:
    measured, spread = metric_value(metric, candidate)
    base = dict(name=metric, kind=budget.kind, limit=budget.limit, spread=spread)
    if measured is None:
        return BudgetResult(**base, measured=None, status="not_measured",
                            note="this run could not measure it (no eval data, or the runner lacks the metric)")
    if budget.kind == "max":
        ok = measured <= budget.limit
    elif budget.kind == "min":
        ok = measured >= budget.limit
    else:  # max_drop: relative to the baseline's value of the same metric
        reference = metric_value(metric, baseline)[0] if baseline else None
        if reference is None:
            return BudgetResult(**base, measured=measured, status="not_measured", note="no baseline value")
        drop = reference - measured
        return BudgetResult(**base, measured=measured, status="pass" if drop <= budget.limit else "fail",
                            note=f"drop {drop:.3f} vs baseline {reference:.3f}")
    return BudgetResult(**base, measured=measured, status="pass" if ok else "fail")


def evaluate_budgets(budgets: dict[str, Budget], candidate: CandidateResult,
                     baseline: CandidateResult | None) -> tuple[list[BudgetResult], Verdict]:
    results = [evaluate_budget(metric, budget, candidate, baseline) for metric, budget in budgets.items()]
    return results, verdict_of(results)


def verdict_of(results: list[BudgetResult]) -> Verdict:
    """fail if any budget failed; incomplete if one could not be measured or none was set (a gate must
    fail closed)."""
    statuses = {r.status for r in results}
    if not results:
        return "incomplete"
    if "fail" in statuses:
        return "fail"
    if "not_measured" in statuses:
        return "incomplete"
    return "pass"
