"""Regenerate bench/results/doctor-time.{json,md}: how long `slimline doctor` takes, first and then cached.

`slimline doctor` imports the export stack in a fresh interpreter and asks torch about CUDA; both answers
are cached per environment (slimline.core.env_cache). This runs the installed console script as a user
does, in a fresh cache directory: once cold (nothing cached: the probes run), then `--repetitions` times
warm (answered from the cache), alternating with `--refresh` runs (probes forced) so a load that comes and
goes hits both. Goal: the warm median under 2 s. The 1-minute load average is recorded before and after:
on a shared machine every figure includes the neighbours.
Usage: python -m benchmarks.doctor_time [--repetitions 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import add_results_dir_argument
from slimline.benchmarking.report import markdown_table, write_results
from slimline.core.machine import machine_info

GOAL_S = 2.0


def _slimline() -> str:
    script = Path(sys.executable).with_name("slimline")
    return str(script) if script.is_file() else shutil.which("slimline") or "slimline"


def timed_doctor(cache: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "SLIMLINE_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    completed = subprocess.run([_slimline(), "doctor", "--json", *extra], capture_output=True, text=True, env=env,
                               check=False, timeout=600)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"slimline doctor exited {completed.returncode}: {completed.stderr[-2000:]}")
    return seconds, json.loads(completed.stdout)


def render(payload: dict[str, Any]) -> str:
    rows = [[name, f"{payload[name]['median_s']:.2f}", ", ".join(f"{s:.2f}" for s in payload[name]["seconds"])]
            for name in ("cold", "warm", "refresh")]
    return "\n".join([
        "# slimline doctor: wall time, first run and cached",
        "",
        f"Machine: {payload['machine'].get('cpu_model')}; 1-minute load average {payload['load_before']:.1f} "
        f"before, {payload['load_after']:.1f} after (a shared machine: every figure includes the neighbours).",
        f"Command: `{payload['command']}`", "",
        markdown_table(["run", "median s", "each run, s"], rows), "",
        f"Warm (cached) median {payload['warm']['median_s']:.2f} s against the {GOAL_S:.0f} s goal: "
        f"**{'PASS' if payload['passed'] else 'FAIL'}**. Cached probes: {', '.join(payload['cached'])}.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--name", default="doctor-time")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="slimline-doctor-time-") as scratch:
        cache = Path(scratch)
        cold, _ = timed_doctor(cache)
        warm, refresh, cached = [], [], []
        for _ in range(args.repetitions):
            seconds, report = timed_doctor(cache)
            warm.append(seconds)
            cached = sorted(report["cached"])
            refresh.append(timed_doctor(cache, "--refresh")[0])
    payload: dict[str, Any] = {
        "schema_version": 1, "goal_s": GOAL_S, "command": "python -m benchmarks.doctor_time " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "cold": {"seconds": [cold], "median_s": cold},
        "warm": {"seconds": warm, "median_s": statistics.median(warm)},
        "refresh": {"seconds": refresh, "median_s": statistics.median(refresh)},
        "cached": cached, "load_before": load_before, "load_after": os.getloadavg()[0], "machine": machine_info()}
    payload["passed"] = payload["warm"]["median_s"] < GOAL_S
    json_path, _ = write_results(Path(args.results_dir), args.name, json.dumps(payload, indent=2) + "\n",
                                 render(payload))
    print(f"wrote {json_path} and .md: warm median {payload['warm']['median_s']:.2f} s, cold {cold:.2f} s, "
          f"refresh median {payload['refresh']['median_s']:.2f} s ({'PASS' if payload['passed'] else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
