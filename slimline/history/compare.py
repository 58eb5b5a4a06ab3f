"""`slimline compare RUN_A RUN_B`: two recorded runs side by side, each difference with its spread.

Latency differences carry the 95% CIs of both medians; the accuracy difference carries a paired
standard error when both runs scored the same examples (same examples_sha256 and per-example results
recorded), else an unpaired one, and the table says which. Runs from different machine classes are
still shown, with a warning that their latencies do not compare.

Each run's latency interval is within-run only (WITHIN_RUN_NOTE says so on every comparison): it does not
cover the machine changing between the runs. `retimed` (slimline.history.retime, `compare --retime`) adds
both artifacts timed side by side now, and that row's verdict is the one to trust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from slimline.benchmarking.report import Report
from slimline.benchmarking.reporting.html_report import latency_distribution_svg
from slimline.benchmarking.reporting.page import html_table, render_page
from slimline.benchmarking.reporting.svg import Distribution, Point, distribution_svg, scatter_svg
from slimline.core.stats import Z_95, wilson_interval_pct
from slimline.history.records import RunRecord
from slimline.history.regression import accuracy_difference
from slimline.history.retime import Retimed

HEADER = ["metric", "A", "B", "B - A", "beyond the spread?"]
WITHIN_RUN_NOTE = ("each run's latency interval is within-run only: it measures how precisely that run timed its "
                   "model, not how much this machine drifts between runs (load, clocks, temperature), so a latency "
                   "difference 'beyond the spread' of two runs recorded at different times may be the machine's; "
                   "`slimline compare --retime` times both artifacts side by side now and judges the difference on "
                   "that")
RETIMED_NOTE = ("latency judged on the side-by-side re-timing (both artifacts in one process, shuffled rounds; the "
                "ratio's interval resamples the same rounds for both)")


@dataclass
class Comparison:
    a: RunRecord
    b: RunRecord
    rows: list[list[str]] = field(default_factory=list)
    budget_rows: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retimed: Retimed | None = None

    def html(self) -> str:
        return comparison_html(self)


def _ci(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]"


def _latency_rows(a: Report, b: Report, shape: str) -> list[list[str]]:
    sa, sb = a.measurements.latency[shape], b.measurements.latency[shape]
    hw_a = max(sa.p50_ms - sa.p50_ci95_ms[0], sa.p50_ci95_ms[1] - sa.p50_ms)
    hw_b = max(sb.p50_ms - sb.p50_ci95_ms[0], sb.p50_ci95_ms[1] - sb.p50_ms)
    diff, spread = sb.p50_ms - sa.p50_ms, math.hypot(hw_a, hw_b)
    rows = [[f"latency p50 ms ({shape})", f"{sa.p50_ms:.3f} {_ci(*sa.p50_ci95_ms)}",
             f"{sb.p50_ms:.3f} {_ci(*sb.p50_ci95_ms)}",
             f"{diff:+.3f} ms ({100 * diff / sa.p50_ms:+.1f}%) ± {spread:.3f}",
             "yes, by within-run CIs" if abs(diff) > spread else "no, by within-run CIs"]]
    for name in ("p95", "p99"):
        va, vb = getattr(sa, f"{name}_ms"), getattr(sb, f"{name}_ms")
        rows.append([f"latency {name} ms", f"{va:.3f}", f"{vb:.3f}", f"{vb - va:+.3f} ({100 * (vb / va - 1):+.1f}%)",
                     "-"])
    rows.append(["throughput samples/s", f"{sa.throughput_sps:.1f}", f"{sb.throughput_sps:.1f}",
                 f"{sb.throughput_sps - sa.throughput_sps:+.1f}", "-"])
    rows.append(["iterations (cv)", f"{sa.iterations} ({sa.cv:.2f})", f"{sb.iterations} ({sb.cv:.2f})", "", ""])
    return rows


def _accuracy_rows(a: Report, b: Report) -> list[list[str]]:
    fa, fb = a.measurements, b.measurements
    if fa.accuracy_pct is None or fb.accuracy_pct is None:
        return [["accuracy %", _pct(fa.accuracy_pct), _pct(fb.accuracy_pct), "not comparable (not measured)", "-"]]
    na, nb = int(a.eval_data["examples"]), int(b.eval_data["examples"])  # type: ignore[index]
    found = accuracy_difference(b, a)  # drop of b vs a, so B - A = -drop
    assert found is not None  # both measured, checked above
    drop, se, how = found
    cells_a = f"{fa.accuracy_pct:.2f} {_ci(*wilson_interval_pct(fa.accuracy_pct, na))} n={na}"
    cells_b = f"{fb.accuracy_pct:.2f} {_ci(*wilson_interval_pct(fb.accuracy_pct, nb))} n={nb}"
    return [["accuracy % (95% Wilson)", cells_a, cells_b, f"{-drop:+.2f} pt ± {Z_95 * se:.2f} ({how})",
             "yes" if abs(drop) > Z_95 * se else "no"],
            ["accuracy drop vs own fp32 pt", _pt(fa.accuracy_drop_pt, fa.accuracy_drop_se_pt),
             _pt(fb.accuracy_drop_pt, fb.accuracy_drop_se_pt), "", ""]]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pt(value: float | None, se: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" + ("" if se is None else f" ± {se:.2f} SE")


def _retimed_row(retimed: Retimed) -> list[str]:
    low, high = retimed.ratio_ci95
    return [f"latency p50 ms ({retimed.shape}), re-timed side by side now",
            f"{retimed.p50_a_ms:.3f} {_ci(*retimed.p50_a_ci95_ms)}",
            f"{retimed.p50_b_ms:.3f} {_ci(*retimed.p50_b_ci95_ms)}",
            f"B/A {retimed.ratio_b_over_a:.3f} [{low:.3f}, {high:.3f}] ({100 * (retimed.ratio_b_over_a - 1):+.1f}%; "
            f"{retimed.rounds} rounds, {retimed.seconds:.0f} s)", "yes" if retimed.beyond_spread else "no"]


def compare_runs(a: RunRecord, b: RunRecord, retimed: Retimed | None = None) -> Comparison:
    ra, rb = a.report, b.report
    result = Comparison(a, b, retimed=retimed)
    result.notes.append(RETIMED_NOTE if retimed is not None else WITHIN_RUN_NOTE)
    if a.machine_class != b.machine_class:
        result.warnings.append(f"different machine classes: A on {a.machine_description}, B on "
                               f"{b.machine_description}; latency and speed-up differences mix model and machine")
    result.rows.append(["run", f"#{a.id} {a.kind} {a.created_at}", f"#{b.id} {b.kind} {b.created_at}", "", ""])
    result.rows.append(["profile / recipe", f"{a.profile_name}: {_recipe(ra)}", f"{b.profile_name}: {_recipe(rb)}",
                        "", ""])
    result.rows.append(["artifact sha256", (a.artifact_sha256 or "-")[:12], (b.artifact_sha256 or "-")[:12],
                        "same" if a.artifact_sha256 == b.artifact_sha256 else "differs", ""])
    shape = next(iter(ra.measurements.latency))
    if shape in rb.measurements.latency:
        result.rows += _latency_rows(ra, rb, shape)
    else:
        result.warnings.append(f"B has no latency at A's shape {shape}: latency not compared")
    if retimed is not None:
        result.rows.append(_retimed_row(retimed))
    result.rows += _accuracy_rows(ra, rb)
    fa, fb = ra.measurements, rb.measurements
    result.rows.append(["size MB", f"{fa.size_mb:.2f}", f"{fb.size_mb:.2f}", f"{fb.size_mb - fa.size_mb:+.2f}", "-"])
    result.rows.append(["peak RSS MB", f"{fa.peak_rss_mb:.0f}", f"{fb.peak_rss_mb:.0f}",
                        f"{fb.peak_rss_mb - fa.peak_rss_mb:+.0f}", "-"])
    result.rows.append(["verdict", ra.verdict.upper(), rb.verdict.upper(), "", ""])
    budgets_a, budgets_b = {x.name: x for x in ra.budgets}, {x.name: x for x in rb.budgets}
    for name in dict.fromkeys([*budgets_a, *budgets_b]):
        cells = []
        for budgets in (budgets_a, budgets_b):
            item = budgets.get(name)
            cells.append("-" if item is None else f"{item.status.upper()} "
                         f"({'-' if item.measured is None else f'{item.measured:.3f}'} vs {item.kind} {item.limit:g})")
        result.budget_rows.append([name, *cells])
    return result


def _recipe(report: Report) -> str:
    return ", ".join(step["pass"] for step in report.recipe) or "(none)"


def is_comparison_html(path: Path) -> bool:
    """`path` is a page `slimline compare --html` wrote (so replacing it loses nothing of the user's)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16 << 10)
    except OSError:
        return False
    return head.startswith(b"<!DOCTYPE html>") and b"<title>slimline compare #" in head


def comparison_html(comparison: Comparison) -> str:
    a, b = comparison.a.report, comparison.b.report
    points = []
    for tag, report, kind in (("A", a, "peer"), ("B", b, "candidate")):
        stats = report.measurements.primary_latency()
        final = report.measurements
        y = final.accuracy_pct if final.accuracy_pct is not None else final.size_mb
        points.append(Point(f"{tag} #{(comparison.a if tag == 'A' else comparison.b).id}", stats.p50_ms, y, kind,
                            f"{tag}: p50 {stats.p50_ms:.3f} ms, {y:.2f}", tuple(stats.p50_ci95_ms)))
    y_label = "accuracy %" if a.measurements.accuracy_pct is not None else "size MB"
    scatter = scatter_svg([points[1]], reference_points=[points[0]], y_label=y_label,
                          title=f"A vs B: {y_label} vs latency")
    series = [Distribution(f"{tag}: {r.measurements.label}", r.measurements.primary_latency().quantiles_ms or [],
                           tuple(r.measurements.primary_latency().p50_ci95_ms), kind=kind)
              for tag, r, kind in (("A", a, "peer"), ("B", b, "candidate"))]
    sections = [("Notes", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in comparison.notes) + "</ul>", "notes")]
    if comparison.warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in comparison.warnings)
        sections.append(("Warnings", f"<ul class='warnings'>{items}</ul>", "warnings"))
    sections += [("Side by side", html_table(HEADER, comparison.rows, table_id="compare"), "compare"),
                 ("Budgets", html_table(["budget", "A", "B"], comparison.budget_rows), "budgets"),
                 ("Trade-off", f"<figure>{scatter}</figure>", "tradeoff"),
                 ("Latency distribution (final models)", f"<figure>{distribution_svg(series)}</figure>", "latency"),
                 ("A: every model", f"<figure>{latency_distribution_svg(a)}</figure>", "latency-a"),
                 ("B: every model", f"<figure>{latency_distribution_svg(b)}</figure>", "latency-b")]
    return render_page(f"slimline compare #{comparison.a.id} vs #{comparison.b.id}", sections)
