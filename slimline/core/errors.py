"""One error family; each subclass knows its stage and the CLI exit code it maps to.

Exit codes: 0 within budget, 1 a budget failed, 2 bad input or config, 3 a stage failed.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import Any

EXIT_OK = 0
EXIT_BUDGET_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STAGE_FAILED = 3


_SHORT = reprlib.Repr()  # keyword arguments need Python 3.12
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxset = 2, 4, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = 60
MAX_VALUE_CHARS = 120


def shorten(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A user's value for an error message: bounded in depth, width and length.

    Never `repr()` a whole user value into a message: a YAML alias bomb expands to billions of
    nodes, and a 50 MB string would be copied into every log line. reprlib stops at depth 2.
    """
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SlimlineError(Exception):
    """Base error: the message says what failed, where, and how to fix it."""

    exit_code = EXIT_STAGE_FAILED

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self._text())

    def _text(self) -> str:
        return self.message if self.fix is None else f"{self.message}\n  fix: {self.fix}"

    def reword(self, rewrite: Callable[[str], str]) -> None:
        """Rewrite the message and the fix in place: the Python API names its parameters where the CLI's
        messages name flags (slimline.core.frontend)."""
        self.message = rewrite(self.message)
        self.fix = None if self.fix is None else rewrite(self.fix)
        self.args = (self._text(), *self.args[1:])


class BadInputError(SlimlineError):
    """Anything the user handed us that cannot be used as it is."""

    exit_code = EXIT_BAD_INPUT


class CheckpointError(BadInputError):
    """The input checkpoint or a model directory is missing, corrupt or inconsistent."""


class ProfileError(BadInputError):
    """A profile YAML is missing or invalid."""


class RecipeError(BadInputError):
    """A recipe names an unknown pass, has a misspelled key, or orders passes impossibly."""


class DataError(BadInputError):
    """A dataset spec points at nothing usable (missing file, empty split, unknown column)."""


class OutputError(BadInputError):
    """The output location cannot be written (permissions, full disk)."""


class MissingDependency(BadInputError):
    """An optional library or device a requested path needs is not available on this machine."""


class PassError(SlimlineError):
    """A compression pass failed while running."""


class StepNotApplicable(PassError):
    """A pass found that its work does not apply to this model (no fusion rules, nothing fused, no weight op
    quantized, a bigger model). A recipe step marked `optional: true` is then skipped and the run goes on; a
    required step fails with this error (exit 3)."""

    def __init__(self, message: str, *, reason: str, fix: str | None = None) -> None:
        self.reason = reason  # short, for the skip line: "not available for deberta-v2"
        super().__init__(message, fix=fix)


class ExportError(SlimlineError):
    """Export failed or the exported model does not match the source (parity)."""


class BenchError(SlimlineError):
    """A benchmark run failed."""


class BundleError(BadInputError):
    """A deployment bundle cannot be built from this input, or fails verification (tampered, incomplete,
    unsafe archive, or a runtime this machine cannot load it with)."""
