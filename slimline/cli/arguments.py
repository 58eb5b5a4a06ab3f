"""Argument types that refuse out-of-range numbers at parse time (argparse: exit 2, with the option named)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
