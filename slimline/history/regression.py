"""The regression budget: this run against the last shipped run of its profile on the same machine class.

A difference counts as a regression only when it exceeds the limit by more than the measurement's
spread: for latency, the 95% CIs of both medians combined (root of the sum of squared half-widths);
for accuracy, 1.96 standard errors of the difference, paired (McNemar) when both runs scored the same
examples and unpaired otherwise. A shipped run from another machine class is never compared: latency
on an AVX2 laptop says nothing about an AVX-512 server. The report says which case applied.
"""

from __future__ import annotations

import math
from pathlib import Path

from slimline.benchmarking.budgets import BudgetResult
from slimline.benchmarking.report import Report
from slimline.benchmarking.results_model import CandidateResult, unpack_correct
from slimline.core.stats import Z_95, paired_drop_pt
from slimline.history.facts import machine_class, machine_description
from slimline.history.records import RunRecord, last_shipped
from slimline.profiles.schema import RegressionBudget


def _half_width(result: CandidateResult, shape: str) -> tuple[float, float]:
    stats = result.latency[shape]
    low, high = stats.p50_ci95_ms
    return stats.p50_ms, max(stats.p50_ms - low, high - stats.p50_ms, 0.0)


def latency_regression(report: Report, shipped: Report, limit_pct: float) -> BudgetResult | None:
    shape = next(iter(report.measurements.latency))
    if shape not in shipped.measurements.latency:
        return None
    new, new_hw = _half_width(report.measurements, shape)
    old, old_hw = _half_width(shipped.measurements, shape)
    change_pct = 100.0 * (new / old - 1.0)
    spread_ms = math.hypot(new_hw, old_hw)
    excess_ms = new - old * (1 + limit_pct / 100)
    regressed = excess_ms > spread_ms
    if regressed:
        note = f"p50 {new:.3f} ms vs shipped {old:.3f} ms: slower than the limit by more than the spread"
    elif excess_ms > 0:
        note = f"p50 {new:.3f} ms vs shipped {old:.3f} ms: over the limit but within the spread, not a regression"
    else:
        note = f"p50 {new:.3f} ms vs shipped {old:.3f} ms"
    return BudgetResult(name="latency_p50_pct_vs_shipped", kind="max", limit=limit_pct, measured=change_pct,
                        spread=f"±{100 * spread_ms / old:.1f}% (95% CIs of both medians, {shape})",
                        status="fail" if regressed else "pass", note=note)


def accuracy_difference(report: Report, shipped: Report) -> tuple[float, float, str] | None:
    """(drop in points vs shipped, its standard error, how it was computed); None when either lacks accuracy."""
    new, old = report.measurements, shipped.measurements
    if new.accuracy_pct is None or old.accuracy_pct is None or not report.eval_data or not shipped.eval_data:
        return None
    n_new, n_old = int(report.eval_data["examples"]), int(shipped.eval_data["examples"])
    same = report.eval_data.get("examples_sha256") == shipped.eval_data.get("examples_sha256") and n_new == n_old
    if same and new.correct_b64 and old.correct_b64:
        drop, se = paired_drop_pt(unpack_correct(old.correct_b64, n_old), unpack_correct(new.correct_b64, n_new))
        return drop, se, f"paired SE, same {n_new} examples"
    p_new, p_old = new.accuracy_pct / 100, old.accuracy_pct / 100
    se = 100 * math.sqrt(p_new * (1 - p_new) / max(n_new, 1) + p_old * (1 - p_old) / max(n_old, 1))
    return old.accuracy_pct - new.accuracy_pct, se, "unpaired SE (different examples)"


def accuracy_regression(report: Report, shipped: Report, limit_pt: float) -> BudgetResult:
    name = "accuracy_drop_pt_vs_shipped"
    found = accuracy_difference(report, shipped)
    if found is None:
        return BudgetResult(name=name, kind="max", limit=limit_pt, measured=None, status="not_measured",
                            note="accuracy was not measured in this run or the shipped one (pass --eval-data)")
    drop, se, how = found
    regressed = drop - limit_pt > Z_95 * se
    return BudgetResult(name=name, kind="max", limit=limit_pt, measured=drop, spread=f"±{Z_95 * se:.2f} pt ({how})",
                        status="fail" if regressed else "pass",
                        note=f"accuracy {report.measurements.accuracy_pct:.2f}% vs shipped "
                             f"{shipped.measurements.accuracy_pct:.2f}%")


def pick_shipped(report: Report, shipped: list[RunRecord]) -> tuple[RunRecord | None, list[str]]:
    """The most recently shipped run on this machine class, and warnings about the ones not compared."""
    mine = machine_class(report)
    same = [record for record in shipped if record.machine_class == mine]
    if same:
        return same[0], []
    if not shipped:
        return None, [f"regression_vs_shipped: nothing of profile {report.profile['name']} has been shipped yet, so "
                      "there was nothing to compare with (mark a run with `slimline history ship RUN`)"]
    others = ", ".join(f"#{r.id} ({r.machine_description})" for r in shipped[:3])
    return None, [f"regression_vs_shipped: NOT compared: the shipped run(s) {others} ran on another machine class "
                  f"than this one ({machine_description(report.machine)}); latency and speed-ups do not transfer "
                  "between CPUs or GPUs. Ship a run measured on this machine class to gate on it."]


def check_regression(report: Report, budget: RegressionBudget, history_path: Path | None) -> Report:
    """The report with the regression rows added to its budgets (and its verdict updated) or a warning."""
    from slimline.benchmarking.budgets import verdict_of

    record, warnings = pick_shipped(report, last_shipped(report.profile["name"], history_path))
    rows: list[BudgetResult] = []
    if record is not None:
        shipped = record.report
        if budget.latency_p50_pct is not None:
            row = latency_regression(report, shipped, budget.latency_p50_pct.limit)
            if row is None:
                warnings.append(f"regression_vs_shipped: shipped run #{record.id} has no latency at this run's "
                                "first shape; latency not compared")
            else:
                rows.append(row)
        if budget.accuracy_drop_pt is not None:
            rows.append(accuracy_regression(report, shipped, budget.accuracy_drop_pt.limit))
        rows = [row.model_copy(update={"note": f"{row.note} (shipped run #{record.id})"}) for row in rows]
    budgets = [*report.budgets, *rows]
    return report.model_copy(update={"budgets": budgets, "verdict": verdict_of(budgets),
                                     "warnings": [*report.warnings, *warnings]})
