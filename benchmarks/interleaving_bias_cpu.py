"""Regenerate bench/results/interleaving-bias-cpu.{json,md}: does timing models side by side change their latency?

A side-by-side timing must give each model the latency it has alone, or every speed-up it reports is
biased. For torch fp32 eager, ONNX Runtime fp32 and ONNX Runtime dynamic INT8 of the demo checkpoint,
this times every model alone (its own worker process, `slimline bench`'s harness) and side by side in
one process under three schemes:

- `blocks` (what verdicts use): blocks of consecutive iterations, the first of each block dropped,
  models in a shuffled order each round, each runtime with its own threading defaults;
- `blocks, ORT not spinning`: the same with ONNX Runtime's idle pool not spinning (does it need to spin?);
- `blocks, passive waits`: the same with OMP_WAIT_POLICY=PASSIVE and ORT not spinning (the
  `measurement.side_by_side_threading: passive` setting: steadier under load, but is it biased?);
- `round-robin (old)`: one iteration per model per round, OMP_WAIT_POLICY=PASSIVE and ORT not spinning.

Every condition is measured `--repetitions` times in a shuffled order (seeded), so a load that comes and
goes hits all of them; a model's bias is the median over repetitions of (p50 in the condition / p50 alone,
same repetition). Pass: every model's `blocks` p50 within 5% of its alone p50. Run it on a quiet machine:
alone and side by side are timed minutes apart, so a neighbour's load moves the alone p50s too.
Usage: python -m benchmarks.interleaving_bias_cpu [--model demo|minilm-untrained] [--repetitions 5]
       [--min-time-s 20] [--short]   (--short: one repetition of 2 s, to check the script)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import add_results_dir_argument
from benchmarks.side_by_side import work_path
from benchmarks.timing_models import MODELS, TimedModels, build_models, checkpoint, cpu_note, timing_profile
from slimline.benchmarking.benchmark import measure
from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.report import markdown_table, write_results
from slimline.core.machine import machine_info
from slimline.core.progress import RichReporter, set_reporter
from slimline.pipeline.side_by_side import runner_spec
from slimline.profiles.schema import Profile

TOLERANCE = 0.05
CONDITIONS = ("alone", "blocks", "blocks, ORT not spinning", "blocks, passive waits", "round-robin (old)")


def interleaved_p50s(models: TimedModels, profile: Profile, condition: str, seed: int) -> dict[str, Any]:
    timing = InterleavedTiming.of(profile.measurement)
    spec: dict[str, Any] = {"timing": timing}
    if condition == "blocks, ORT not spinning":
        spec["ort_spinning"] = False
    if condition == "blocks, passive waits":
        spec["threading"] = "passive"
    if condition == "round-robin (old)":
        spec = {"timing": timing.one_iteration_per_round(), "threading": "passive"}
    result = time_interleaved(InterleavedSpec(
        runners=[runner_spec(m.label, m.model, m.runtime, profile) for m in models.all], shape=profile.shapes[0],
        seed=seed, **spec))
    stats = result.latency_stats(seed)
    return {"p50_ms": {label: s.p50_ms for label, s in stats.items()}, "rounds": result.rounds,
            "samples": {label: s.iterations for label, s in stats.items()}, "blocks": result.blocks}


def alone_p50s(models: TimedModels, profile: Profile) -> dict[str, Any]:
    baseline, results = measure(models.candidates, models.baseline, profile, models.candidates[0].model.manifest.inputs,
                                None)
    return {"p50_ms": {r.label: r.primary_latency().p50_ms for r in [baseline, *results]},
            "samples": {r.label: r.primary_latency().iterations for r in [baseline, *results]}}


def measure_all(models: TimedModels, profile: Profile, repetitions: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    measured = []
    for repetition in range(repetitions):
        row: dict[str, Any] = {"repetition": repetition + 1}
        for condition in rng.permutation(CONDITIONS):
            started, load = time.perf_counter(), os.getloadavg()[0]
            row[condition] = (alone_p50s(models, profile) if condition == "alone"
                              else interleaved_p50s(models, profile, condition, seed + repetition))
            row[condition]["seconds"] = round(time.perf_counter() - started, 1)
            row[condition]["load_average_1min_before"] = round(load, 2)
        measured.append(row)
    return measured


def bias(measured: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """condition -> model -> {median, min, max} of p50 / alone p50 over repetitions."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for condition in CONDITIONS[1:]:
        out[condition] = {}
        for label in labels:
            ratios = [row[condition]["p50_ms"][label] / row["alone"]["p50_ms"][label] for row in measured]
            out[condition][label] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return out


def render(payload: dict[str, Any]) -> str:
    labels, ratios = payload["models"], payload["ratio_to_alone"]
    rows = [[condition, *[f"{ratios[condition][label]['median']:.3f} ({ratios[condition][label]['min']:.3f}-"
                          f"{ratios[condition][label]['max']:.3f})" for label in labels]] for condition in ratios]
    p50_rows = []
    for row in payload["repetitions"]:
        for condition in CONDITIONS:
            p50_rows.append([str(row["repetition"]), condition,
                             *[f"{row[condition]['p50_ms'][label]:.3f}" for label in labels],
                             str(row[condition]["load_average_1min_before"])])
    verdict = "PASS" if payload["passed"] else "FAIL"
    return "\n".join([
        "# Side-by-side timing bias (CPU)", "",
        f"Models: torch fp32 eager, ONNX Runtime fp32 and dynamic INT8 of `{payload['model']}`, batch 1, "
        f"{payload['sequence_length']} tokens, {payload['threads']} threads; {payload['repetitions_count']} "
        f"repetition(s) of every condition in a shuffled order, each timing at least {payload['min_time_s']} s.",
        f"Command: `{payload['command']}`", "",
        f"**{verdict}**: every model's block-interleaved p50 within {100 * TOLERANCE:.0f}% of its alone p50 "
        f"(worst: {payload['worst_blocks_deviation_pct']:.1f}%).", "",
        "## p50 side by side / p50 alone (median over repetitions, range)", "",
        markdown_table(["condition", *labels], rows), "",
        "## p50 ms by repetition", "",
        markdown_table(["repetition", "condition", *labels, "load average before"], p50_rows), "",
        cpu_note(), ""])



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="demo")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--min-time-s", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--short", action="store_true", help="one repetition of 2 s each: checks the script only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/bench-interleaving-bias")
    parser.add_argument("--name", default="interleaving-bias-cpu")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    if args.short:
        args.repetitions, args.min_time_s = 1, 2.0
    set_reporter(RichReporter())
    work = work_path(args.work)
    measurement = {"warmup_iters": 10, "min_iters": 50, "min_time_s": args.min_time_s,
                   "max_time_s": max(4 * args.min_time_s, 30.0)}
    profile = timing_profile(args.threads, measurement, sequence_length=args.sequence_length)
    models = build_models(checkpoint(args.model, work), profile, work)
    measured = measure_all(models, profile, args.repetitions, args.seed)
    labels = [m.label for m in models.all]
    ratios = bias(measured, labels)
    worst = max(abs(r["median"] - 1.0) for r in ratios["blocks"].values())
    payload = {"schema_version": 1, "model": args.model, "models": labels, "threads": args.threads,
               "sequence_length": args.sequence_length, "repetitions_count": args.repetitions,
               "min_time_s": args.min_time_s, "short": args.short, "seed": args.seed,
               "command": "python -m benchmarks.interleaving_bias_cpu " + " ".join(sys.argv[1:] if argv is None
                                                                                  else argv),
               "tolerance": TOLERANCE, "passed": worst <= TOLERANCE, "worst_blocks_deviation_pct": 100 * worst,
               "ratio_to_alone": ratios, "repetitions": measured, "machine": machine_info()}
    json_path, _ = write_results(Path(args.results_dir), args.name, json.dumps(payload, indent=2) + "\n",
                                 render(payload))
    print(f"wrote {json_path} and .md: blocks worst deviation {100 * worst:.1f}% "
          f"({'PASS' if payload['passed'] else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
