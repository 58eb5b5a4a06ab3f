"""What every command prints with: a console sized for logs, error lines, the report tables, and --json."""

from __future__ import annotations

import json
import sys
from typing import Any

#: The envelope of every `--json` output: {"schema_version": 1, "kind": "...", ...}. Raise it when a field
#: changes meaning or goes away; adding a field keeps it.
JSON_SCHEMA_VERSION = 1

_quiet = False


def set_quiet(quiet: bool) -> None:
    """-q: commands print their result line only (no tables, progress or warnings; errors still go to stderr)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def console() -> Any:
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out.width = max(out.width, 180)  # logs and CI: keep the tables readable
    return out


def details() -> Any:
    """The console for what -q leaves out (tables, notes): a silent one under -q."""
    out = console()
    out.quiet = _quiet
    return out


def add_json_option(parser: Any) -> None:
    parser.add_argument("--json", action="store_true",
                        help=f"print one JSON document (schema_version {JSON_SCHEMA_VERSION}) instead of tables")


def print_json(kind: str, **fields: Any) -> None:
    """One JSON document on stdout, plain (rich would wrap long strings and break it), schema-versioned."""
    sys.stdout.write(json.dumps({"schema_version": JSON_SCHEMA_VERSION, "kind": kind, **fields}, indent=2,
                                default=str) + "\n")


def print_error(prefix: str, message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True).print(Text(prefix, style="bold red") + Text(message))


STATUS_COLOURS = {"pass": "green", "fail": "red", "inconclusive": "magenta", "not_measured": "yellow"}
VERDICT_STYLES = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold magenta", "incomplete": "bold yellow"}


def _table(title: str, header: list[str], rows: list[list[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def print_report(report: Any) -> None:
    from rich.table import Table

    from slimline.benchmarking.report import (
        COMPARISON_HEADER,
        SIDE_BY_SIDE_HEADER,
        comparison_rows,
        side_by_side_rows,
        timing_sentence,
    )

    out = details()
    shape = next(iter(report.measurements.latency))
    out.print(_table(f"slimline - profile {report.profile['name']} ({shape}), each model timed alone",
                     COMPARISON_HEADER, comparison_rows(report)))
    side_by_side = side_by_side_rows(report)
    if side_by_side:
        out.print(_table("side by side in one process (what the timing budgets are judged on)", SIDE_BY_SIDE_HEADER,
                         side_by_side))
    budgets = Table(title="budgets")
    for column in ("budget", "limit", "measured", "95% interval", "measurement", "status"):
        budgets.add_column(column)
    for b in report.budgets:
        measured = "-" if b.measured is None else f"{b.measured:.3f}"
        interval = "-" if b.interval is None else f"[{b.interval[0]:.3f}, {b.interval[1]:.3f}]"
        budgets.add_row(b.name, f"{b.kind} {b.limit:g}", measured, interval, (b.measurement or "-").replace("_", " "),
                        f"[{STATUS_COLOURS.get(b.status, 'white')}]{b.status}[/]")
    out.print(budgets)
    choice = getattr(report, "runtime_choice", None)
    if choice:  # target.runtime auto: which candidate was kept and why
        timed = ", ".join(f"{r['label']} {r['p50_ms']:.2f} ms" for r in choice.get("candidates", []) if "p50_ms" in r)
        out.print(f"runtime choice: {choice['chosen']} ({choice['reason']})" + (f"; side by side p50: {timed}"
                                                                               if timed else ""), markup=False)
    for skipped in getattr(report, "skipped_steps", []):
        out.print(f"[yellow]skipped:[/] {skipped['line']}")
    out.print(timing_sentence(report))
    for b in report.budgets:
        if b.status == "inconclusive":
            out.print(f"[magenta]inconclusive:[/] {b.name}: {b.note}")
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    console().print(f"verdict: [{VERDICT_STYLES.get(report.verdict, 'bold')}]{report.verdict.upper()}[/]")


def verdict_exit(report: Any) -> int:
    """0 only for pass: fail, inconclusive and incomplete exit 1 (a gate fails closed)."""
    from slimline.core.errors import EXIT_BUDGET_FAILED, EXIT_OK

    return EXIT_OK if report.verdict == "pass" else EXIT_BUDGET_FAILED
