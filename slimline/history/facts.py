"""What the history keeps about a run, taken from its Report: hashes, machine class, figures with spreads.

A machine class is what makes two latencies comparable: the CPU model and the instruction sets the
kernels use (AVX2 vs AVX-512 VNNI changes INT8 speed-ups several-fold), or the GPUs for a CUDA target.
The host name is not part of it: two identical CI runners are one class.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from slimline.benchmarking.report import Report
from slimline.benchmarking.results_model import CandidateResult
from slimline.core.stats import wilson_interval_pct


def machine_class_facts(machine: dict[str, Any], device: str) -> dict[str, Any]:
    if device == "cuda":
        return {"device": "cuda", "gpus": sorted(f"{d.get('name')} sm{d.get('compute_capability')}"
                                                 for d in machine.get("cuda_devices") or [])}
    return {"device": "cpu", "cpu_model": machine.get("cpu_model"), "cpu_flags": sorted(machine.get("cpu_flags", [])),
            "arch": machine.get("arch")}


def machine_class(report: Report) -> str:
    """A short stable id of the machine class the report's latencies belong to."""
    facts = machine_class_facts(report.machine, report.profile.get("target", {}).get("device", "cpu"))
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def machine_description(machine: dict[str, Any]) -> str:
    gpus = ", ".join(d.get("name", "?") for d in machine.get("cuda_devices") or [])
    return f"{machine.get('cpu_model', 'unknown CPU')}" + (f" + {gpus}" if gpus else "")


def artifact_hashes(report: Report) -> tuple[str | None, str | None, str | None]:
    """(checkpoint sha256, artifact sha256, format) from the measured model's manifest.

    The artifact's hash is that of its manifest.json, which hashes every file; the checkpoint's is the
    source manifest hash its lineage recorded (content, not path). None where the directory is gone.
    """
    manifest_path = Path(report.measurements.model_dir) / "manifest.json"
    if not manifest_path.is_file():
        return None, None, report.measurements.format
    data = manifest_path.read_bytes()
    manifest = json.loads(data)
    steps = [s for s in manifest.get("lineage", []) if s.get("kind") != "source"]
    checkpoint = steps[0].get("parent_manifest_sha256") if steps else None
    return checkpoint, hashlib.sha256(data).hexdigest(), manifest.get("format")


def candidate_metrics(result: CandidateResult, role: str, examples: int | None) -> list[dict[str, Any]]:
    """Every measured figure of one model, each with its spread (interval, stdev or SE, n)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, shape: str | None = None, **spread: Any) -> None:
        if value is not None:
            rows.append({"model_role": role, "model_label": result.label, "shape": shape, "name": name,
                         "value": float(value), **spread})

    for shape, stats in result.latency.items():
        low, high = stats.p50_ci95_ms
        add("latency_p50_ms", stats.p50_ms, shape, low=low, high=high, n=stats.iterations,
            spread="95% CI of the median (order statistics)")
        for name in ("p90", "p95", "p99"):
            add(f"latency_{name}_ms", getattr(stats, f"{name}_ms"), shape, n=stats.iterations)
        add("latency_mean_ms", stats.mean_ms, shape, stdev=stats.stdev_ms, n=stats.iterations, spread="stdev")
        add("latency_min_ms", stats.min_ms, shape, n=stats.iterations)
        add("latency_max_ms", stats.max_ms, shape, n=stats.iterations)
        add("latency_cv", stats.cv, shape, n=stats.iterations)
        add("throughput_sps", stats.throughput_sps, shape, n=stats.iterations, spread="from the mean latency")
    add("size_mb", result.size_mb)
    add("peak_rss_mb", result.peak_rss_mb)
    add("gpu_memory_mb", result.gpu_memory_mb)
    add("load_s", result.load_s)
    if result.accuracy_pct is not None and examples:
        low, high = wilson_interval_pct(result.accuracy_pct, examples)
        add("accuracy_pct", result.accuracy_pct, low=low, high=high, n=examples, spread="95% Wilson interval")
    add("accuracy_drop_pt", result.accuracy_drop_pt, stdev=result.accuracy_drop_se_pt, n=examples,
        spread="paired (McNemar) standard error vs the baseline")
    add("agreement_with_baseline_pct", result.agreement_with_baseline_pct, n=examples)
    add("speedup_vs_baseline", result.speedup_vs_baseline)
    return rows


def report_metrics(report: Report) -> list[dict[str, Any]]:
    examples = int(report.eval_data["examples"]) if report.eval_data else None
    rows = candidate_metrics(report.baseline, "baseline", examples)
    for result in report.intermediates:
        rows += candidate_metrics(result, "intermediate", examples)
    return rows + candidate_metrics(report.measurements, "final", examples)


def run_row(report: Report, kind: str, out_dir: Path) -> dict[str, Any]:
    checkpoint_sha, artifact_sha, artifact_format = artifact_hashes(report)
    return {
        "created_at": report.created_at, "kind": kind, "out_dir": str(Path(out_dir).resolve()),
        "checkpoint": report.checkpoint, "checkpoint_sha256": checkpoint_sha, "artifact_sha256": artifact_sha,
        "artifact_format": artifact_format, "profile_name": report.profile["name"],
        "profile_json": json.dumps(report.profile, sort_keys=True), "recipe_json": json.dumps(report.recipe),
        "machine_class": machine_class(report), "machine_json": json.dumps(report.machine, sort_keys=True),
        "machine_description": machine_description(report.machine),
        "versions_json": json.dumps(report.versions, sort_keys=True), "verdict": report.verdict,
        "eval_examples_sha256": (report.eval_data or {}).get("examples_sha256"),
        "report_json": report.model_dump_json(),
    }
