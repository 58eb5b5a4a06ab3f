"""The `slimline` command's entry point: the parser from the command modules, logging, and exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from slimline.cli.arguments import attach_dash_values
from slimline.cli.catalogue import add_catalogue_commands
from slimline.cli.console import print_error
from slimline.cli.deploy import add_deploy_commands
from slimline.cli.doctor import add_doctor_command
from slimline.cli.history import add_history_commands
from slimline.cli.search import add_search_command
from slimline.cli.stages import add_stage_commands
from slimline.core.artifact import describe_os_error
from slimline.core.errors import EXIT_BAD_INPUT, EXIT_STAGE_FAILED, SlimlineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimline", description="Compress, export and benchmark fine-tuned models "
                                     "against a deployment target's budgets. Exit codes: 0 within budget, 1 a "
                                     "budget failed or the verdict is inconclusive or incomplete, 2 bad input, "
                                     "3 a stage failed.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    add_stage_commands(sub)  # run, demo, export, compress, bench
    add_search_command(sub)
    add_catalogue_commands(sub)  # profiles, recipes, passes
    add_deploy_commands(sub)  # package, verify, serve
    add_doctor_command(sub)
    add_history_commands(sub)  # history list|show|ship|export, compare
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
    logging.getLogger("slimline").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(attach_dash_values(parser, arguments))
    from slimline.core.invocation import set_command_line

    set_command_line(arguments)  # reports say which command made them
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        quiet_third_party_libraries()
    from slimline.core.progress import RichReporter, set_reporter

    set_reporter(RichReporter())
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        """SIGTERM takes Ctrl-C's path: finished stages stay, partial ones and temporary directories are
        removed, and the benchmark worker (its own process group) is killed instead of left running."""
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
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


if __name__ == "__main__":
    sys.exit(main())

