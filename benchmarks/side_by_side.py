"""What the vision and plain-module benchmarks share: one `run` of a plain module, then round-robin rounds of the
same candidates (each round: every model in its own worker, in turn), so a slow patch on a shared machine hits
all of them and the ratios of per-round medians stay fair."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from slimline.benchmarking.benchmark import Candidate, measure
from slimline.benchmarking.report import Report, markdown_table, render_markdown
from slimline.core.artifact import ModelDir
from slimline.core.machine import cpu_flags, has_vnni
from slimline.profiles.schema import Profile


def candidates_of(report: Report) -> tuple[Candidate, list[Candidate]]:
    """The run's baseline (the user's module on torch) and its ONNX stages (fp32 export, then the passes)."""
    baseline = Candidate("torch fp32 eager (the user's module)", ModelDir.open(report.baseline.model_dir), "torch")
    stages = [ModelDir.open(stage.directory) for stage in report.stages]
    labels = ["onnxruntime fp32" if s.manifest.lineage[-1].name == "export.onnx" else s.manifest.lineage[-1].name
              for s in stages]
    return baseline, [Candidate(label, stage, "onnxruntime") for label, stage in zip(labels, stages, strict=True)]


def rounds(baseline: Candidate, candidates: list[Candidate], profile: Profile, count: int) -> list[dict[str, float]]:
    """p50 ms of every model in each of `count` round-robin rounds (latency only: quality is measured once)."""
    inputs = candidates[0].model.manifest.inputs
    measured = []
    for _ in range(count):
        base, results = measure(candidates, baseline, profile, inputs, None)
        measured.append({r.label: r.primary_latency().p50_ms for r in [base, *results]})
    return measured


def ratio(measured: list[dict[str, float]], slow: str, fast: str) -> dict[str, Any]:
    per_round = [r[slow] / r[fast] for r in measured]
    return {"median": statistics.median(per_round), "per_round": per_round}


def machine_note() -> str:
    flags = ", ".join(cpu_flags())
    return (f"CPU flags: {flags}; int8 dot product (VNNI): {'yes' if has_vnni() else 'no'}. The machine was shared "
            "with other jobs (2 cores); latencies are per-round p50s of workers run in turn, ratios are medians of "
            "per-round ratios.")


def render(title: str, intro: list[str], report: Report, measured: list[dict[str, float]],
           summary: list[str]) -> str:
    labels = list(measured[0])
    rows = [[str(i + 1), *[f"{r[label]:.3f}" for label in labels]] for i, r in enumerate(measured)]
    batch = report.profile["shapes"][0]["batch_size"]
    parts = [f"# {title}", "", *intro, "", *[f"- {line}" for line in summary], "",
             f"## Round-robin latency (p50 ms, batch {batch})", "", markdown_table(["round", *labels], rows), "",
             "## The `slimline run` (verdict, quality, budgets)", "", run_markdown(report)]
    return "\n".join(parts)


def run_markdown(report: Report) -> str:
    """The run's report.md without its title and without links to plots that live in the run directory."""
    lines = render_markdown(report).split("\n")[1:]
    return "\n".join(line for line in lines if not line.startswith("!["))


def results_payload(report: Report, measured: list[dict[str, float]], extra: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": 1, "run": report.model_dump(mode="json"), "rounds_p50_ms": measured,
            "cpu_flags": list(cpu_flags()), "has_vnni": has_vnni(), **extra}


def int8_label(candidates: list[Candidate]) -> str:
    return candidates[-1].label


def work_path(work: str | Path) -> Path:
    path = Path(work)
    path.mkdir(parents=True, exist_ok=True)
    return path
