"""The command line this process was started with, for reports (`slimline run ...`); None through the Python API.

The CLI records it once at start-up; library code only reads it, so a report made by `slimline.run()` in
someone's script does not claim that script's argv as a slimline command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

_command_line: str | None = None


def set_command_line(argv: Sequence[str] | None, program: str = "slimline") -> None:
    global _command_line
    _command_line = None if argv is None else shlex.join([program, *argv])


def command_line() -> str | None:
    return _command_line
