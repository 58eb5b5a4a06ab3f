"""The HTML report of `slimline search`: every trial on the trade-off plot with the Pareto front, and the table.

The report's `search` field carries the trials' screened figures (validation drop, normalised latency,
size); the chosen trial is the report's own artifact, so the page reads like a run's report with the
search around it.
"""

from __future__ import annotations

from html import escape
from typing import Any

from slimline.benchmarking.reporting.page import html_table
from slimline.benchmarking.reporting.svg import Point, scatter_svg


def trial_points(search: dict[str, Any]) -> tuple[list[Point], list[Point], list[Point]]:
    """(trials, front, references): drop vs normalised latency for every trial that finished."""
    points, front = [], []
    chosen = search.get("chosen_trial")
    for trial in search.get("points", []):
        kind = "chosen" if trial["number"] == chosen else "trial"
        tip = (f"trial {trial['number']}: {trial['recipe']} - p50 {trial['latency_p50_ms']:.2f} ms, drop "
               f"{trial['drop_pt']:.2f} ± {trial['drop_se_pt']:.2f} pt, {trial['size_mb']:.1f} MB"
               + ("" if trial["passes"] else " (misses a budget)"))
        point = Point(f"#{trial['number']}", trial["latency_p50_ms"], trial["drop_pt"], kind, tip,
                      y_err=(trial["drop_pt"] - trial["drop_se_pt"], trial["drop_pt"] + trial["drop_se_pt"]))
        points.append(point)
        if trial["on_front"]:
            front.append(point)
    reference = search.get("reference", {})
    references = [Point(label, reference[key], 0.0, "baseline", f"{label}: p50 {reference[key]:.2f} ms")
                  for label, key in (("torch fp32", "torch_p50_ms"), ("ORT fp32", "onnx_p50_ms")) if key in reference]
    return points, front, references


def search_plot_svg(search: dict[str, Any], budget_pt: float | None, latency_budget_ms: float | None) -> str:
    points, front, references = trial_points(search)
    return scatter_svg(points, front=front, reference_points=references, x_limit=latency_budget_ms,
                       y_limit=budget_pt, x_label="latency p50 (ms, normalised to the fp32 export)",
                       y_label="validation accuracy drop vs fp32 (pt)", title="Search trials and the Pareto front")


def search_section_html(search: dict[str, Any]) -> str:
    rows, classes = [], []
    for trial in search.get("points", []):
        rows.append([str(trial["number"]), escape(trial["recipe"]), f"{trial['latency_p50_ms']:.2f}",
                     f"{trial['size_mb']:.1f}", f"{trial['drop_pt']:.2f} ± {trial['drop_se_pt']:.2f}",
                     f"{trial['agreement_pct']:.2f}", "yes" if trial["passes"] else "no",
                     ("chosen " if trial["number"] == search.get("chosen_trial") else "")
                     + ("front" if trial["on_front"] else "")])
        classes.append("pass" if trial["passes"] else "fail")
    notes = "".join(f"<li>{escape(note)}</li>" for note in [
        f"chosen: trial {search.get('chosen_trial')} ({search.get('chosen_recipe', '')}): {search.get('why', '')}",
        f"acceptance on accuracy: {search.get('acceptance', '')}", search.get("resolution", ""),
        *search.get("notes", [])] if note)
    table = html_table(["trial", "recipe", "p50 ms (normalised)", "size MB", "val. drop pt ± SE", "agreement %",
                        "passes budgets", ""], rows, classes, "search-trials")
    return f"<ul>{notes}</ul>{table}"
