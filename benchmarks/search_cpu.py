"""Regenerate bench/results/search-cpu.{json,md,png}: `slimline search` on the demo against the peers, one run.

Runs the search (the `cpu` profile, its shipped space, a time budget), then times side by side,
round-robin in one process with idle pools not spinning: torch fp32 eager, ONNX Runtime fp32, the
`cpu` profile's default as a run makes it (the runtime chosen by measurement), the search's choice, the
best point of each kind on its front (quantization only; pruned + distilled), and the peers: Optimum's
dynamic presets for this CPU (`avx2`, plus `avx512_vnni` where the CPU has VNNI), OpenVINO on the same
export with its default precision, and OpenVINO + NNCF INT8 (300 calibration texts). Accuracy of every
model on the demo's test split, each run as exported; the drop is against the fp32 ONNX export on the same
examples (paired SE).
Usage: python -m benchmarks.search_cpu [--work DIR] [--time-budget S] [--trials N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import add_results_dir_argument
from benchmarks.openvino_peers import default_cpu_model, openvino_peers, quick
from benchmarks.quantization_cpu import optimum_candidate, optimum_presets
from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.report import markdown_table, write_results
from slimline.benchmarking.screening import ValidationScreen
from slimline.core.artifact import ModelDir
from slimline.core.machine import cpu_kind, has_vnni, library_versions, machine_info
from slimline.core.progress import RichReporter, set_reporter
from slimline.core.stats import paired_drop_pt
from slimline.pipeline.demo import ensure_demo_checkpoint
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.search import SearchRequest, run_search
from slimline.pipeline.search.outputs import recipe_summary
from slimline.pipeline.side_by_side import runner_spec
from slimline.profiles.schema import load_profile
from slimline.runtimes import make_runner, runtime_for_format


def is_student(recipe: list[dict[str, Any]]) -> bool:
    return any(step["pass"].startswith(("prune.", "distill.")) for step in recipe)


def _trial_model(outcome: Any, profile: Any) -> tuple[ModelDir, str]:
    """A trial's artifact and the runtime it was screened on (ONNX Runtime for trials recorded before runtimes)."""
    model = ModelDir.open(Path(outcome.model_dir))
    return model, outcome.runtime or runtime_for_format(model.manifest.format, profile.target.runtime).name


def front_points(result: Any) -> dict[str, Any]:
    """The fastest front point of each kind that passes the screened budgets (else the fastest of its kind)."""
    state = result.state
    points: dict[str, Any] = {}
    for kind, wanted in (("quantization only", False), ("pruned + distilled", True)):
        ours = [o for o in state.outcomes if o.ok and o.repeat_of is None and is_student(o.recipe) == wanted]
        passing = [o for o in ours if all(v <= 0 for v in state.verdicts[o.number].values())]
        pool = passing or ours
        if pool:
            points[kind] = min(pool, key=lambda o: o.latency_p50_ms)
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="runs/bench-search-cpu")
    parser.add_argument("--time-budget", type=float, default=1200.0, help="search time budget, seconds")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--name", default="search-cpu")
    parser.add_argument("--quick", action="store_true", help="a short measurement: validates the script, "
                                                             "numbers not for committing")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    set_reporter(RichReporter())
    work = Path(args.work)
    profile = quick(load_profile("cpu")) if args.quick else load_profile("cpu")
    checkpoint = ensure_demo_checkpoint()
    result = run_search(SearchRequest(checkpoint=checkpoint.path, profile=profile, out_dir=work / "search",
                                      time_budget_s=args.time_budget, trials=args.trials))
    state, report = result.state, result.report
    onnx_fp32 = ModelDir.open(Path(state.reference["onnx_dir"]))
    chosen = next(o for o in state.outcomes if o.number == report.search["chosen_trial"])

    default, runtime_choice = default_cpu_model(checkpoint.path, profile, work / "default")
    models: dict[str, tuple[ModelDir, str]] = {
        "torch fp32 eager (baseline)": (ModelDir.open(checkpoint.path), "torch"),
        "onnxruntime fp32 (export)": (onnx_fp32, "onnxruntime"),
        default.label: (default.model, default.runtime),
        f"slimline search choice (trial {chosen.number})": _trial_model(chosen, profile),
    }
    for kind, outcome in front_points(result).items():
        if outcome.model_dir != chosen.model_dir:
            models[f"search front, {kind} (trial {outcome.number})"] = _trial_model(outcome, profile)
    for preset in optimum_presets():
        candidate = optimum_candidate(onnx_fp32, preset, work)
        models[candidate.label] = (candidate.model, "onnxruntime")
    for candidate in openvino_peers(onnx_fp32, work):
        models[candidate.label] = (candidate.model, candidate.runtime)

    measurement = profile.measurement
    timing = time_interleaved(InterleavedSpec(
        runners=[runner_spec(label, model, runtime, profile) for label, (model, runtime) in models.items()],
        shape=profile.shapes[0], timing=InterleavedTiming.of(measurement) if args.quick else InterleavedTiming(
            warmup_iters=measurement.warmup_iters, min_iters=200, min_time_s=30.0, max_time_s=240.0)))
    latency = timing.latency_stats()
    eval_data = plan_run(RunRequest(checkpoint=checkpoint.path, profile=profile, out_dir=work / "eval")).eval_data
    screen = ValidationScreen(eval_data, checkpoint.path, profile.shapes[0].sequence_length, profile.target.threads,
                              split="test")
    reference_correct = screen.logits(onnx_fp32.model_path).argmax(-1) == screen.labels
    rows: list[dict[str, Any]] = []
    for label, (model, runtime) in models.items():
        stats = latency[label]
        row: dict[str, Any] = {"label": label, "runtime": runtime, "model_dir": str(model.path),
                               "size_mb": round(model.size_mb(), 2), "latency": stats.model_dump()}
        if model.manifest.format in ("onnx", "openvino"):  # ONNX graphs directly, IRs through their runner
            logits = screen.logits(model.model_path) if model.manifest.format == "onnx" else \
                screen.run_logits(make_runner(runner_spec(label, model, runtime, profile)).run)
            correct = logits.argmax(-1) == screen.labels
            drop, se = paired_drop_pt(reference_correct, correct)
            row.update(accuracy_pct=100.0 * float(np.mean(correct)), drop_pt=drop, drop_se_pt=se)
        rows.append(row)
    by_label = {row["label"]: row for row in rows}
    p50 = {label: row["latency"]["p50_ms"] for label, row in by_label.items()}
    peers = [label for label in p50 if label.startswith(("optimum", "openvino (", "openvino +"))]
    fastest_peer = min(peers, key=p50.get)
    chosen_label = next(label for label in p50 if label.startswith("slimline search choice"))
    default_label = default.label
    front_kinds = {("pruned + distilled" if is_student(o.recipe) else "quantization only")
                   for o in state.outcomes if o.number in state.front}
    summary = {
        "fastest_peer": fastest_peer,
        "search_choice_vs_fastest_peer": p50[fastest_peer] / p50[chosen_label],
        "search_target": 2.0, "search_aim": 2.5,
        "search_choice_test_drop_pt": by_label[chosen_label]["drop_pt"],
        "default_vs_fastest_peer": p50[fastest_peer] / p50[default_label],
        "default_target": 1.0, "default_aim": 1.3, "default_runtime_choice": runtime_choice,
        "default_test_drop_pt": by_label[default_label]["drop_pt"],
        "search_choice_vs_torch_fp32": p50["torch fp32 eager (baseline)"] / p50[chosen_label],
        "front_kinds": sorted(front_kinds), "search_verdict": report.verdict,
        "search_trials": len([o for o in state.outcomes if o.repeat_of is None and not o.rejected_before_build]),
        "stopped_early": len([o for o in state.outcomes if o.stopped_early]),
        "rejected_before_build": len([o for o in state.outcomes if o.rejected_before_build]),
        "chosen_recipe": recipe_summary(chosen.recipe),
    }
    payload = {
        "schema_version": 1, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "has_vnni": has_vnni(), "versions": library_versions(),
        "cpu_kind": cpu_kind(), "profile": "cpu", "time_budget_s": args.time_budget,
        "interleaved": {"rounds": timing.rounds, "seconds": timing.seconds},
        "test_examples": len(screen.labels), "models": rows, "summary": summary,
        "trials": json.loads((work / "search" / "trials.json").read_text()),
        "search_report": {"verdict": report.verdict, "budgets": [b.model_dump() for b in report.budgets],
                          "search": report.search},
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)  # the plot is written before write_results makes it
    plotted = front_png(payload, args.results_dir / f"{args.name}.png")
    markdown = render(payload, args.name, plotted)
    write_results(args.results_dir, args.name, json.dumps(payload, indent=2, default=str) + "\n", markdown)
    print(markdown)
    return 0


def front_png(payload: dict[str, Any], path: Path) -> bool:
    """Validation drop vs normalised latency of every trial, the front joined, the chosen one in red."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    trials = [t for t in payload["trials"]["trials"] if t["ok"] and t["repeat_of"] is None]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for trial in trials:
        colour = "tab:red" if trial["number"] == payload["trials"]["best"] else (
            "tab:blue" if trial["on_front"] else "tab:gray")
        marker = "s" if is_student(trial["recipe"]) else "o"
        axes.scatter(trial["latency_p50_ms"], trial["fidelity"]["drop_pt"], c=colour, marker=marker, s=36)
        axes.annotate(str(trial["number"]), (trial["latency_p50_ms"], trial["fidelity"]["drop_pt"]), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
    front = sorted((t for t in trials if t["on_front"]), key=lambda t: t["latency_p50_ms"])
    axes.plot([t["latency_p50_ms"] for t in front], [t["fidelity"]["drop_pt"] for t in front], "--", c="tab:blue",
              lw=1, label="Pareto front (latency, drop, size); squares: pruned + distilled")
    reference = payload["trials"]["reference"]
    for label, key in (("ORT fp32", "onnx_p50_ms"), ("torch fp32", "torch_p50_ms")):
        axes.axvline(reference[key], c="k", lw=0.8, ls=":")
        axes.annotate(label, (reference[key], 0), fontsize=7, rotation=90, va="bottom")
    axes.axhline(1.0, c="tab:red", lw=0.8, ls=":", label="accuracy budget 1 pt")
    axes.set_xlabel("p50 latency, ms (normalised to the fp32 export at the start)")
    axes.set_ylabel("validation accuracy drop vs fp32, pt")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def render(payload: dict[str, Any], name: str, plotted: bool) -> str:
    machine = payload["machine"]
    rows = []
    for row in payload["models"]:
        stats = row["latency"]
        low, high = stats["p50_ci95_ms"]
        rows.append([row["label"], f"{stats['p50_ms']:.2f}", f"[{low:.2f}, {high:.2f}]", f"{stats['p95_ms']:.2f}",
                     f"{stats['cv']:.2f}", f"{row['size_mb']:.1f}",
                     f"{row['accuracy_pct']:.2f}" if "accuracy_pct" in row else "-",
                     f"{row['drop_pt']:.2f} ± {row['drop_se_pt']:.2f}" if "drop_pt" in row else "-"])
    trials = payload["trials"]
    trial_rows = [[str(t["number"]), recipe_summary(t["recipe"]), f"{t['latency_p50_ms']:.2f}" if t["ok"] else "-",
                   f"{t['size_mb']:.1f}" if t["ok"] else "-",
                   f"{t['fidelity']['drop_pt']:.2f} ± {t['fidelity']['drop_se_pt']:.2f}" if t["ok"] else "-",
                   f"{t['probe']['drop_pt']:.2f} @ {int(t['probe']['steps'])}" if t.get("probe") else "-",
                   f"{t['seconds']:.0f}",
                   "yes" if t["passes_screened_budgets"] else ("no" if t["ok"] else "stopped early" if
                                                               t.get("stopped_early") else
                                                               f"failed: {t['error'][:60]}"),
                   ("front" if t["on_front"] else "") + (" chosen" if t["number"] == trials["best"] else "")]
                  for t in trials["trials"] if t["repeat_of"] is None]
    lines = [
        "# `slimline search` on the demo vs the peers (one run)", "",
        f"- created: {payload['created_at']}; command: `python -m benchmarks.search_cpu --time-budget "
        f"{payload['time_budget_s']:.0f}`",
        f"- machine: {machine['cpu_model']}, {machine['cpu_count']} cores, instruction sets: "
        f"{', '.join(machine['cpu_flags'])} (VNNI: {payload['has_vnni']})",
        f"- profile `cpu` (batch 1, sequence 128, 2 threads); every model timed round-robin in one process "
        f"({payload['interleaved']['rounds']} rounds, idle pools not spinning); accuracy on "
        f"{payload['test_examples']} test examples, each model run as exported; drop vs the fp32 ONNX export, "
        "paired SE",
        f"- versions: {', '.join(f'{k} {v}' for k, v in payload['versions'].items())}", "",
        markdown_table(["model", "p50 ms", "p50 95% CI", "p95 ms", "cv", "size MB", "accuracy %", "drop pt ± SE"],
                       rows), "",
        "## Targets", "", "```json", json.dumps(payload["summary"], indent=2), "```", "",
        f"## Trials ({trials['acceptance']})", "",
        "Trial latency: normalised p50 (the trial's ratio to the fp32 export, timed interleaved with it, x the "
        "export's p50 at the start); accuracy on the validation split.", "",
        "Probe: a student's validation drop after a short distillation; a student that cannot reach the accuracy "
        "budget from there is stopped early (slimline.pipeline.search.early_stop).", "",
        markdown_table(["trial", "recipe", "p50 ms", "size MB", "val. drop pt ± SE", "probe drop pt @ steps", "s",
                        "passes budgets", ""],
                       trial_rows), "",
    ]
    if plotted:
        lines += [f"![accuracy drop vs latency]({name}.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
