"""Which front end is calling, so a refusal speaks its language: flags on the CLI, parameters in Python.

Messages are written once, in the CLI's words ("pass --eval-data FILE.csv"), because that is where most users
meet them and because the same message is raised from deep inside the pipeline, which should not know who
called it. The CLI marks its calls (`cli_calls`); every public API function runs inside `python_call`,
which rewrites a `SlimlineError` that leaves it for a Python caller: each slimline flag becomes the
parameter it maps to ("pass eval_data=FILE.csv", "force=True"). Shell commands quoted in backticks
(`slimline run --config run.yaml`) and other programs' flags (`pip install --force-reinstall`) stay as
they are: they are things to type in a shell.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

from slimline.core.errors import SlimlineError

FrontEnd = Literal["python", "cli"]
_front_end: ContextVar[FrontEnd] = ContextVar("slimline_front_end", default="python")

#: slimline's flags that take a value -> the API parameter that takes it.
VALUE_FLAGS: dict[str, str] = {
    "checkpoint": "checkpoint", "model": "checkpoint", "out": "out", "profile": "profile", "recipe": "recipe",
    "eval-data": "eval_data", "task": "task", "base": "base", "model-factory": "model_factory", "weights": "weights",
    "inputs": "inputs", "evaluator": "evaluator", "config": "config", "baseline": "baseline", "history": "history",
    "mlflow-uri": "mlflow_uri", "space": "space", "trials": "trials", "time-budget": "time_budget_s", "seed": "seed",
    "executor": "executor", "ray-address": "ray_address", "parallel": "parallel", "confidence-z": "confidence_z",
    "opset": "opset", "exporter": "exporter", "name": "name", "sign": "sign_key", "key": "key",
    "expect-sha256": "expect_sha256", "html": "html", "note": "note", "format": "fmt",
}
#: slimline's switches -> the argument that means the same.
SWITCHES: dict[str, str] = {"force": "force=True", "tar": "tar=True", "bench-export": "bench_export=True",
                            "no-history": "history=False", "retime": "retime=True"}

_FLAG = re.compile(r"(?P<the>\bthe )?(?<![\w-])--([a-z][a-z0-9-]*)(?![\w-])(?:(=| )(?!--)(\S+))?")
_COMMAND_SPAN = re.compile(r"`(?:slimline|pip|python|tritonserver|openssl)\b[^`]*`")
_TRAILING = ".,;:)!?"


def front_end() -> FrontEnd:
    return _front_end.get()


@contextlib.contextmanager
def cli_calls() -> Iterator[None]:
    """Everything inside is the CLI's doing: messages keep their flags."""
    token = _front_end.set("cli")
    try:
        yield
    finally:
        _front_end.reset(token)


def _is_value(token: str) -> bool:
    """A flag's value rather than the next word of the sentence: a path, a number, a placeholder (DIR, FILE.csv),
    a quoted or hyphenated name. A plain lowercase word ("or", "is", "with") is prose."""
    core = token.rstrip(_TRAILING)
    return bool(core) and not core.startswith(("(", "--")) and not re.fullmatch(r"[a-z]+", core)


def _parameter(match: re.Match[str]) -> str:
    flag, separator, following = match.group(2), match.group(3), match.group(4)
    tail = f"{separator}{following}" if separator else ""
    the = match.group("the") or ""
    if flag in SWITCHES:
        return the + SWITCHES[flag] + tail
    if flag not in VALUE_FLAGS:
        return match.group(0)  # not one of slimline's flags
    name = VALUE_FLAGS[flag]
    if match.group("the") and (following is None or not _is_value(following)):  # "check the --eval-data path"
        return f"{the}{name}{tail}"
    if following is not None and (separator == "=" or _is_value(following)):
        core = following.rstrip(_TRAILING)
        return f"{the}{name}={core}{following[len(core):]}"
    return f"{the}{name}=…{tail}"


def flags_to_parameters(text: str) -> str:
    """`text` with slimline's flags named as the Python API's parameters, outside quoted shell commands."""
    pieces, last = [], 0
    for span in _COMMAND_SPAN.finditer(text):
        pieces.append(_FLAG.sub(_parameter, text[last:span.start()]))
        pieces.append(span.group(0))
        last = span.end()
    pieces.append(_FLAG.sub(_parameter, text[last:]))
    return "".join(pieces)


@contextlib.contextmanager
def python_call() -> Iterator[None]:
    """Around a public API function: a SlimlineError raised for a Python caller names parameters, not flags."""
    try:
        yield
    except SlimlineError as err:
        if front_end() == "python":
            err.reword(flags_to_parameters)
        raise
