"""`slimline history list | show | ship | export | import` and `slimline compare`: arguments in, slimline.api out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from slimline import api
from slimline.cli.arguments import bounded_int
from slimline.cli.console import add_json_option, console, print_json, print_report
from slimline.core.errors import EXIT_OK

HISTORY_HELP = "history database (default: $SLIMLINE_HISTORY, else history.sqlite in the user data directory)"


def add_history_options(parser: argparse.ArgumentParser) -> None:
    """--history / --no-history / --mlflow-uri for the commands that record a run (run, bench, demo)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--history", metavar="PATH", help=HISTORY_HELP)
    group.add_argument("--no-history", action="store_true", help="do not record this run in the history")
    parser.add_argument("--mlflow-uri", metavar="URI",
                        help="also log the run to MLflow (a file: path or a tracking server; "
                             "pip install 'slimline[mlflow]')")


def history_argument(args: argparse.Namespace) -> str | bool | None:
    """What api.run/api.bench take as `history`: False for --no-history, a path, or None (default)."""
    return False if getattr(args, "no_history", False) else getattr(args, "history", None)


def record_summary(record: Any) -> dict[str, Any]:
    """One recorded run for --json: its identity and headline figures (the full report under `history show`)."""
    final = record.report.measurements
    stats = final.primary_latency()
    return {"id": record.id, "created_at": record.created_at, "kind": record.kind, "out_dir": record.out_dir,
            "profile": record.profile_name, "checkpoint": record.checkpoint,
            "checkpoint_sha256": record.checkpoint_sha256, "artifact_sha256": record.artifact_sha256,
            "machine_class": record.machine_class, "machine": record.machine_description,
            "p50_ms": stats.p50_ms, "p50_ci95_ms": list(stats.p50_ci95_ms), "accuracy_pct": final.accuracy_pct,
            "size_mb": final.size_mb, "verdict": record.verdict, "shipped_at": record.shipped_at}


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    records = api.history_runs(history=args.history, checkpoint=args.checkpoint, profile=args.profile,
                               limit=args.limit)
    if args.json:
        print_json("history-runs", items=[record_summary(record) for record in records])
        return EXIT_OK
    table = Table(title=f"slimline history ({len(records)} runs)")
    for column in ("run", "created", "kind", "profile", "checkpoint", "artifact", "machine", "p50 ms", "accuracy %",
                   "size MB", "verdict", "shipped"):
        table.add_column(column, overflow="fold")
    for record in records:
        final = record.report.measurements
        stats = final.primary_latency()
        table.add_row(str(record.id), record.created_at, record.kind, record.profile_name,
                      Path(record.checkpoint).name, (record.artifact_sha256 or "-")[:12],
                      record.machine_description or "-", f"{stats.p50_ms:.3f}",
                      "-" if final.accuracy_pct is None else f"{final.accuracy_pct:.2f}", f"{final.size_mb:.1f}",
                      record.verdict.upper(), record.shipped_at or "")
    console().print(table)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    record = api.history_run(args.run, history=args.history)
    if args.json:
        print_json("history-run", run=record_summary(record), report=record.report.model_dump(mode="json"))
        return EXIT_OK
    out = console()
    out.print(f"run #{record.id} ({record.kind}) {record.created_at}: {record.out_dir}")
    out.print(f"checkpoint {record.checkpoint} (sha256 {(record.checkpoint_sha256 or '-')[:12]}), artifact sha256 "
              f"{(record.artifact_sha256 or '-')[:12]}, machine {record.machine_description} "
              f"(class {record.machine_class})" + (f", shipped {record.shipped_at}" if record.shipped_at else ""))
    print_report(record.report)
    return EXIT_OK


def cmd_ship(args: argparse.Namespace) -> int:
    record = api.ship(args.run, history=args.history, note=args.note or "")
    if args.json:
        print_json("history-ship", run=record_summary(record))
        return EXIT_OK
    console().print(f"run #{record.id} marked shipped at {record.shipped_at} (profile {record.profile_name}, "
                    f"artifact {(record.artifact_sha256 or '-')[:12]}, {record.machine_description})")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    written = api.export_history(args.format, out=args.out, history=args.history, force=args.force)
    if args.out is None:
        sys.stdout.write(str(written))
    else:
        console().print(f"wrote {written}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    run_id, new = api.import_history_record(args.record, history=args.history)
    if args.json:
        print_json("history-import", id=run_id, new=new)
        return EXIT_OK
    console().print(f"recorded as run #{run_id}" if new else f"already recorded as run #{run_id}; nothing added")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from slimline.history.compare import HEADER

    comparison = api.compare(args.run_a, args.run_b, history=args.history, html=args.html, force=args.force,
                             retime=args.retime)
    if args.json:
        retimed = comparison.retimed
        print_json("compare", a=record_summary(comparison.a), b=record_summary(comparison.b),
                   rows=[dict(zip(HEADER, row, strict=True)) for row in comparison.rows],
                   budgets=[dict(zip(("budget", "A", "B"), row, strict=True)) for row in comparison.budget_rows],
                   retimed=None if retimed is None else {**vars(retimed), "beyond_spread": retimed.beyond_spread},
                   notes=comparison.notes, warnings=comparison.warnings)
        return EXIT_OK
    out = console()
    table = Table(title=f"compare #{comparison.a.id} (A) vs #{comparison.b.id} (B)")
    for column in HEADER:
        table.add_column(column, overflow="fold")
    for row in comparison.rows:
        table.add_row(*row)
    out.print(table)
    budgets = Table(title="budgets")
    for column in ("budget", "A", "B"):
        budgets.add_column(column)
    for row in comparison.budget_rows:
        budgets.add_row(*row)
    out.print(budgets)
    for warning in comparison.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    for note in comparison.notes:
        out.print(f"note: {note}", markup=False)
    if args.html:
        out.print(f"html: {args.html}")
    return EXIT_OK


def add_history_commands(sub: argparse._SubParsersAction) -> None:
    history = sub.add_parser("history", help="runs recorded by run/bench/search: list, show, ship, export, import")
    actions = history.add_subparsers(dest="history_command", required=True)

    listing = actions.add_parser("list", help="recorded runs, newest first")
    listing.add_argument("--checkpoint", help="a checkpoint path as recorded, or a checkpoint sha256 prefix")
    listing.add_argument("--profile", help="profile name")
    listing.add_argument("--limit", type=bounded_int(1, 1_000_000), default=50, help="at most this many (50)")
    listing.add_argument("--history", metavar="PATH", help=HISTORY_HELP)
    add_json_option(listing)
    listing.set_defaults(handler=cmd_list)

    show = actions.add_parser("show", help="one run: hashes, machine, measurements and budgets")
    show.add_argument("run", help="run id (from `slimline history list`)")
    show.add_argument("--history", metavar="PATH", help=HISTORY_HELP)
    add_json_option(show)
    show.set_defaults(handler=cmd_show)

    ship = actions.add_parser("ship", help="mark a run as the shipped artifact (the regression budget's reference)")
    ship.add_argument("run", help="run id")
    ship.add_argument("--note", help="why or where it shipped")
    ship.add_argument("--history", metavar="PATH", help=HISTORY_HELP)
    add_json_option(ship)
    ship.set_defaults(handler=cmd_ship)

    export = actions.add_parser("export", help="every recorded figure with its spread, one row per metric")
    export.add_argument("--format", choices=["csv", "parquet"], default="csv")
    export.add_argument("--out", type=Path, help="file to write (CSV goes to stdout without it)")
    export.add_argument("--history", metavar="PATH", help=HISTORY_HELP)
    export.add_argument("--force", action="store_true", help="replace --out even when slimline did not write it")
    export.set_defaults(handler=cmd_export)

    importing = actions.add_parser("import", help="add a run that could not be recorded when it finished "
                                   "(OUT/history-record.json)")
    importing.add_argument("record", type=Path, help="OUT/history-record.json, or the run directory OUT")
    importing.add_argument("--history", metavar="PATH", help=HISTORY_HELP)
    add_json_option(importing)
    importing.set_defaults(handler=cmd_import)

    compare = sub.add_parser("compare", help="two recorded runs side by side: latency CIs, accuracy (paired SE), "
                                             "size, budgets")
    compare.add_argument("run_a", metavar="RUN_A")
    compare.add_argument("run_b", metavar="RUN_B")
    compare.add_argument("--html", type=Path, help="also write the comparison as a self-contained HTML page")
    compare.add_argument("--history", metavar="PATH", help=HISTORY_HELP)
    compare.add_argument("--force", action="store_true", help="replace --html even when slimline did not write it")
    compare.add_argument("--retime", action="store_true",
                         help="time both runs' artifacts again, side by side in one process, now (both on this "
                              "machine, CPU runtimes), and judge the latency difference on that: each run's own "
                              "interval is within-run only")
    add_json_option(compare)
    compare.set_defaults(handler=cmd_compare)
