"""report.html: one self-contained page per run (verdict first, then the plots), and its main figure as SVG.

Nothing is fetched at view time: styles, the tap-to-read script and the plots are inline. The page is
built from a `Report` plus optional extra sections, so `slimline search` (trials, Pareto front) and
`slimline compare` reuse the same frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from slimline.benchmarking.budgets import BudgetResult, metric_value
from slimline.benchmarking.latency import LatencyStats
from slimline.benchmarking.report import (
    COMPARISON_HEADER,
    SIDE_BY_SIDE_HEADER,
    Report,
    comparison_rows,
    side_by_side_rows,
    timing_sentence,
)
from slimline.benchmarking.reporting.page import html_table, render_page
from slimline.benchmarking.reporting.svg import Bar, Distribution, Point, bar_svg, distribution_svg, scatter_svg
from slimline.benchmarking.results_model import CandidateResult
from slimline.core.artifact import atomic_write_text

MAIN_FIGURE = "report-tradeoff.svg"
HTML_NAME = "report.html"


@dataclass(frozen=True)
class Section:
    """A titled block of trusted HTML (build it with html_table / the svg helpers, which escape text)."""

    title: str
    html: str
    anchor: str = ""


def budget_margin(budget: BudgetResult, report: Report) -> float | None:
    """How far inside (positive) or outside (negative) its limit the measured value is, in its unit."""
    if budget.measured is None:
        return None
    if budget.kind == "max":
        return budget.limit - budget.measured
    if budget.kind == "min":
        return budget.measured - budget.limit
    reference = metric_value(budget.name, report.baseline)[0] if budget.name in _METRICS else None
    return None if reference is None else budget.limit - (reference - budget.measured)


_METRICS = {"latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "throughput_sps", "size_mb",
            "peak_rss_mb", "gpu_memory_mb", "accuracy_pct", "accuracy_drop_pt", "speedup_vs_baseline"}


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def verdict_html(report: Report) -> str:
    """The verdict and one row per budget: limit, measured, margin, pass/fail, spread."""
    rows, classes = [], []
    for budget in report.budgets:
        margin = budget_margin(budget, report)
        rows.append([budget.name, f"{budget.kind} {budget.limit:g}", _num(budget.measured),
                     "-" if margin is None else f"{margin:+.3f}", budget.status.replace("_", " ").upper(),
                     budget.spread or "", budget.note])
        classes.append(f"budget {budget.status}")
    passed = sum(b.status == "pass" for b in report.budgets)
    summary = (f"<div class='verdict {report.verdict}' id='verdict'><span class='word'>{report.verdict.upper()}</span>"
               f"<span class='detail'>{passed} of {len(report.budgets)} budgets pass &middot; profile "
               f"<b>{escape(report.profile['name'])}</b> &middot; {escape(report.measurements.label)}</span></div>")
    table = html_table(["budget", "limit", "measured", "margin", "status", "spread", "note"], rows, classes,
                       table_id="budgets")
    return summary + table


def _verdict_latency(result: CandidateResult) -> LatencyStats:
    """The latency the verdict judged: side by side where the run timed the models together, else alone."""
    return result.side_by_side_latency or result.primary_latency()


def _latency_tip(result: CandidateResult) -> str:
    stats = _verdict_latency(result)
    low, high = stats.p50_ci95_ms
    accuracy = "" if result.accuracy_pct is None else f", accuracy {result.accuracy_pct:.2f}%"
    return (f"{result.label} ({result.runtime}): p50 {stats.p50_ms:.3f} ms [95% CI {low:.3f}, {high:.3f}], "
            f"p95 {stats.p95_ms:.3f}, size {result.size_mb:.1f} MB{accuracy}")


def report_points(report: Report) -> tuple[list[Point], list[Point], str]:
    """(candidates, reference points, y-axis label) for the trade-off plot.

    The y axis is the accuracy drop vs the fp32 baseline when accuracy was measured, else the size.
    """
    with_accuracy = report.baseline.accuracy_pct is not None and report.measurements.accuracy_drop_pt is not None

    def point(result: CandidateResult, kind: str) -> Point:
        stats = _verdict_latency(result)
        if with_accuracy:
            drop = 0.0 if result is report.baseline else (result.accuracy_drop_pt or 0.0)
            se = result.accuracy_drop_se_pt
            y, y_err = drop, (drop - 1.96 * se, drop + 1.96 * se) if se else None
        else:
            y, y_err = result.size_mb, None
        return Point(result.label, stats.p50_ms, y, kind, _latency_tip(result), tuple(stats.p50_ci95_ms), y_err)

    references = [point(report.baseline, "baseline"), *[point(r, "peer") for r in report.intermediates]]
    label = "accuracy drop vs fp32 (pt, ±1.96 paired SE)" if with_accuracy else "size on disk (MB)"
    return [point(report.measurements, "chosen" if report.verdict == "pass" else "candidate")], references, label


def main_plot_svg(report: Report, *, points: Sequence[Point] | None = None, front: Sequence[Point] | None = None,
                  title: str = "Accuracy drop vs latency") -> str:
    """The report's main figure; a search passes its trials as `points` and their Pareto `front`."""
    candidates, references, y_label = report_points(report)
    budgets = report.profile.get("budgets", {})
    y_limit = budgets.get("accuracy_drop_pt", {}).get("max") if "accuracy" in y_label else budgets.get(
        "size_mb", {}).get("max")
    return scatter_svg(list(points) if points is not None else candidates, front=front, reference_points=references,
                       x_label=f"latency p50 (ms), {next(iter(report.measurements.latency))}"
                       f"{', side by side' if report.measurements.side_by_side_latency else ''}", y_label=y_label,
                       title=title if "accuracy" in y_label else "Size vs latency",
                       x_limit=budgets.get("latency_p50_ms", {}).get("max"), y_limit=y_limit)


def main_figure(report: Report) -> str:
    """The trade-off plot: a search's trials with their Pareto front, else the run's models."""
    if not report.search:
        return main_plot_svg(report)
    from slimline.benchmarking.reporting.search_section import search_plot_svg

    budgets = report.profile.get("budgets", {})
    return search_plot_svg(report.search, budgets.get("accuracy_drop_pt", {}).get("max"),
                           budgets.get("latency_p50_ms", {}).get("max"))


def _models(report: Report) -> list[tuple[CandidateResult, str]]:
    return [(report.baseline, "baseline"), *[(r, "peer") for r in report.intermediates],
            (report.measurements, "candidate")]


def latency_distribution_svg(report: Report) -> str:
    series = [Distribution(r.label, r.primary_latency().quantiles_ms or [], tuple(r.primary_latency().p50_ci95_ms),
                           _latency_tip(r), kind) for r, kind in _models(report)]
    return distribution_svg(series, title=f"Latency per iteration, each model timed alone "
                                          f"({next(iter(report.measurements.latency))})")


def size_svg(report: Report) -> str:
    bars = [Bar(r.label, r.size_mb, kind, f"{r.label}: {r.size_mb:.2f} MB on disk, peak RSS {r.peak_rss_mb:.0f} MB")
            for r, kind in _models(report)]
    limit = report.profile.get("budgets", {}).get("size_mb", {}).get("max")
    return bar_svg(bars, title="Size on disk", unit="MB", limit=limit)


def fallback_section(report: Report) -> Section | None:
    """The quality fallback's candidates: the first budget's metric (the drop when labelled) against speed."""
    search = report.accuracy_fallback or {}
    candidates = search.get("candidates") or []
    if not candidates:
        return None
    budgets = search.get("budgets") or {"accuracy_drop_pt": f"max {search.get('budget_pt')}"}
    labelled = all(c.get("drop_pt") is not None for c in candidates)
    plotted = "accuracy_drop_pt" if labelled else next(iter(budgets))
    points, rows = [], []
    for index, c in enumerate(candidates):
        kind = "chosen" if index == search.get("chosen") else "trial"
        metrics = c.get("metrics") or {"accuracy_drop_pt": c.get("drop_pt")}
        value = c["drop_pt"] if labelled else metrics.get(plotted)
        tip = (f"candidate {index} ({c.get('variant', 'as configured')}): {len(c['excluded'])} nodes in float, "
               f"{plotted} {value if value is None else round(value, 4)}, p50 {c['latency_p50_ms']:.2f} ms, "
               f"{c['size_mb']:.1f} MB")
        if value is not None:
            points.append(Point(f"{index}", c["latency_p50_ms"], value, kind, tip,
                                y_err=(c["drop_pt"], c["drop_upper_pt"]) if labelled else None))
        rows.append([f"{index}{' (chosen)' if kind == 'chosen' else ''}", escape(str(c.get("variant", ""))),
                     str(len(c["excluded"])), *[f"{metrics[n]:.4g}" if metrics.get(n) is not None else "-"
                                                for n in budgets],
                     f"{c['latency_p50_ms']:.2f}", f"{c['size_mb']:.1f}"])
    limit = search.get("budget_pt") if labelled else None
    plot = scatter_svg(points, x_label="latency p50 (ms, quick)", y_label=f"{plotted} on validation",
                       title="Quality fallback candidates", y_limit=limit)
    note = (f"<p>Judged on the validation split against {escape(', '.join(f'{n} {v}' for n, v in budgets.items()))}: "
            f"{'met' if search.get('met_budget') else 'NOT met'} ({escape(str(search.get('stopped_by', '')))}). "
            f"{escape(str(search.get('selection', '')))}</p>")
    table = html_table(["candidate", "setting", "nodes in float", *budgets, "p50 ms (quick)", "size MB"], rows)
    return Section("Quality fallback", note + f"<figure>{plot}</figure>" + table, "fallback")


def details_html(report: Report) -> str:
    machine = report.machine
    rows = [["checkpoint", report.checkpoint], ["created", report.created_at],
            ["machine", f"{machine.get('cpu_model')} ({machine.get('cpu_count')} cores; "
                        f"{', '.join(machine.get('cpu_flags', []))})"],
            ["GPUs", ", ".join(d.get("name", "?") for d in machine.get("cuda_devices", [])) or "none"],
            ["target", ", ".join(f"{k} {v}" for k, v in report.profile.get("target", {}).items())],
            ["recipe", ", ".join(step["pass"] for step in report.recipe) or "(none)"],
            ["versions", ", ".join(f"{k} {v}" for k, v in report.versions.items())]]
    if report.eval_data:
        dataset = report.eval_data.get("dataset", {})
        digest = str(report.eval_data.get("examples_sha256"))[:12]
        rows.append(["eval data", f"{report.eval_data.get('examples')} examples of {dataset.get('source')} / "
                                  f"{dataset.get('split')} (sha256 {digest})"])
    stages = [[s.name, s.kind, "reused" if s.reused else f"{s.seconds:.1f} s", s.manifest_sha256[:12]]
              for s in report.stages]
    return html_table(["", ""], rows) + (html_table(["stage", "kind", "time", "manifest"], stages) if stages else "")


def render_html(report: Report, *, extra_sections: Sequence[Section] = (), main_plot: str | None = None,
                title: str | None = None) -> str:
    """The whole page: verdict, warnings, the trade-off plot (or `main_plot`), `extra_sections`, latency
    distribution, size, fallback, the measurement table and the details."""
    sections = [Section("Verdict", verdict_html(report), "verdict-section")]
    if report.search:  # `slimline search`: its trials and their table come right after the trade-off plot
        from slimline.benchmarking.reporting.search_section import search_section_html

        extra_sections = [Section("Search trials", search_section_html(report.search), "search"), *extra_sections]
    if report.warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
        sections.append(Section("Warnings", f"<ul class='warnings'>{items}</ul>", "warnings"))
    sections.append(Section("Trade-off", f"<figure>{main_plot or main_figure(report)}</figure>", "tradeoff"))
    sections += list(extra_sections)
    sections.append(Section("Latency distribution", f"<figure>{latency_distribution_svg(report)}</figure>",
                            "latency"))
    sections.append(Section("Size", f"<figure>{size_svg(report)}</figure>", "size"))
    fallback = fallback_section(report)
    if fallback is not None:
        sections.append(fallback)
    side_by_side = side_by_side_rows(report)
    if side_by_side:
        sections.append(Section("Side by side (what the timing budgets are judged on)",
                                html_table(SIDE_BY_SIDE_HEADER, side_by_side), "side-by-side"))
    sections.append(Section("Measurements (same run, same inputs; each model timed alone)",
                            f"<p>{escape(timing_sentence(report))}</p>"
                            + html_table(COMPARISON_HEADER, comparison_rows(report)), "measurements"))
    sections.append(Section("Details", details_html(report), "details"))
    heading = title or f"slimline report: {report.profile['name']}"
    return render_page(heading, [(s.title, s.html, s.anchor) for s in sections])


def write_html_report(report: Report, out_dir: Path, *, extra_sections: Sequence[Section] = (),
                      main_plot: str | None = None, title: str | None = None) -> Path:
    """Write OUT/report.html and OUT/report-tradeoff.svg (the main figure, for report.md and model cards)."""
    figure = main_plot or main_figure(report)
    atomic_write_text(out_dir / MAIN_FIGURE, figure + "\n")
    path = out_dir / HTML_NAME
    atomic_write_text(path, render_html(report, extra_sections=extra_sections, main_plot=figure, title=title))
    return path
