"""Regenerate bench/results/loaded-machine-cpu.{json,md}: does the demo's verdict survive a busy machine?

Runs the demo checkpoint through `slimline run` (the `cpu` profile, with the fp32 export benched too)
twice: on the machine as it is, then with `--burners` CPU-burning processes (one busy Python loop each)
running the whole time. The verdict's speed-up (torch fp32 / the final INT8 model, timed side by side)
must stay within 25% of its quiet value, and the verdict must not change. The alone speed-up (each
model timed in its own worker, one after another: what verdicts used before side-by-side timing) and
the old one-iteration round-robin ratio are recorded beside it, for the before/after.
Usage: python -m benchmarks.loaded_machine_cpu [--model demo|minilm-untrained] [--burners 2] [--short]
       (--short: 2-second timings and no accuracy budget, to check the script)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import add_results_dir_argument
from benchmarks.side_by_side import work_path
from benchmarks.timing_models import MODELS, checkpoint, cpu_note
from slimline.benchmarking.benchmark import Candidate
from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.report import Report, markdown_table, write_results
from slimline.core.artifact import ModelDir
from slimline.core.machine import machine_info
from slimline.core.progress import RichReporter, set_reporter
from slimline.formats.checkpoint import open_checkpoint
from slimline.pipeline.plan import RunRequest
from slimline.pipeline.run import run
from slimline.pipeline.side_by_side import runner_spec
from slimline.profiles.schema import Profile, load_profile

TOLERANCE = 0.25


@contextlib.contextmanager
def burning(count: int) -> Iterator[list[int]]:
    """`count` busy-looping processes for the duration; only these (by pid, with their process group) are
    ended afterwards."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"], start_new_session=True)
                 for _ in range(count)]
    try:
        time.sleep(1.0)  # let the scheduler settle with them running
        yield [p.pid for p in processes]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def short_profile() -> Profile:
    """The `cpu` profile with 2-second timings and without the accuracy budget (no eval data needed)."""
    data = load_profile("cpu").model_dump(mode="json", exclude_none=True)
    data["measurement"] = {**data["measurement"], "min_time_s": 2.0, "max_time_s": 10.0, "min_iters": 20}
    data["budgets"] = {k: v for k, v in data["budgets"].items() if k != "accuracy_drop_pt"}
    return Profile.model_validate({**data, "name": "cpu-short"})


def variant_ratios(report: Report, profile: Profile) -> dict[str, float]:
    """torch / final p50 side by side under the other schemes: blocks with passive waits (the
    `side_by_side_threading: passive` setting) and the old one-iteration round-robin with passive waits."""
    final = report.measurements  # on the runtime the run chose (the cpu profile chooses by measurement)
    models = [Candidate(report.baseline.label, open_checkpoint(Path(report.checkpoint)), "torch"),
              Candidate(final.label, ModelDir.open(Path(final.model_dir)), final.runtime)]
    profile = Profile.model_validate(report.profile)  # the chosen candidate's target and runtime options
    timing = InterleavedTiming.of(profile.measurement)
    ratios = {}
    for key, scheme in (("speedup_blocks_passive", timing), ("speedup_old_round_robin",
                                                             timing.one_iteration_per_round())):
        result = time_interleaved(InterleavedSpec(
            runners=[runner_spec(m.label, m.model, m.runtime, profile) for m in models], shape=profile.shapes[0],
            timing=scheme, threading="passive"))
        stats = result.latency_stats()
        ratios[key] = stats[models[0].label].p50_ms / stats[models[1].label].p50_ms
    return ratios


def facts(report: Report, variants: dict[str, float], seconds: float) -> dict[str, Any]:
    final = report.measurements
    figure = final.side_by_side.get("speedup_vs_baseline")
    return {"verdict": report.verdict, "seconds": round(seconds, 1),
            "speedup_side_by_side": final.speedup_vs_baseline,
            "speedup_side_by_side_ci95": figure.ci95 if figure else None,
            "speedup_alone": final.speedup_vs_baseline_alone, **variants,
            "load_average_1min": (report.side_by_side or {}).get("load_average_1min"),
            "threading": (report.side_by_side or {}).get("threading"),
            "threading_reason": (report.side_by_side or {}).get("threading_reason"),
            "budgets": [b.model_dump() for b in report.budgets],
            "side_by_side_p95_ms": final.side_by_side_latency.p95_ms if final.side_by_side_latency else None,
            "alone_p95_ms": final.primary_latency().p95_ms}


def one_run(source: Path, profile: Profile, work: Path, eval_data: Any) -> tuple[Report, float]:
    started = time.perf_counter()
    report = run(RunRequest(checkpoint=source, profile=profile, out_dir=work, eval_data=eval_data,
                            bench_export=True))
    return report, time.perf_counter() - started


def _loads(loads: list[float | None] | None) -> str:
    return ", ".join("-" if load is None else f"{load:.1f}" for load in loads or [])


def render(payload: dict[str, Any]) -> str:
    quiet, loaded = payload["quiet"], payload["loaded"]
    rows = []
    for key, what in (("speedup_side_by_side", "speed-up the verdict uses (side by side, blocks)"),
                      ("speedup_alone", "speed-up timed alone (the verdict's figure before)"),
                      ("speedup_blocks_passive", "speed-up side by side, blocks with passive waits"),
                      ("speedup_old_round_robin", "speed-up in the old round-robin (passive waits)")):
        change = loaded[key] / quiet[key] - 1
        rows.append([what, f"{quiet[key]:.2f}", f"{loaded[key]:.2f}", f"{100 * change:+.1f}%"])
    rows.append(["verdict", quiet["verdict"].upper(), loaded["verdict"].upper(), ""])
    rows.append(["final model p95 ms, side by side", f"{quiet['side_by_side_p95_ms']:.2f}",
                 f"{loaded['side_by_side_p95_ms']:.2f}", ""])
    rows.append(["final model p95 ms, alone", f"{quiet['alone_p95_ms']:.2f}", f"{loaded['alone_p95_ms']:.2f}", ""])
    rows.append(["1-minute load average (before, after)", _loads(quiet["load_average_1min"]),
                 _loads(loaded["load_average_1min"]), ""])
    rows.append(["threading of the verdict's timing", quiet.get("threading") or "-", loaded.get("threading") or "-",
                 ""])
    reasons = [f"- {when}: {facts['threading_reason']}" for when, facts in (("quiet", quiet), ("loaded", loaded))
               if facts.get("threading_reason")]
    budget_rows = [[q["name"], f"{q['status']} {q['measured'] if q['measured'] is None else round(q['measured'], 3)}",
                    f"{ld['status']} {ld['measured'] if ld['measured'] is None else round(ld['measured'], 3)}"]
                   for q, ld in zip(quiet["budgets"], loaded["budgets"], strict=True)]
    return "\n".join([
        "# The demo's verdict on a loaded machine (CPU)", "",
        f"`slimline run` of `{payload['model']}` on profile `{payload['profile']}` (fp32 export benched too), "
        f"quiet and then with {payload['burners']} CPU-burning processes.", f"Command: `{payload['command']}`", "",
        f"**{'PASS' if payload['passed'] else 'FAIL'}**: side-by-side speed-up within "
        f"{100 * TOLERANCE:.0f}% of the quiet one ({payload['speedup_change_pct']:+.1f}%) and the same verdict "
        f"({'yes' if payload['same_verdict'] else 'no'}).", "",
        markdown_table(["", "quiet", f"{payload['burners']} burners", "change"], rows), "", *reasons,
        *([""] if reasons else []), "## Budgets", "", markdown_table(["budget", "quiet", "loaded"], budget_rows), "",
        cpu_note(), ""])



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="demo")
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--short", action="store_true", help="2-second timings, no accuracy budget: checks the script")
    parser.add_argument("--work", default="runs/bench-loaded-machine")
    parser.add_argument("--name", default="loaded-machine-cpu")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    set_reporter(RichReporter())
    work = work_path(args.work)
    profile = short_profile() if args.short else load_profile("cpu")
    source = checkpoint(args.model, work)
    eval_data = None  # the demo names its own (Rotten Tomatoes, test split); the untrained head has none
    quiet, quiet_s = one_run(source, profile, work / "run", eval_data)
    quiet_variants = variant_ratios(quiet, profile)
    with burning(args.burners):
        loaded, loaded_s = one_run(source, profile, work / "run", eval_data)  # the same stages: only the bench reruns
        loaded_variants = variant_ratios(loaded, profile)
    payload: dict[str, Any] = {
        "schema_version": 1, "model": args.model, "profile": profile.name, "burners": args.burners,
        "short": args.short, "command": "python -m benchmarks.loaded_machine_cpu " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "quiet": facts(quiet, quiet_variants, quiet_s), "loaded": facts(loaded, loaded_variants, loaded_s),
        "tolerance": TOLERANCE, "machine": machine_info()}
    change = payload["loaded"]["speedup_side_by_side"] / payload["quiet"]["speedup_side_by_side"] - 1
    payload["speedup_change_pct"] = 100 * change
    payload["same_verdict"] = quiet.verdict == loaded.verdict
    payload["passed"] = abs(change) <= TOLERANCE and payload["same_verdict"]
    json_path, _ = write_results(Path(args.results_dir), args.name, json.dumps(payload, indent=2) + "\n",
                                 render(payload))
    print(f"wrote {json_path} and .md: speed-up {change:+.1%} under load, verdict {quiet.verdict} -> "
          f"{loaded.verdict} ({'PASS' if payload['passed'] else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
