"""Scripts that regenerate bench/results/ (not installed with slimline): `python -m benchmarks.NAME`.

Each measures its candidates side by side in one run and writes NAME.json and NAME.md (and a plot
where it has one) into `--results-dir`, bench/results/ of this checkout by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"


def add_results_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                        help=f"where NAME.json/.md go (default: {DEFAULT_RESULTS_DIR})")
