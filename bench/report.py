"""The run report: report.json (machine-readable, schema-versioned) and report.md (for people)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from slimline.benchmarking.budgets import BudgetResult, Verdict
from slimline.benchmarking.decode import DECODE_HEADER, decode_rows
from slimline.benchmarking.results_model import CandidateResult
from slimline.core.artifact import atomic_write_text

#: 2: budgets judged on side-by-side timing (status `inconclusive`, each row's interval and measurement), the
#: alone speed-ups in `*_alone`, real input shapes in labels, the command line. Version 1 reports still load.
REPORT_SCHEMA_VERSION = 2


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
    #: How the models were timed together (slimline.pipeline.side_by_side): {measured: true, method, rounds,
    #: blocks, latency, speedup_vs_baseline, speedup_ci95 ...}, or {measured: false, reason} (a GPU target).
    side_by_side: dict[str, Any] | None = None
    #: Static quantization's calibration set: source, split, examples, sha256 (compress.calibration).
    calibration: dict[str, Any] | None = None
    #: Optional recipe steps that did not run, and why: {step, pass, reason, line}
    skipped_steps: list[dict[str, Any]] = Field(default_factory=list)
    #: `target.runtime: auto`: every candidate runtime timed side by side, scored, and why one was chosen
    runtime_choice: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)
    #: The command that made this report (`slimline run ...`); None through the Python API. run.yaml beside
    #: report.json reproduces the run either way (`slimline run --config run.yaml`).
    command_line: str | None = None
    #: The file beside report.json that reproduces the run (`run.yaml`), where one was written.
    run_config: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade_version_1(cls, data: Any) -> Any:
        """Version 1: speed-ups were timed alone and side_by_side was a one-iteration round-robin, never judged."""
        if not isinstance(data, dict) or data.get("schema_version", 1) != 1:
            return data
        data = dict(data)
        for key in ("baseline", "measurements"):
            if isinstance(data.get(key), dict):
                data[key] = _alone_speedups(data[key])
        if isinstance(data.get("intermediates"), list):
            data["intermediates"] = [_alone_speedups(r) if isinstance(r, dict) else r for r in data["intermediates"]]
        if isinstance(data.get("side_by_side"), dict):
            data["side_by_side"] = {"measured": True, "method": "round-robin, one iteration per model per round "
                                    "(report version 1; not used by its verdict)", **data["side_by_side"]}
        return data


def _alone_speedups(result: dict[str, Any]) -> dict[str, Any]:
    result = dict(result)
    result.setdefault("speedup_vs_baseline_alone", result.get("speedup_vs_baseline"))
    result.setdefault("decode_speedup_vs_baseline_alone", result.get("decode_speedup_vs_baseline"))
    return result


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_rows(report: Report) -> list[list[str]]:
    """Each model timed alone (its own worker process, one after another), with its size, memory and quality."""
    rows = []
    for result in [report.baseline, *report.intermediates, report.measurements]:
        stats = result.primary_latency()
        low, high = stats.p50_ci95_ms
        alone = result.speedup_vs_baseline_alone if result.speedup_vs_baseline_alone is not None \
            else result.speedup_vs_baseline
        rows.append([
            result.label, result.runtime, _fmt(stats.p50_ms), f"[{low:.2f}, {high:.2f}]", _fmt(stats.p95_ms),
            _fmt(stats.p99_ms), _fmt(stats.cv), _fmt(stats.throughput_sps, 1), _fmt(result.size_mb, 1),
            _fmt(result.peak_rss_mb, 0), _fmt(result.accuracy_pct), _drop(result),
            _fmt(alone) if result is not report.baseline else "1.00",
        ])
    return rows


COMPARISON_HEADER = ["model", "runtime", "p50 ms alone", "p50 95% CI", "p95 ms alone", "p99 ms alone", "cv",
                     "samples/s alone", "size MB", "peak RSS MB", "accuracy %", "drop pt ± SE", "speed-up alone"]
SIDE_BY_SIDE_HEADER = ["model", "p50 ms", "p50 95% CI", "p95 ms", "p95 95% CI", "samples/s", "speed-up",
                       "speed-up 95% CI", "n", "block"]


def _interval(interval: tuple[float, float] | None, digits: int = 2) -> str:
    return "-" if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def side_by_side_rows(report: Report) -> list[list[str]]:
    """Each model as the verdict saw it: timed side by side with the others, intervals over rounds."""
    blocks = (report.side_by_side or {}).get("blocks", {})
    rows = []
    for result in [report.baseline, *report.intermediates, report.measurements]:
        stats = result.side_by_side_latency
        if stats is None:
            continue
        speedup = result.side_by_side.get("speedup_vs_baseline")
        block = blocks.get(result.label)
        rows.append([result.label, _fmt(stats.p50_ms), _interval(stats.p50_ci95_ms), _fmt(stats.p95_ms),
                     _interval(stats.interval_of("p95")), _fmt(stats.throughput_sps, 1),
                     "1.00" if speedup is None else _fmt(speedup.value), "-" if speedup is None else
                     _interval(speedup.ci95), str(stats.iterations),
                     "-" if block is None else f"{block['dropped']} dropped + {block['kept']} kept"])
    return rows


def budget_rows(report: Report) -> list[list[str]]:
    return [[b.name, f"{b.kind} {b.limit:g}", _fmt(b.measured, 3), _interval(b.interval, 3), b.status.upper(),
             (b.measurement or "").replace("_", " "), b.spread or "", b.note] for b in report.budgets]


BUDGET_HEADER = ["budget", "limit", "measured", "95% interval", "status", "measurement", "spread", "note"]


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
        f"- command: `{report.command_line}`" if report.command_line else "- command: the Python API",
        *([f"- reproduce: `slimline run --config {report.run_config}` (beside this report)"] if report.run_config
          else []),
        *[f"- skipped: {skipped['line']}" for skipped in report.skipped_steps],
        "",
        "## Budgets",
        "",
        markdown_table(BUDGET_HEADER, budget_rows(report)),
        "",
        timing_sentence(report),
        "",
    ]
    side_by_side = side_by_side_rows(report)
    if side_by_side:
        parts += ["## Side by side (what the verdict judged)", "", side_by_side_markdown(report), "",
                  markdown_table(SIDE_BY_SIDE_HEADER, side_by_side), ""]
    parts += [
        "## Measurements (same run, same inputs; latency timed alone, each model in its own process)",
        "",
        "![accuracy drop vs latency](report-tradeoff.svg) (plots: `report.html`)",
        "",
        markdown_table(COMPARISON_HEADER, comparison_rows(report)),
        "",
    ]
    generated = decode_rows([report.baseline, *report.intermediates, report.measurements])
    if generated:  # decoder LLMs: the latency above is the prefill; decoding from the KV cache is timed apart
        parts += ["## Prefill and decode (KV cache, timed alone)", "", markdown_table(DECODE_HEADER, generated), ""]
    if report.eval_data:
        parts += ["", f"Accuracy on {report.eval_data['examples']} examples of "
                      f"{report.eval_data['dataset']['source']} / {report.eval_data['dataset']['split']} "
                      f"(sha256 {report.eval_data['examples_sha256'][:12]}), each model run as exported."]
    if report.calibration:
        parts += ["", calibration_line(report.calibration)]
    quality = quality_markdown(report)
    if quality:
        parts += ["", "## Quality per output (vs the baseline, same inputs)", "", quality]
    if report.accuracy_fallback and report.accuracy_fallback.get("candidates"):
        parts += ["", "## Quality fallback (validation split)", "", fallback_markdown(report.accuracy_fallback)]
    if report.search:
        parts += ["", "## Search", "", search_markdown(report.search)]
    if report.runtime_choice:
        from slimline.benchmarking.reporting.runtime_choice import runtime_choice_markdown

        parts += ["", "## Runtime choice", "", runtime_choice_markdown(report.runtime_choice)]
    if report.warnings:
        parts += ["", "## Warnings", "", *[f"- {w}" for w in report.warnings]]
    return "\n".join(parts) + "\n"


def timing_sentence(report: Report) -> str:
    """Which timing the latency and speed-up budgets were judged on, in one sentence."""
    side_by_side = report.side_by_side or {}
    if side_by_side.get("measured") and side_by_side.get("method") == "block-interleaved":
        return (f"Timing budgets are judged on the side-by-side timing ({side_by_side['rounds']} rounds): a budget "
                "passes or fails only when its whole 95% interval is on one side of the limit, else it is "
                "INCONCLUSIVE. The alone timings (each model in its own process) are for reference.")
    if side_by_side.get("reason"):
        return f"Timing budgets are judged on each model timed alone: {side_by_side['reason']}."
    return "Timing budgets are judged on each model timed alone."


def side_by_side_markdown(report: Report) -> str:
    side_by_side = report.side_by_side or {}
    decode = side_by_side.get("decode")
    text = (f"{side_by_side.get('rounds')} rounds in {side_by_side.get('seconds')} s, input "
            f"{side_by_side.get('shape')}: "
            "in each round every model runs one block of consecutive iterations (its first iterations dropped: "
            "they pay for the switch from the previous model), in a shuffled order, each runtime with its own "
            f"threading ({side_by_side.get('threading')}). Intervals resample whole rounds; a speed-up's resamples "
            "pair the baseline and the candidate round by round, so a load both shared cancels.")
    if decode:
        rows = [[label, str(d["prompt_tokens"]), _fmt(d["prefill_p50_ms"]), str(d["new_tokens"]),
                 _fmt(d["decode_tokens_per_s"], 1), str(d["generations"])] for label, d in decode.items()]
        text += (f"\n\nDecoded side by side ({side_by_side.get('decode_rounds')} rounds, greedy generations from the "
                 "KV cache):\n\n" + markdown_table(["model", "prompt tokens", "prefill p50 ms", "new tokens",
                                                     "decode tokens/s", "generations"], rows))
    return text


def calibration_line(calibration: dict[str, Any]) -> str:
    return (f"Calibrated on {calibration.get('examples', '?')} examples of {calibration.get('source')} / "
            f"{calibration.get('split')} (sha256 {str(calibration.get('sha256', ''))[:12]}), disjoint from the "
            "examples above.")


def quality_markdown(report: Report) -> str:
    """One row per output and model: each output's kind and the metrics that fit it (metric@output keys)."""
    outputs = (report.eval_data or {}).get("outputs") or []
    if not outputs:
        return ""
    rows = []
    for result in [*report.intermediates, report.measurements]:
        for output in outputs:
            suffix = f"@{output['name']}"
            metrics = {k.removesuffix(suffix): v for k, v in result.quality.items() if k.endswith(suffix)}
            shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())) or "(not compared)"
            rows.append([result.label, output["name"], output["kind"], shown])
    return markdown_table(["model", "output", "kind", "metrics vs the baseline"], rows)


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
    """Every candidate the quality fallback measured: its setting, float nodes, the budgets' metrics, speed, size."""
    budgets = search.get("budgets") or {"accuracy_drop_pt": f"max {search.get('budget_pt')}"}
    rows = []
    for index, candidate in enumerate(search["candidates"]):
        chosen = " (chosen)" if index == search["chosen"] else ""
        metrics = candidate.get("metrics") or {"accuracy_drop_pt": candidate.get("drop_pt")}
        rows.append([f"{index}{chosen}", candidate.get("variant", "as configured"), str(len(candidate["excluded"])),
                     *[_fmt(metrics.get(name), 4) for name in budgets],
                     "yes" if not candidate.get("failing") else "no: " + ", ".join(candidate["failing"]),
                     f"{candidate['latency_p50_ms']:.2f}", f"{candidate['size_mb']:.1f}"])
    wanted = ", ".join(f"{name} {limit}" for name, limit in budgets.items())
    header = (f"Judged on {search.get('examples', '?')} validation examples against {wanted} (drops + z·SE, "
              f"agreement - z·SE): {'met' if search['met_budget'] else 'NOT met'} ({search['stopped_by']}).")
    if search.get("reference_accuracy_pct") is not None:
        header += f" fp32 accuracy {search['reference_accuracy_pct']:.2f}%."
    if search.get("selection"):
        header += f" Chosen: {search['selection']}."
    if search.get("resolution"):
        header += f" Resolution: {search['resolution']}."
    if search.get("skipped_settings"):
        header += f" Settings the quantizer could not apply: {'; '.join(search['skipped_settings'])}."
    if search.get("left_to_bench"):
        header += f" Judged by the benchmark only: {', '.join(search['left_to_bench'])}."
    header += "\n\n"
    return header + markdown_table(["candidate", "setting", "nodes in float", *budgets, "meets budgets",
                                    "p50 ms (quick)", "size MB"], rows)


def write_results(directory: Path, name: str, report_json: str, markdown: str) -> tuple[Path, Path]:
    """Write NAME.json and NAME.md, each atomically (benchmark results quoted in issues)."""
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    atomic_write_text(json_path, report_json)
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """report.json, report.md, and report.html with its main figure report-tradeoff.svg (bench.reporting)."""
    from slimline.benchmarking.reporting.html_report import write_html_report

    write_html_report(report, out_dir)  # first: report.md links the figure it writes
    return write_results(out_dir, "report", report.model_dump_json(indent=2) + "\n", render_markdown(report))
