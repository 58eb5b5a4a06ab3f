"""Regenerate bench/results/demo-cpu.{json,md}: the demo checkpoint on the `cpu` profile.

torch fp32 eager (baseline) vs ONNX Runtime fp32 (the export) vs ONNX Runtime dynamic INT8 (the
default recipe), in one run with the same harness, inputs and test split.
Usage: python -m benchmarks.demo_cpu [--profile cpu] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import add_results_dir_argument
from slimline.benchmarking.report import render_markdown, write_results
from slimline.core.progress import RichReporter, set_reporter
from slimline.pipeline.demo import ensure_demo_checkpoint
from slimline.pipeline.plan import RunRequest
from slimline.pipeline.run import run
from slimline.profiles.schema import load_profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--work", default="runs/bench-demo-cpu")
    parser.add_argument("--name", help="results file name (default: demo-cpu, or demo-PROFILE)")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    set_reporter(RichReporter())
    checkpoint = ensure_demo_checkpoint()
    report = run(RunRequest(checkpoint=checkpoint.path, profile=load_profile(args.profile),
                            out_dir=Path(args.work), bench_export=True))
    name = args.name or ("demo-cpu" if args.profile == "cpu" else f"demo-{args.profile}")
    report_json = report.model_dump_json(indent=2) + "\n"
    json_path, _ = write_results(args.results_dir, name, report_json, render_markdown(report))
    print(f"wrote {json_path} and .md; verdict {report.verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
