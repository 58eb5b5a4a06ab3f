"""The `slimline` command: parses arguments into the API's models and calls it. No logic of its own."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from slimline.errors import EXIT_BAD_INPUT, EXIT_BUDGET_FAILED, EXIT_OK, EXIT_STAGE_FAILED, SlimlineError


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 180)  # logs and CI: keep the tables readable
    return console


def _print_error(prefix: str, message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True).print(Text(prefix, style="bold red") + Text(message))


def _eval_spec(value: str | None):
    if value is None:
        return None
    from pydantic import ValidationError

    from slimline.data import DatasetSpec
    from slimline.errors import DataError

    source, _, split = value.partition(":") if not value.endswith((".csv", ".jsonl")) else (value, "", "")
    try:
        return DatasetSpec(source=source, split=split or "test")
    except ValidationError as err:
        raise DataError(f"--eval-data {value!r} is invalid: {err.errors()[0]['msg']}.",
                        fix="use rotten-tomatoes[:split] or a path to a .csv/.jsonl file.") from err


def print_report(report) -> None:
    from rich.table import Table

    from bench.report import COMPARISON_HEADER, comparison_rows

    console = _console()
    table = Table(title=f"slimline - profile {report.profile['name']} ({next(iter(report.measurements.latency))})")
    for column in COMPARISON_HEADER:
        table.add_column(column, overflow="fold")
    for row in comparison_rows(report):
        table.add_row(*row)
    console.print(table)
    budgets = Table(title="budgets")
    for column in ("budget", "limit", "measured", "status"):
        budgets.add_column(column)
    colour = {"pass": "green", "fail": "red", "not_measured": "yellow"}
    for b in report.budgets:
        measured = "-" if b.measured is None else f"{b.measured:.3f}"
        budgets.add_row(b.name, f"{b.kind} {b.limit:g}", measured, f"[{colour[b.status]}]{b.status}[/]")
    console.print(budgets)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    style = {"pass": "bold green", "fail": "bold red", "incomplete": "bold yellow"}[report.verdict]
    console.print(f"verdict: [{style}]{report.verdict.upper()}[/]")


def _verdict_exit(report) -> int:
    return EXIT_OK if report.verdict == "pass" else EXIT_BUDGET_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from compress.recipe import load_recipe
    from profiles.schema import load_profile
    from slimline.pipeline import RunRequest, run

    request = RunRequest(
        checkpoint=Path(args.checkpoint), profile=load_profile(args.profile), out_dir=Path(args.out),
        recipe=load_recipe(args.recipe) if args.recipe else None, task=args.task,
        eval_data=_eval_spec(args.eval_data), bench_export=args.bench_export,
    )
    report = run(request)
    print_report(report)
    _console().print(f"report: {Path(args.out) / 'report.json'} and report.md")
    return _verdict_exit(report)


def cmd_demo(args: argparse.Namespace) -> int:
    from profiles.schema import load_profile
    from slimline.demo import ensure_demo_checkpoint
    from slimline.pipeline import RunRequest, run

    profile = load_profile(args.profile)  # validate before the (slow) first build of the checkpoint
    checkpoint = ensure_demo_checkpoint()
    accuracy = checkpoint.manifest.metadata.get("accuracy", {})
    _console().print(f"demo checkpoint: {checkpoint.path} (test accuracy {accuracy.get('test', float('nan')):.4f})")
    report = run(RunRequest(checkpoint=checkpoint.path, profile=profile, out_dir=Path(args.out),
                            bench_export=True))
    print_report(report)
    _console().print(f"report: {Path(args.out) / 'report.json'} and report.md")
    from slimline.bundle import package

    bundle = package(Path(args.out), Path(args.out) / "bundle", name="minilm-l6-rotten-tomatoes", replace=True)
    _console().print(f"bundle: {bundle.path} (check it with `slimline verify {bundle.path}`, "
                     f"serve it with `slimline serve {bundle.path}`)")
    return _verdict_exit(report)


def cmd_export(args: argparse.Namespace) -> int:
    from slimline.standalone import export_to

    model_dir = export_to(Path(args.checkpoint), Path(args.out), task=args.task, opset=args.opset,
                          exporter=args.exporter)
    parity = model_dir.manifest.metadata.get("parity", {})
    _console().print(f"exported {model_dir.model_path} with {model_dir.manifest.metadata.get('exporter')} "
                     f"(parity max|diff| {parity.get('max_abs_diff', float('nan')):.2e})")
    return EXIT_OK


def cmd_compress(args: argparse.Namespace) -> int:
    from compress.recipe import load_recipe
    from profiles.schema import load_profile
    from slimline.standalone import compress_to

    model_dir = compress_to(Path(args.model), Path(args.out), load_recipe(args.recipe), load_profile(args.profile),
                            tuning_data=_eval_spec(args.eval_data))
    _console().print(f"wrote {model_dir.path} ({model_dir.manifest.format}, {model_dir.size_mb():.1f} MB)")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from profiles.schema import load_profile
    from slimline.standalone import bench_model

    report = bench_model(Path(args.model), load_profile(args.profile), Path(args.out),
                         baseline=Path(args.baseline) if args.baseline else None, eval_data=_eval_spec(args.eval_data))
    print_report(report)
    return _verdict_exit(report)


def cmd_profiles(args: argparse.Namespace) -> int:
    import yaml

    from profiles.schema import PROFILES_DIR, list_profiles, load_profile

    console = _console()
    if args.action == "list":
        for name in list_profiles():
            console.print(f"{name:16s} {load_profile(name).description}")
    elif args.action == "show":
        path = PROFILES_DIR / f"{args.name}.yaml"
        profile = load_profile(args.name)
        console.print(path.read_text() if path.is_file() else yaml.safe_dump(profile.model_dump(mode="json")),
                      markup=False, highlight=False)
    else:
        profile = load_profile(Path(args.name))
        console.print(f"{args.name}: valid profile '{profile.name}' ({len(profile.budgets)} budgets)")
    return EXIT_OK


def cmd_passes(args: argparse.Namespace) -> int:
    from compress.base import registry

    console = _console()
    for name, cls in registry().items():
        options = ", ".join(f"{key}={field.get_default(call_default_factory=True)!r}"
                            for key, field in cls.Config.model_fields.items())
        console.print(f"[bold]{name}[/] ({cls.stage}-level, {'/'.join(sorted(cls.accepts))} -> {cls.produces})")
        console.print(f"    {((cls.__module__ and sys.modules[cls.__module__].__doc__) or '').strip().splitlines()[0]}")
        console.print(f"    options: {options}", markup=False)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="compress -> export -> bench -> verdict for one checkpoint and profile")
    run.add_argument("--checkpoint", required=True, help="Hugging Face checkpoint directory")
    run.add_argument("--profile", default="cpu", help="profile name or YAML path (default: cpu)")
    run.add_argument("--out", required=True, help="run directory (stages/, report.json, report.md)")
    run.add_argument("--recipe", help="recipe YAML (default: the profile's recipe)")
    run.add_argument("--task", help="override the task inferred from config.json")
    run.add_argument("--eval-data", help="labelled data for accuracy: rotten-tomatoes[:split] or FILE.csv/.jsonl")
    run.add_argument("--bench-export", action="store_true", help="also benchmark the fp32 ONNX export")
    run.set_defaults(handler=cmd_run)

    demo = sub.add_parser("demo", help="build the offline demo checkpoint (cached) and run a profile on it")
    demo.add_argument("--profile", default="cpu")
    demo.add_argument("--out", default="slimline-demo")
    demo.set_defaults(handler=cmd_demo)

    export = sub.add_parser("export", help="export a Hugging Face checkpoint to an ONNX model directory")
    export.add_argument("--checkpoint", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--task")
    export.add_argument("--opset", type=int, default=18)
    export.add_argument("--exporter", choices=["auto", "optimum", "torch"], default="auto")
    export.set_defaults(handler=cmd_export)

    compress = sub.add_parser("compress", help="apply a recipe's passes to a model directory")
    compress.add_argument("--model", required=True, help="input model directory (HF checkpoint or slimline dir)")
    compress.add_argument("--recipe", required=True)
    compress.add_argument("--profile", default="cpu", help="target the passes are checked against")
    compress.add_argument("--out", required=True)
    compress.add_argument("--eval-data", help="labelled data for accuracy-aware passes (validation split is used)")
    compress.set_defaults(handler=cmd_compress)

    bench = sub.add_parser("bench", help="benchmark a model directory against its fp32 source on a profile")
    bench.add_argument("--model", required=True)
    bench.add_argument("--profile", default="cpu")
    bench.add_argument("--out", required=True)
    bench.add_argument("--baseline", help="fp32 HF checkpoint (default: the model's lineage source)")
    bench.add_argument("--eval-data")
    bench.set_defaults(handler=cmd_bench)

    profiles = sub.add_parser("profiles", help="list, show or validate profiles")
    profiles_sub = profiles.add_subparsers(dest="action", required=True)
    profiles_sub.add_parser("list")
    profiles_sub.add_parser("show").add_argument("name")
    profiles_sub.add_parser("validate").add_argument("name", metavar="FILE")
    profiles.set_defaults(handler=cmd_profiles)

    passes = sub.add_parser("passes", help="list registered compression passes")
    passes.add_argument("action", choices=["list"])
    passes.set_defaults(handler=cmd_passes)

    from slimline.cli_deploy import add_deploy_commands

    add_deploy_commands(sub)  # package, verify, serve
    from slimline.cli_doctor import add_doctor_command

    add_doctor_command(sub)
    return parser


def quiet_third_party_libraries() -> None:
    """Libraries' advice to their developers (tracer notes, deprecations, "newly initialized" weights)
    drowns the progress lines a user reads; -v brings it back. slimline's own warnings use logging."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs its advice on the root logger
    for ours in ("slimline", "compress", "export", "bench", "profiles"):
        logging.getLogger(ours).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        quiet_third_party_libraries()
    from slimline.progress import RichReporter, set_reporter

    set_reporter(RichReporter())
    try:
        return args.handler(args)
    except SlimlineError as err:
        _print_error(f"error ({type(err).__name__}): ", str(err))
        return err.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted: ", "finished stages are kept; partial ones were discarded.")
        return 130
    except Exception as err:  # a bug or an unexpected library failure: still exit with a stage failure
        logging.getLogger("slimline").debug("unexpected error", exc_info=True)
        _print_error("unexpected error: ", f"{type(err).__name__}: {err} (rerun with -v for details)")
        return EXIT_STAGE_FAILED


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["EXIT_BAD_INPUT", "main"]
