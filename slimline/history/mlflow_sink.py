"""Optional MLflow sink: parameters, metrics and the report files of a run, for teams that track there.

`pip install 'slimline[mlflow]'` (mlflow-skinny: the tracking client without the server's stack).
The import is lazy: nothing MLflow-related loads unless --mlflow-uri is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimline.benchmarking.report import Report
from slimline.core.deps import require
from slimline.core.errors import MissingDependency, OutputError
from slimline.history.facts import machine_class, machine_description

REPORT_FILES = ("report.json", "report.md", "report.html", "report-tradeoff.svg")


def mlflow_params(report: Report, kind: str) -> dict[str, str]:
    target = report.profile.get("target", {})
    params = {"kind": kind, "profile": report.profile["name"], "checkpoint": report.checkpoint,
              "recipe": ",".join(step["pass"] for step in report.recipe) or "(none)",
              "device": str(target.get("device")), "runtime": str(target.get("runtime")),
              "threads": str(target.get("threads")), "machine_class": machine_class(report),
              "machine": machine_description(report.machine)}
    params.update({f"version.{name}": version for name, version in report.versions.items()})
    return {key: value[:500] for key, value in params.items()}  # MLflow caps a parameter's length


def mlflow_metrics(report: Report) -> dict[str, float]:
    final, stats = report.measurements, report.measurements.primary_latency()
    low, high = stats.p50_ci95_ms
    metrics: dict[str, Any] = {
        "latency_p50_ms": stats.p50_ms, "latency_p50_ci_low_ms": low, "latency_p50_ci_high_ms": high,
        "latency_p95_ms": stats.p95_ms, "latency_p99_ms": stats.p99_ms, "latency_cv": stats.cv,
        "throughput_sps": stats.throughput_sps, "size_mb": final.size_mb, "peak_rss_mb": final.peak_rss_mb,
        "accuracy_pct": final.accuracy_pct, "accuracy_drop_pt": final.accuracy_drop_pt,
        "accuracy_drop_se_pt": final.accuracy_drop_se_pt, "speedup_vs_baseline": final.speedup_vs_baseline,
        "baseline_latency_p50_ms": report.baseline.primary_latency().p50_ms,
        "verdict_pass": 1.0 if report.verdict == "pass" else 0.0,
    }
    for budget in report.budgets:
        metrics[f"budget.{budget.name}.pass"] = 1.0 if budget.status == "pass" else 0.0
    return {name: float(value) for name, value in metrics.items() if value is not None}


def log_to_mlflow(report: Report, out_dir: Path, uri: str, *, kind: str = "run",
                  history_run_id: int | None = None) -> str:
    """One MLflow run in experiment `slimline-<profile>`; returns its run id."""
    mlflow = require("mlflow", purpose="--mlflow-uri (the MLflow sink)")
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(f"slimline-{report.profile['name']}")
        with mlflow.start_run(run_name=f"{kind} {Path(report.checkpoint).name}") as active:
            mlflow.log_params(mlflow_params(report, kind))
            mlflow.log_metrics(mlflow_metrics(report))
            tags = {"slimline.verdict": report.verdict, "slimline.kind": kind}
            if history_run_id is not None:
                tags["slimline.history_run"] = str(history_run_id)
            mlflow.set_tags(tags)
            mlflow.log_dict(json.loads(report.model_dump_json()), "slimline/report.json")
            for name in REPORT_FILES[1:]:
                if (out_dir / name).is_file():
                    mlflow.log_artifact(str(out_dir / name), artifact_path="slimline")
            return active.info.run_id
    except MissingDependency:
        raise
    except Exception as err:  # the tracking server is someone else's service: say which and how to fix
        raise OutputError(f"logging to MLflow at {uri} failed: {type(err).__name__}: {err}",
                          fix="check --mlflow-uri (a file: path or an http(s) tracking server) and that it is "
                              "reachable; the run itself finished and its report is on disk.") from err
