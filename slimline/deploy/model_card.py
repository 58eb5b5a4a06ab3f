"""The bundle's model card (README.md): target, recipe, and what was measured, with its spread.

Accuracy's spread is a Wilson 95% interval over the number of evaluated examples (the report does not
resample accuracy); latency's is the bootstrap 95% CI of the median and the coefficient of variation
that the benchmark recorded.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from slimline.benchmarking.report import Report, markdown_table
from slimline.deploy.runtime import bundle_runtime
from slimline.formats.inputs import shape_label

if TYPE_CHECKING:
    from slimline.deploy.manifest import BundleManifest

Z_95 = 1.959964


def wilson_interval_pct(accuracy_pct: float, examples: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent."""
    if examples <= 0:
        return (float("nan"), float("nan"))
    p, n, z2 = accuracy_pct / 100, examples, Z_95 * Z_95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


def _recipe_lines(manifest: BundleManifest, report: Report | None) -> list[str]:
    if report is not None:
        steps = [(s["pass"], s.get("with", {})) for s in report.recipe]
        intro = ["Passes, in order (the ONNX export runs before the first ONNX-level one):"] if steps else [
            "No compression passes: the plain export."]
        return [*intro, *[f"{i}. `{name}` {json.dumps(config, sort_keys=True)}" for i, (name, config)
                          in enumerate(steps, start=1)]]
    steps = [s for s in manifest.lineage if s.kind != "source"]
    return ["Steps from the lineage:", *[f"{i}. `{s.name}` ({s.kind}) {json.dumps(s.config, sort_keys=True)}"
                                         for i, s in enumerate(steps, start=1)]]


def _measured_lines(report: Report) -> list[str]:
    final, stats = report.measurements, report.measurements.primary_latency()
    shape = next(iter(final.latency))
    low, high = stats.p50_ci95_ms
    latency_spread = f"p50 95% CI [{low:.2f}, {high:.2f}] ms, cv {stats.cv:.2f}, n={stats.iterations}"
    rows = [
        [f"latency p50 ({shape}, timed alone)", f"{stats.p50_ms:.2f} ms", latency_spread],
        [f"latency p95 ({shape})", f"{stats.p95_ms:.2f} ms", f"min {stats.min_ms:.2f}, max {stats.max_ms:.2f} ms"],
        [f"latency p99 ({shape})", f"{stats.p99_ms:.2f} ms", f"stdev {stats.stdev_ms:.2f} ms"],
        ["throughput", f"{stats.throughput_sps:.1f} samples/s", f"batch {stats.batch_size}"],
        ["engine size", f"{final.size_mb:.1f} MB", ""],
        ["peak RSS", f"{final.peak_rss_mb:.0f} MB", ""],
    ]
    if final.accuracy_pct is not None:
        examples = int((report.eval_data or {}).get("examples", 0))
        lo, hi = wilson_interval_pct(final.accuracy_pct, examples)
        dataset = (report.eval_data or {}).get("dataset", {})
        rows.append(["accuracy", f"{final.accuracy_pct:.2f} %", f"95% CI [{lo:.2f}, {hi:.2f}] (Wilson, n={examples} "
                     f"{dataset.get('source', '?')}/{dataset.get('split', '?')})"])
    if final.accuracy_drop_pt is not None and report.baseline.accuracy_pct is not None:
        rows.append(["accuracy drop vs fp32", f"{final.accuracy_drop_pt:.2f} pt",
                     f"baseline {report.baseline.accuracy_pct:.2f} % on the same examples"])
    figure = final.side_by_side.get("speedup_vs_baseline")
    if figure is not None and figure.ci95 is not None:  # what the verdict judged: timed side by side
        rows.append(["speed-up vs fp32 (p50)", f"{figure.value:.2f}x",
                     f"timed side by side with {report.baseline.label}, 95% CI [{figure.ci95[0]:.2f}, "
                     f"{figure.ci95[1]:.2f}], {figure.rounds} rounds"])
    elif final.speedup_vs_baseline is not None:
        base = report.baseline.primary_latency()
        rows.append(["speed-up vs fp32 (p50)", f"{final.speedup_vs_baseline:.2f}x",
                     f"timed alone; baseline {report.baseline.label}: p50 {base.p50_ms:.2f} ms"])
    machine = report.machine
    budget_rows = [[b.name, f"{b.kind} {b.limit:g}", "-" if b.measured is None else f"{b.measured:.3f}",
                    b.status.upper()] for b in report.budgets]
    return [
        f"Measured by `slimline` on {machine.get('cpu_model')} ({machine.get('cpu_count')} cores), "
        f"{report.created_at}; verdict **{report.verdict.upper()}**.",
        "",
        markdown_table(["metric", "value", "spread"], rows),
        "",
        markdown_table(["budget", "limit", "measured", "status"], budget_rows),
        "",
        "Full numbers: `report.json` / `report.md` in this bundle.",
    ]


def render_model_card(manifest: BundleManifest, report: Report | None, figure_file: str | None = None) -> str:
    """The card; `figure_file` (the report's main plot, in the bundle) is embedded under Measured."""
    target = manifest.profile.target
    caveat = bundle_runtime(manifest.format).triton_caveat(manifest.model_metadata)
    lineage_rows = [[str(i), s.kind, s.name, (s.parent_manifest_sha256 or "-")[:12]]
                    for i, s in enumerate(manifest.lineage)]
    source = next((s for s in manifest.lineage if s.kind == "source"), None)
    source_path = report.checkpoint if report is not None else (source.config.get("path") if source else None)
    parts = [
        f"# {manifest.name}",
        "",
        f"A slimline deployment bundle: a {manifest.task} model as "
        f"{bundle_runtime(manifest.format).engine_description} for "
        f"{manifest.runtime.name} {manifest.runtime.version}.",
        "",
        markdown_table(["", ""], [
            ["model version", f"`{manifest.model_version}` (sha256 prefix of the engine)"],
            ["engine", f"`{manifest.engine}`"],
            ["target", f"{target.device}, {target.runtime}, {target.threads} threads, {target.precision}"],
            ["profile", f"`{manifest.profile.name}`: {manifest.profile.description}"],
            ["shapes", ", ".join(shape_label(manifest.inputs, s, {}) for s in manifest.profile.shapes)],
            ["labels", ", ".join(manifest.labels) or "-"],
            ["source", f"`{source.name}` {source_path or ''}" if source else "-"],
            ["packaged", manifest.created_at],
        ]),
        "",
        "## Recipe",
        "",
        *_recipe_lines(manifest, report),
        "",
        "## Measured",
        "",
        *([f"![accuracy drop vs latency]({figure_file})", "",
           "Every plot (latency distributions, size, the accuracy fallback): `report.html` in this bundle, "
           "self-contained, opens offline.", ""] if figure_file and report is not None else []),
        *(_measured_lines(report) if report is not None else [
            "**Not benchmarked**: this bundle was packaged from a model directory without a bench report. "
            "Package a `slimline run` directory, or run `slimline bench` and package that, to state "
            "latency and accuracy here."]),
        "",
        "## Use",
        "",
        "```",
        "slimline verify BUNDLE                  # hashes, format, runtime version, a real load",
        "slimline serve BUNDLE --port 8000       # POST /v1/predict, GET /health, GET /metrics",
        *([] if caveat else ["tritonserver --model-repository BUNDLE/model_repository"]),
        "```",
        "",
        *([f"**Not for Triton as it stands**: {caveat}.", ""] if caveat else []),
        "## Lineage",
        "",
        markdown_table(["#", "kind", "step", "parent manifest"], lineage_rows),
        "",
        f"Every file's sha256, the library versions and the machine are in `manifest.json` "
        f"({len(manifest.versions)} libraries recorded).",
    ]
    return "\n".join(parts) + "\n"
