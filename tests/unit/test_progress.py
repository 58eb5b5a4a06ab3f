"""Progress: rich bars on a terminal, plain lines with a heartbeat in a log (a CI job is never silent for
minutes), and nothing from the Python API unless asked (progress=True or a callback)."""

from __future__ import annotations

import io
import time

import pytest

from slimline.core.errors import BadInputError
from slimline.core.progress import (
    CallbackReporter,
    PlainReporter,
    ProgressEvent,
    RichReporter,
    SilentReporter,
    reporter,
    reporting,
    terminal_reporter,
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_stream_that_is_not_a_terminal_gets_plain_lines_and_a_terminal_gets_bars() -> None:
    assert isinstance(terminal_reporter(io.StringIO()), PlainReporter)
    assert isinstance(terminal_reporter(_Terminal()), RichReporter)


def test_plain_lines_repeat_the_running_step_with_its_count_until_it_ends() -> None:
    stream = io.StringIO()
    plain = PlainReporter(stream, heartbeat_s=0.05)
    with plain.step("demo: fine-tuning", total=10) as step:
        step.advance(4)
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[slimline] demo: fine-tuning ... (0/10)"
    beats = [line for line in lines if "so far" in line]
    assert len(beats) >= 2 and "4/10 (40%)" in beats[-1]
    assert lines[-1].startswith("[slimline] demo: fine-tuning: done after")
    time.sleep(0.15)
    assert stream.getvalue().splitlines() == lines  # the heartbeat stops with the step


def test_a_step_left_by_an_exception_says_it_stopped() -> None:
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt), PlainReporter(stream, heartbeat_s=10).step("export"):
        raise KeyboardInterrupt
    assert stream.getvalue().splitlines()[-1].startswith("[slimline] export: stopped after")


def test_the_heartbeat_names_the_innermost_running_step() -> None:
    stream = io.StringIO()
    plain = PlainReporter(stream, heartbeat_s=0.05)
    with plain.step("stage 02"), plain.step("fallback: ranking nodes", total=3):
        time.sleep(0.2)
    beats = [line for line in stream.getvalue().splitlines() if "so far" in line]
    assert beats and all("fallback: ranking nodes" in line for line in beats)


def test_a_callback_receives_every_step_as_events() -> None:
    events: list[ProgressEvent] = []
    callback = CallbackReporter(events.append)
    with callback.step("calibration", total=2) as step:
        step.advance()
        step.advance()
    assert [e.state for e in events] == ["started", "advanced", "advanced", "finished"]
    assert events[-1].completed == 2 and events[-1].total == 2 and events[-1].elapsed_s >= 0


def test_the_api_is_silent_unless_asked_and_restores_the_reporter_after_the_call() -> None:
    before = reporter()
    assert isinstance(before, SilentReporter)
    events: list[ProgressEvent] = []
    with reporting(events.append), reporter().step("export"):
        pass
    assert reporter() is before and [e.state for e in events] == ["started", "finished"]
    with reporting(None):
        assert reporter() is before
    with pytest.raises(BadInputError, match="progress=True"), reporting("yes"):  # type: ignore[arg-type]
        pass
