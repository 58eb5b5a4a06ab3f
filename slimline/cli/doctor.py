"""`slimline doctor [--json]`: what this machine can run. Registered by slimline.cli.main.build_parser."""

from __future__ import annotations

import argparse

from slimline.cli.console import add_json_option, print_json
from slimline.cli.console import console as _console
from slimline.core.errors import EXIT_BAD_INPUT, EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from slimline.core.doctor import diagnose

    report = diagnose(refresh=args.refresh)
    exit_code = EXIT_BAD_INPUT if report.broken else EXIT_OK  # the export stack cannot import: CI must stop
    if args.json:
        print_json("doctor", **report.model_dump(mode="json"))
        return exit_code
    console = _console()
    console.print(f"python {report.python} on {report.platform}", markup=False)
    console.print(f"CPU: {report.cpu_model} ({', '.join(report.cpu_flags) or 'no relevant instruction sets'})",
                  markup=False)
    caps = report.cpu_capabilities
    console.print(f"CPU class: {caps.get('kind')}; INT8 dot products (VNNI): {'yes' if caps.get('vnni') else 'no'}; "
                  f"bf16 in hardware: {'yes' if caps.get('bf16') else 'no'}; AMX: {'yes' if caps.get('amx') else 'no'}",
                  markup=False)
    console.print("versions: " + ", ".join(f"{name} {version}" for name, version in report.versions.items()),
                  markup=False)
    table = Table(title="runtimes, providers and devices")
    for column in ("capability", "status", "found", "fix"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        status = "[green]yes[/]" if check.ok else "[red]no[/]"
        table.add_row(escape(check.name), status, escape(check.detail), escape(check.fix or ""))  # fixes hold [extras]
    console.print(table)
    for check in report.broken:
        console.print(f"[bold red]broken:[/] {escape(check.name)}: {escape(check.detail)}\n"
                      f"  fix: {escape(check.fix or '')}")
    if report.cached:
        console.print("cached: " + ", ".join(f"{name} (probed {at})" for name, at in report.cached.items()) +
                      "; `slimline doctor --refresh` probes again", markup=False)
    return exit_code


def add_doctor_command(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help="which runtimes, execution providers and GPUs this machine has")
    add_json_option(doctor)
    doctor.add_argument("--refresh", action="store_true", help="probe the export stack and torch again instead of "
                        "using this environment's cached answers")
    doctor.set_defaults(handler=cmd_doctor)
