"""The `slimline` command's entry point: the parser from the command modules, logging, and exit codes.

Conventions every command follows: `--version`; `-q/--quiet` (the result line only), `-v/--verbose` and
`--log-level`; `--json` on every list, show, verify, history and compare command (one schema-versioned
document on stdout); `--checkpoint` for the model going in (`--model` is the same option); "did you mean"
for a misspelt command or choice; progress as rich bars on a terminal and as plain lines (repeated at least
every 20 s) in a log.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from slimline.cli.arguments import SuggestingParser, add_loudness_options, attach_dash_values, subparsers_of
from slimline.cli.catalogue import add_catalogue_commands
from slimline.cli.console import print_error, set_quiet
from slimline.cli.deploy import add_deploy_commands
from slimline.cli.doctor import add_doctor_command
from slimline.cli.history import add_history_commands
from slimline.cli.search import add_search_command
from slimline.cli.stages import add_stage_commands
from slimline.core.artifact import describe_os_error
from slimline.core.errors import EXIT_BAD_INPUT, EXIT_STAGE_FAILED, SlimlineError
from slimline.core.frontend import cli_calls


def build_parser() -> argparse.ArgumentParser:
    from slimline import __version__

    parser = SuggestingParser(prog="slimline", description="Compress, export and benchmark fine-tuned models "
                              "against a deployment target's budgets. Exit codes: 0 within budget, 1 a budget failed "
                              "or the verdict is inconclusive or incomplete, 2 bad input, 3 a stage failed.")
    parser.add_argument("--version", action="version", version=f"slimline {__version__}")
    add_loudness_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    add_stage_commands(sub)  # run, demo, export, compress, bench
    add_search_command(sub)
    add_catalogue_commands(sub)  # profiles, recipes, passes
    add_deploy_commands(sub)  # package, verify, serve
    add_doctor_command(sub)
    add_history_commands(sub)  # history list|show|ship|export, compare
    for command in subparsers_of(parser):
        add_loudness_options(command)
    return parser


def log_level(args: argparse.Namespace) -> int:
    if args.log_level:
        return getattr(logging, args.log_level.upper())
    return logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING


def quiet_third_party_libraries() -> None:
    """Libraries' advice to their developers (tracer notes, deprecations, "newly initialized" weights)
    drowns the progress lines a user reads; -v brings it back. slimline's own warnings use logging."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.simplefilter("ignore")  # every category: torch's TracerWarning is none of the usual three
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs its advice on the root logger


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(attach_dash_values(parser, arguments))
    from slimline.core.invocation import set_command_line

    set_command_line(arguments)  # reports say which command made them
    level = log_level(args)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("slimline").setLevel(level)
    if not args.verbose and level > logging.DEBUG:
        quiet_third_party_libraries()
    from slimline.core.progress import SilentReporter, reporter, set_reporter, terminal_reporter

    set_quiet(args.quiet)
    caller_reporter = reporter()  # restored at the end: main() called in process (tests, scripts) leaks nothing
    set_reporter(SilentReporter() if args.quiet else terminal_reporter(sys.stderr))
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        """SIGTERM takes Ctrl-C's path: finished stages stay, partial ones and temporary directories are
        removed, and the benchmark worker (its own process group) is killed instead of left running."""
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with cli_calls():  # refusals keep naming flags (the Python API's name parameters)
            return args.handler(args)
    except SlimlineError as err:
        print_error(f"error ({type(err).__name__}): ", str(err))
        return err.exit_code
    except KeyboardInterrupt:
        why = "terminated (SIGTERM)" if terminated else "interrupted"
        print_error(f"{why}: ", "finished stages are kept; partial ones and temporary files were removed.")
        return 128 + signal.SIGTERM if terminated else 130
    except OSError as err:  # e.g. the temporary directory filled up: a problem of the machine, not a bug
        print_error("error (OutputError): ", str(describe_os_error(err, Path(err.filename or "."))))
        return EXIT_BAD_INPUT
    except Exception as err:  # a bug or an unexpected library failure: still exit with a stage failure
        logging.getLogger("slimline").debug("unexpected error", exc_info=True)
        print_error("unexpected error: ", f"{type(err).__name__}: {err} (rerun with -v for details)")
        return EXIT_STAGE_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
        set_reporter(caller_reporter)


if __name__ == "__main__":
    sys.exit(main())

