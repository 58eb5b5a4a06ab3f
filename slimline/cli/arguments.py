"""Argument types that refuse out-of-range numbers at parse time (argparse: exit 2, with the option named)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence

from slimline.core.suggest import did_you_mean


class SuggestingParser(argparse.ArgumentParser):
    """argparse's parser, with "did you mean" for a misspelt command or choice (`slimline hisotry`)."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            hint = did_you_mean(value, choices)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} ({hint}choose from {', '.join(choices)})")


def add_loudness_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """-q / -v / --log-level. Given at the top (`slimline -q run`) or after the command (`slimline run -q`):
    below the top they default to SUPPRESS, so a subcommand does not reset what the top level parsed."""
    default: dict[str, object] = {} if top else {"default": argparse.SUPPRESS}
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print only the result (the verdict line, the "
                          "JSON, errors): no tables, progress or warnings", **default)
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="log diagnostics to stderr, and let libraries print their own notes", **default)
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, **default,
                        help="level of slimline's log on stderr (default warning; -v: info; -q: error)")


LOG_LEVELS = ("debug", "info", "warning", "error")


def subparsers_of(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones included (`history list`)."""
    found, pending = [], [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                children = list(dict.fromkeys(action.choices.values()))
                found.extend(children)
                pending.extend(children)
    return found


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An int in [low, high]: `--port 70000` or `--threads 0` is a usage error, not an OverflowError later."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    parse.__name__ = f"integer {low}..{high}"
    return parse


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    """A finite float in [low, high]: `nan`, `inf` and `1e999` are usage errors, not a crash later."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value

    parse.__name__ = f"number {low:g}..{high:g}"
    return parse


#: A value that starts with a dash and a digit: `-5m`, `-1h`, `-0.5e3`. argparse takes it for an option
#: unless it is a plain negative number, and answers "expected one argument"; slimline has no option
#: spelled like that, so such a token after an option that takes a value is that option's value.
DASH_VALUE = re.compile(r"^-\d")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string, in every subcommand, that takes exactly one value."""
    options: set[str] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.option_strings and action.nargs is None:
                options.update(action.option_strings)
    return options


def attach_dash_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """`--time-budget -5m` -> `--time-budget=-5m`, so the option's own type check answers (exit 2, a clear
    message) instead of argparse's "expected one argument". An empty argument (`--out ''`, which a Path
    reads as the working directory) is refused here: no slimline argument means anything when empty."""
    options = _value_options(parser)
    for index, token in enumerate(argv):
        if token == "" or (token.startswith("--") and token.endswith("=") and token[:-1] in options):
            named = argv[index - 1] if token == "" and index and argv[index - 1] in options else token.rstrip("=")
            parser.error(f"argument {named or '#' + str(index + 1)}: an empty value names nothing (for a path, "
                         "write . for the working directory)")
    joined: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in options:
            value = next(tokens, None)
            if value is not None and DASH_VALUE.match(value):
                joined.append(f"{token}={value}")
                continue
            joined.append(token)
            if value is not None:
                joined.append(value)
            continue
        joined.append(token)
    return joined
