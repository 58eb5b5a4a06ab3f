"""Progress reporting that library code can call without printing.

Library code asks for a `Step`; the CLI installs a rich-backed reporter, tests and the Python
API get the silent one. A step with a total shows a bar; one without shows a spinner + elapsed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger("slimline")


class Step(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class Reporter(Protocol):
    def step(self, description: str, total: float | None = None) -> contextlib.AbstractContextManager[Step]: ...

    def note(self, message: str) -> None:
        """One line the user should see as it happens (a skipped optional step), not only in the report."""
        ...


class _SilentStep:
    def advance(self, amount: float = 1) -> None:
        return None


class SilentReporter:
    @contextlib.contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[Step]:
        log.info("%s", description)
        yield _SilentStep()

    def note(self, message: str) -> None:
        log.warning("%s", message)


class RichReporter:
    """Shows each step as a rich progress line on stderr (bar when the total is known)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    @contextlib.contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[Step]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total)

            class _RichStep:
                def advance(self, amount: float = 1) -> None:
                    progress.advance(task_id, amount)

            yield _RichStep()

    def note(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text("note: ", style="bold yellow") + Text(message))


_current: Reporter = SilentReporter()


def reporter() -> Reporter:
    return _current


def set_reporter(new: Reporter) -> None:
    global _current
    _current = new
