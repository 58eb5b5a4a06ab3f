"""report.html and its SVG plots: verdict first, every budget, well-formed self-contained markup, reusable parts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from unit.test_history import make_report

from slimline.benchmarking.budgets import BudgetResult
from slimline.benchmarking.latency import LatencyStats, summarize
from slimline.benchmarking.reporting.html_report import (
    MAIN_FIGURE,
    Section,
    budget_margin,
    render_html,
    write_html_report,
)
from slimline.benchmarking.reporting.svg import Point, pareto_front, scatter_svg

SVG_NS = "{http://www.w3.org/2000/svg}"


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(match) for match in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def test_latency_stats_keep_the_whole_distribution_as_percentiles() -> None:
    stats = summarize(list(np.random.default_rng(0).exponential(2.0, 500) + 1.0), 1)
    assert len(stats.quantiles_ms) == 101
    assert stats.quantiles_ms == sorted(stats.quantiles_ms)
    assert stats.quantiles_ms[0] == pytest.approx(stats.min_ms, abs=1e-4)
    assert stats.quantiles_ms[100] == pytest.approx(stats.max_ms, abs=1e-4)
    old = stats.model_dump(exclude={"quantiles_ms"})  # a report written before quantiles were recorded
    assert LatencyStats.model_validate(old).quantiles_ms is None


def test_the_page_puts_the_verdict_and_every_budget_before_the_plots(tmp_path: Path) -> None:
    report = make_report()
    report = report.model_copy(update={"budgets": [*report.budgets, BudgetResult(
        name="size_mb", kind="max", limit=5.0, measured=10.0, status="fail")], "verdict": "fail"})
    page = render_html(report)
    assert page.index("id='verdict'") < page.index("id='tradeoff'") < page.index("id='latency'")
    budget_rows = re.findall(r"<tr class='budget (\w+)'><td>([\w.]+)</td>", page)
    assert budget_rows == [("pass", "latency_p95_ms"), ("fail", "size_mb")]
    assert ">FAIL<" in page and "-5.000" in page  # the failed budget's margin
    svgs = _svgs(page)
    assert len(svgs) == 3 and all(svg.findall(f".//{SVG_NS}g[@class]") for svg in svgs)
    assert not re.search(r"(src|href)=['\"](https?:)?//", page)  # nothing fetched at view time


def test_write_html_report_also_writes_the_main_figure_as_a_standalone_svg(tmp_path: Path) -> None:
    write_html_report(make_report(), tmp_path)
    figure = ET.parse(tmp_path / MAIN_FIGURE).getroot()
    assert figure.tag == f"{SVG_NS}svg"
    titles = [t.text for t in figure.iter(f"{SVG_NS}title")]
    assert any("int8" in (t or "") for t in titles) and any("baseline" in (t or "") for t in titles)
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_search_page_gets_its_trials_front_and_extra_sections() -> None:
    trials = [Point(f"t{i}", x, y, "trial") for i, (x, y) in enumerate([(1, 3), (2, 1), (3, 0.5), (2.5, 2), (4, 0.4)])]
    front = pareto_front(trials)
    assert [p.label for p in front] == ["t0", "t1", "t2", "t4"]
    plot = scatter_svg(trials, front=front, reference_points=[Point("fp32", 5, 0, "baseline")])
    root = ET.fromstring(plot)
    [line] = root.findall(f".//{SVG_NS}g[@class='front']/{SVG_NS}polyline")
    assert len(line.get("points", "").split()) == 2 * len(front) - 1  # a step line through the front
    page = render_html(make_report(), main_plot=plot, extra_sections=[Section("Trials", "<p>42 trials</p>", "trials")])
    assert "<p>42 trials</p>" in page and page.count("class='front'") == 1


def test_text_from_the_report_is_escaped() -> None:
    report = make_report().model_copy(update={"warnings": ["<script>alert(1)</script>"]})
    page = render_html(report)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_margin_is_positive_inside_a_limit_and_negative_outside() -> None:
    report = make_report()
    inside = BudgetResult(name="latency_p95_ms", kind="max", limit=12.0, measured=10.0, status="pass")
    outside = BudgetResult(name="throughput_sps", kind="min", limit=200.0, measured=100.0, status="fail")
    assert budget_margin(inside, report) == 2.0 and budget_margin(outside, report) == -100.0


def test_a_fallback_judged_on_agreement_without_labels_renders_every_candidate_and_its_metrics() -> None:
    """The quality fallback on unlabelled images has no accuracy or drop: the page and report.md show the budgets'
    metrics (agreement here) per candidate instead of failing on a missing drop."""
    from slimline.benchmarking.report import render_markdown

    candidate = {"excluded": [], "metrics": {"agreement_pct": 71.0}, "failing": ["agreement_pct"],
                 "latency_p50_ms": 2.0, "size_mb": 1.0, "variant": "percentile calibration", "accuracy_pct": None,
                 "drop_pt": None, "drop_upper_pt": None}
    chosen = {**candidate, "excluded": ["/fc/Gemm"], "metrics": {"agreement_pct": 100.0}, "failing": [],
              "variant": "percentile calibration + first/last layers in float"}
    fallback = {"budgets": {"agreement_pct": "min 99"}, "candidates": [candidate, chosen], "chosen": 1,
                "met_budget": True, "stopped_by": "budget met", "selection": "the only candidate", "examples": 100}
    report = make_report().model_copy(update={"accuracy_fallback": fallback})
    page = render_html(report)
    assert "Quality fallback" in page and "first/last layers in float" in page and "agreement_pct on validation" in page
    markdown = render_markdown(report)
    assert "| 1 (chosen) | percentile calibration + first/last layers in float | 1 | 100.0000 | yes |" in markdown
    assert "no: agreement_pct" in markdown and "against agreement_pct min 99" in markdown
