"""`slimline search`: arguments in, slimline.api.search out."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from slimline import api
from slimline.cli.arguments import bounded_float, bounded_int
from slimline.cli.console import console, print_report, verdict_exit
from slimline.cli.history import add_history_options, history_argument
from slimline.cli.stages import FORCE_HELP

DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration_s(text: str) -> float:
    """`20m`, `1h30m`, `90s` or plain seconds (`1200`) -> seconds."""
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"the time budget must be positive, got {text!r}; write e.g. 20m")
    match = DURATION.match(text)
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 20m, 1h30m, 90s or 1200")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError("the time budget must be positive")
    return total


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from err
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_search(args: argparse.Namespace) -> int:
    result = api.search(args.checkpoint, out=args.out, profile=args.profile, space=args.space,
                        eval_data=args.eval_data, trials=args.trials, time_budget_s=args.time_budget, seed=args.seed,
                        executor=args.executor, ray_address=args.ray_address, parallel=args.parallel,
                        confidence_z=args.confidence_z, force=args.force, history=history_argument(args),
                        mlflow_uri=args.mlflow_uri)
    print_report(result.report)
    out = Path(args.out)
    console().print(f"trials: {out / 'trials.md'} (front: {out / 'front.json'}, plot: {out / 'front.svg'}); "
                    f"best artifact and recipe: {out / 'best'}; report: {out / 'report.json'}")
    return verdict_exit(result.report)


def add_search_command(sub: argparse._SubParsersAction) -> None:
    search = sub.add_parser("search", help="search a space of recipes for the fastest artifact within every budget "
                            "(resumable; Pareto front)")
    search.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, metavar="DIR",
                        help="Hugging Face checkpoint directory")
    search.add_argument("--profile", default="cpu", help="profile name or YAML path (default: cpu)")
    search.add_argument("--out", required=True, help="search directory (search.db, stages/, trials.md, best/, "
                        "report.json); rerun with the same --out to resume")
    search.add_argument("--space", help="search space name or YAML (default: by the profile's device: "
                        "profiles/spaces/cpu.yaml or gpu.yaml)")
    search.add_argument("--eval-data", help="labelled data: validation split screens trials, test split reports "
                        "(default: the checkpoint's hint, e.g. the demo's)")
    search.add_argument("--time-budget", type=parse_duration_s, help="no new trial starts after this long "
                        "(20m, 1h, 90s; default 20m when --trials is not given)")
    search.add_argument("--trials", type=positive_int, help="stop when this many trials have finished (counting "
                        "those of earlier runs into the same --out)")
    search.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0)
    search.add_argument("--executor", choices=["local", "ray"], default="local", help="run trials here, one at a "
                        "time, or as Ray tasks (pip install 'slimline[ray]')")
    search.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray)")
    search.add_argument("--parallel", type=positive_int, help="Ray: trials in flight at once (default: the "
                        "cluster's CPUs)")
    search.add_argument("--confidence-z", type=bounded_float(0.0, 10.0), default=0.0,
                        help="accept a trial when its validation drop + "
                        "z x paired SE is within the accuracy budget (default 0: the drop as measured)")
    search.add_argument("--force", action="store_true", help=FORCE_HELP)
    add_history_options(search)
    search.set_defaults(handler=cmd_search)
