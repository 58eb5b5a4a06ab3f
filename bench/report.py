"""The run report: report.json (machine-readable, schema-versioned) and report.md (for people)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from slimline.bench.budgets import BudgetResult, Verdict
from slimline.bench.decode import DECODE_HEADER, decode_rows
from slimline.bench.results_model import CandidateResult
from slimline.core.artifact import atomic_write_text

REPORT_SCHEMA_VERSION = 1


class StageRecord(BaseModel):
    name: str
    kind: str
    directory: str
    manifest_sha256: str
    reused: bool
    seconds: float


class Report(BaseModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    created_at: str
    machine: dict[str, Any]
    versions: dict[str, str]
    profile: dict[str, Any]
    recipe: list[dict[str, Any]]
    checkpoint: str
    stages: list[StageRecord]
    eval_data: dict[str, Any] | None
    baseline: CandidateResult
    measurements: CandidateResult
    intermediates: list[CandidateResult] = Field(default_factory=list)
    speedup_vs_baseline: float | None
    accuracy_drop_pt: float | None
    budgets: list[BudgetResult]
    verdict: Verdict
    accuracy_fallback: dict[str, Any] | None = None  # every candidate the accuracy search measured
    search: dict[str, Any] | None = None  # `slimline search`: the trials, the front, the choice and why
    #: CPU targets: the baseline and candidates timed again round-robin in one process (slimline.pipeline.side_by_side)
    side_by_side: dict[str, Any] | None = None
    #: `target.runtime: auto`: every candidate runtime timed side by side, scored, and why one was chosen
    runtime_choice: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_rows(report: Report) -> list[list[str]]:
    rows = []
    for result in [report.baseline, *report.intermediates, report.measurements]:
        stats = result.primary_latency()
        low, high = stats.p50_ci95_ms
        rows.append([
            result.label, result.runtime, _fmt(stats.p50_ms), f"[{low:.2f}, {high:.2f}]", _fmt(stats.p95_ms),
            _fmt(stats.p99_ms), _fmt(stats.cv), _fmt(stats.throughput_sps, 1), _fmt(result.size_mb, 1),
            _fmt(result.peak_rss_mb, 0), _fmt(result.accuracy_pct), _drop(result),
            _fmt(result.speedup_vs_baseline) if result is not report.baseline else "1.00",
        ])
    return rows


COMPARISON_HEADER = ["model", "runtime", "p50 ms", "p50 95% CI", "p95 ms", "p99 ms", "cv", "samples/s",
                     "size MB", "peak RSS MB", "accuracy %", "drop pt ± SE", "speed-up"]


def _drop(result: CandidateResult) -> str:
    """The drop with its paired standard error: 0.5 pt on 400 examples is often within the noise."""
    if result.accuracy_drop_pt is None or result.accuracy_drop_se_pt is None:
        return _fmt(result.accuracy_drop_pt)
    return f"{result.accuracy_drop_pt:.2f} ± {result.accuracy_drop_se_pt:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    machine = report.machine
    shape = next(iter(report.measurements.latency))
    budget_rows = [[b.name, f"{b.kind} {b.limit:g}", _fmt(b.measured, 3), b.status.upper(), b.spread or "",
                    b.note] for b in report.budgets]
    parts = [
        f"# slimline report: {report.profile['name']} - verdict **{report.verdict.upper()}**",
        "",
        f"- checkpoint: `{report.checkpoint}`",
        f"- created: {report.created_at}",
        f"- machine: {machine.get('cpu_model')} ({machine.get('cpu_count')} cores, "
        f"flags: {', '.join(machine.get('cpu_flags', []))}), {machine.get('os')}",
        f"- threads: {report.profile['target']['threads']}, shape: {shape}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report.versions.items())}",
        f"- recipe: {', '.join(step['pass'] for step in report.recipe) or '(none)'}",
        "",
        "## Measurements (same run, same inputs)",
        "",
        "![accuracy drop vs latency](report-tradeoff.svg) (plots: `report.html`)",
        "",
        markdown_table(COMPARISON_HEADER, comparison_rows(report)),
        "",
    ]
    generated = decode_rows([report.baseline, *report.intermediates, report.measurements])
    if generated:  # decoder LLMs: the latency above is the prefill; decoding from the KV cache is timed apart
        parts += ["## Prefill and decode (KV cache)", "", markdown_table(DECODE_HEADER, generated), ""]
    parts += [
        "## Budgets",
        "",
        markdown_table(["budget", "limit", "measured", "status", "spread", "note"], budget_rows),
    ]
    if report.eval_data:
        parts += ["", f"Accuracy on {report.eval_data['examples']} examples of "
                      f"{report.eval_data['dataset']['source']} / {report.eval_data['dataset']['split']} "
                      f"(sha256 {report.eval_data['examples_sha256'][:12]}), each model run as exported."]
    if report.accuracy_fallback and report.accuracy_fallback.get("candidates"):
        parts += ["", "## Accuracy-aware fallback (validation split)", "", fallback_markdown(report.accuracy_fallback)]
    if report.side_by_side:
        parts += ["", "## Side by side (round-robin in one process)", "", side_by_side_markdown(report.side_by_side)]
    if report.search:
        parts += ["", "## Search", "", search_markdown(report.search)]
    if report.runtime_choice:
        from slimline.bench.reporting.runtime_choice import runtime_choice_markdown

        parts += ["", "## Runtime choice", "", runtime_choice_markdown(report.runtime_choice)]
    if report.warnings:
        parts += ["", "## Warnings", "", *[f"- {w}" for w in report.warnings]]
    return "\n".join(parts) + "\n"


def side_by_side_markdown(side_by_side: dict[str, Any]) -> str:
    rows = []
    for label, stats in side_by_side["latency"].items():
        ratio = side_by_side["speedup_vs_baseline"].get(label)
        rows.append([label, _fmt(stats["p50_ms"]), f"[{stats['p50_ci95_ms'][0]:.2f}, {stats['p50_ci95_ms'][1]:.2f}]",
                     _fmt(stats["p95_ms"]), "1.00" if ratio is None else _fmt(ratio)])
    return (f"{side_by_side['rounds']} rounds, one iteration of each model per round in a shuffled order, idle "
            "thread pools not spinning: the ratios a busy machine cannot reorder.\n\n"
            + markdown_table(["model", "p50 ms", "p50 95% CI", "p95 ms", "speed-up"], rows))


def search_markdown(search: dict[str, Any]) -> str:
    """The search's choice in a few lines; trials.md in the same directory has every trial."""
    latency = search.get("rebench", {}).get("latency", {})
    rows = [[label, _fmt(stats["p50_ms"]), f"[{stats['p50_ci95_ms'][0]:.2f}, {stats['p50_ci95_ms'][1]:.2f}]",
             _fmt(stats["p95_ms"])] for label, stats in latency.items()]
    lines = [f"- {search['trials']} trials over `{search['space']}`; chosen: trial {search['chosen_trial']} "
             f"({search['chosen_recipe']}): {search['why']}.",
             f"- acceptance on accuracy: {search['acceptance']}.",
             *([f"- resolution: {search['resolution']}"] if search.get("resolution") else []),
             *[f"- {note}" for note in search.get("notes", [])],
             "- the Pareto front, every trial and a plot: `trials.md`, `trials.json`, `front.png`; the best "
             "artifact and its recipe: `best/`.",
             "", "Re-timed side by side (round-robin in one process) before choosing:", "",
             markdown_table(["model", "p50 ms", "p50 95% CI", "p95 ms"], rows)]
    return "\n".join(lines)


def fallback_markdown(search: dict[str, Any]) -> str:
    rows = []
    for index, candidate in enumerate(search["candidates"]):
        chosen = " (chosen)" if index == search["chosen"] else ""
        rows.append([f"{index}{chosen}", candidate.get("variant", "as configured"), str(len(candidate["excluded"])),
                     f"{candidate['accuracy_pct']:.2f}",
                     f"{candidate['drop_pt']:.2f}", f"{candidate['drop_upper_pt']:.2f}",
                     f"{candidate['latency_p50_ms']:.2f}",
                     f"{candidate['size_mb']:.1f}"])
    header = (f"Search target: drop + z·SE <= {search['budget_pt']:g} pt (paired standard error) vs fp32 "
              f"{search['reference_accuracy_pct']:.2f}%: "
              f"{'met' if search['met_budget'] else 'NOT met'} ({search['stopped_by']}).")
    if search.get("selection"):
        header += f" Chosen: {search['selection']}."
    if search.get("resolution"):
        header += f" Resolution: {search['resolution']}."
    if search.get("skipped_settings"):
        header += f" Settings the quantizer could not apply: {'; '.join(search['skipped_settings'])}."
    header += "\n\n"
    return header + markdown_table(["candidate", "setting", "nodes in float", "accuracy %", "drop pt", "drop + z·SE pt",
                                    "p50 ms (quick)", "size MB"], rows)


def write_results(directory: Path, name: str, report_json: str, markdown: str) -> tuple[Path, Path]:
    """Write NAME.json and NAME.md, each atomically (benchmark results quoted in issues)."""
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    atomic_write_text(json_path, report_json)
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """report.json, report.md, and report.html with its main figure report-tradeoff.svg (bench.reporting)."""
    from slimline.bench.reporting.html_report import write_html_report

    write_html_report(report, out_dir)  # first: report.md links the figure it writes
    return write_results(out_dir, "report", report.model_dump_json(indent=2) + "\n", render_markdown(report))
