"""What every command prints with: a console sized for logs, error lines, and the report tables."""

from __future__ import annotations

from typing import Any


def console() -> Any:
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out.width = max(out.width, 180)  # logs and CI: keep the tables readable
    return out


def print_error(prefix: str, message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True).print(Text(prefix, style="bold red") + Text(message))


def print_report(report: Any) -> None:
    from rich.table import Table

    from slimline.bench.report import COMPARISON_HEADER, comparison_rows

    out = console()
    table = Table(title=f"slimline - profile {report.profile['name']} ({next(iter(report.measurements.latency))})")
    for column in COMPARISON_HEADER:
        table.add_column(column, overflow="fold")
    for row in comparison_rows(report):
        table.add_row(*row)
    out.print(table)
    budgets = Table(title="budgets")
    for column in ("budget", "limit", "measured", "status"):
        budgets.add_column(column)
    colour = {"pass": "green", "fail": "red", "not_measured": "yellow"}
    for b in report.budgets:
        measured = "-" if b.measured is None else f"{b.measured:.3f}"
        budgets.add_row(b.name, f"{b.kind} {b.limit:g}", measured, f"[{colour[b.status]}]{b.status}[/]")
    out.print(budgets)
    choice = getattr(report, "runtime_choice", None)
    if choice:  # target.runtime auto: which candidate was kept and why
        timed = ", ".join(f"{r['label']} {r['p50_ms']:.2f} ms" for r in choice.get("candidates", []) if "p50_ms" in r)
        out.print(f"runtime choice: {choice['chosen']} ({choice['reason']})" + (f"; side by side p50: {timed}"
                                                                               if timed else ""), markup=False)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    style = {"pass": "bold green", "fail": "bold red", "incomplete": "bold yellow"}[report.verdict]
    out.print(f"verdict: [{style}]{report.verdict.upper()}[/]")


def verdict_exit(report: Any) -> int:
    from slimline.core.errors import EXIT_BUDGET_FAILED, EXIT_OK

    return EXIT_OK if report.verdict == "pass" else EXIT_BUDGET_FAILED
