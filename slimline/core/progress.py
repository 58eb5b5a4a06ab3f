"""Progress reporting that library code can call without printing.

Library code asks for a `Step`; the front end decides what a step looks like. The CLI shows rich bars on a
terminal and plain lines elsewhere (a CI log): rich draws nothing on a stream that is not a terminal until
the step ends, so a 17-minute fine-tune would look hung. The Python API is silent unless asked
(`progress=True`: the CLI's lines on stderr; or a callable that receives `ProgressEvent`s). A step with a
total shows a bar; one without shows a spinner + elapsed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Literal, Protocol

log = logging.getLogger("slimline")

#: Plain lines (not a terminal) repeat the running step at least this often, so a log is never silent longer.
HEARTBEAT_S = 20.0


class Step(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class Reporter(Protocol):
    def step(self, description: str, total: float | None = None) -> contextlib.AbstractContextManager[Step]: ...

    def note(self, message: str) -> None:
        """One line the user should see as it happens (a skipped optional step), not only in the report."""
        ...


@dataclass(frozen=True)
class ProgressEvent:
    """What a progress callback receives: a step started, moved on, or ended (`failed`: left by an exception)."""

    description: str
    state: Literal["started", "advanced", "finished", "failed"]
    completed: float
    total: float | None
    elapsed_s: float


ProgressCallback = Callable[[ProgressEvent], None]


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
    """Shows each step as a rich progress line on stderr (bar when the total is known): for terminals."""

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


class _Counted:
    """A step's state, shared by the code that advances it and whoever reports it."""

    def __init__(self, description: str, total: float | None) -> None:
        self.description, self.total = description, total
        self.completed = 0.0
        self.started = time.monotonic()

    def advance(self, amount: float = 1) -> None:
        self.completed += amount

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def event(self, state: Literal["started", "advanced", "finished", "failed"]) -> ProgressEvent:
        return ProgressEvent(self.description, state, self.completed, self.total, self.elapsed_s())


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


class PlainReporter:
    """One line when a step starts and ends, and the innermost running step again every `heartbeat_s`
    (with its count and elapsed time): for CI logs and files, where a bar cannot redraw."""

    def __init__(self, stream: IO[str] | None = None, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.stream = stream
        self.heartbeat_s = heartbeat_s
        self._running: list[_Counted] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr  # looked up late: pytest and redirect_stderr swap sys.stderr
        with self._lock:
            stream.write(f"[slimline] {line}\n")
            stream.flush()

    @staticmethod
    def _count(step: _Counted) -> str:
        if step.total:
            return f" {step.completed:g}/{step.total:g} ({100 * step.completed / step.total:.0f}%),"
        return ""

    def _beat(self) -> None:
        while not self._wake.wait(self.heartbeat_s):
            with self._lock:
                current = self._running[-1] if self._running else None
            if current is not None:
                self._write(f"{current.description}:{self._count(current)} {_duration(current.elapsed_s())} so far")

    @contextlib.contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[Step]:
        counted = _Counted(description, total)
        self._write(f"{description} ..." + (f" (0/{total:g})" if total else ""))
        with self._lock:
            self._running.append(counted)
            if self._thread is None or not self._thread.is_alive():
                self._wake.clear()
                self._thread = threading.Thread(target=self._beat, name="slimline-progress", daemon=True)
                self._thread.start()
        failed = True
        try:
            yield counted
            failed = False
        finally:
            with self._lock:
                self._running.remove(counted)
                if not self._running:
                    self._wake.set()  # the heartbeat thread ends; the next step starts another
            self._write(f"{description}: {'stopped' if failed else 'done'} after {_duration(counted.elapsed_s())}")

    def note(self, message: str) -> None:
        """A line the user should see as it happens (issue 20's skipped optional steps use it)."""
        self._write(f"note: {message}")


class CallbackReporter:
    """Calls `callback(ProgressEvent)` when a step starts, advances and ends (the Python API's progress=callable).
    A callback that raises stops the work: that is the caller's way to cancel."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback

    @contextlib.contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[Step]:
        counted = _Counted(description, total)
        callback = self.callback

        class _CallbackStep:
            def advance(self, amount: float = 1) -> None:
                counted.advance(amount)
                callback(counted.event("advanced"))

        callback(counted.event("started"))
        try:
            yield _CallbackStep()
        except BaseException:
            callback(counted.event("failed"))
            raise
        callback(counted.event("finished"))

    def note(self, message: str) -> None:
        log.warning("%s", message)


_current: Reporter = SilentReporter()


def reporter() -> Reporter:
    return _current


def set_reporter(new: Reporter) -> None:
    global _current
    _current = new


def terminal_reporter(stream: IO[str] | None = None) -> Reporter:
    """Bars on a terminal, plain lines with a heartbeat anywhere else (what `slimline` and progress=True use)."""
    stream = stream or sys.stderr
    is_terminal = getattr(stream, "isatty", lambda: False)()
    return RichReporter() if is_terminal else PlainReporter(stream)


@contextlib.contextmanager
def reporting(progress: bool | ProgressCallback | Reporter | None) -> Iterator[None]:
    """The Python API's `progress=` for the length of one call: None/False leave the current reporter (silent
    unless the caller installed one), True shows progress on stderr, a callable receives ProgressEvents."""
    if progress is None or progress is False:
        yield
        return
    if progress is True:
        chosen: Reporter = terminal_reporter()
    elif hasattr(progress, "step"):
        chosen = progress  # type: ignore[assignment]
    elif callable(progress):
        chosen = CallbackReporter(progress)
    else:
        from slimline.core.errors import BadInputError

        raise BadInputError(f"progress must be True, False, None or a callable, not {type(progress).__name__}.",
                            fix="pass progress=True for lines on stderr, or a function that takes a ProgressEvent.")
    previous = reporter()
    set_reporter(chosen)
    try:
        yield
    finally:
        set_reporter(previous)
