"""The runtime registry: one folder per runtime, found through slimline.core.runtime_names.

`get_runtime("openvino")` imports `slimline.runtimes.openvino` (which imports no heavy library itself)
and returns its RUNTIME, the answers every caller needs: which formats it loads, what export must
produce for it, how to check it is installed, its runner, its bundle layout and serving loader. The
layer sits just above slimline.formats, so passes (compress), exporters, the benchmark, the pipeline,
bundles and the server can all ask it; the profile schema, below it, checks names only.
"""

from __future__ import annotations

import functools
import importlib

from slimline.core.runtime_names import RUNTIMES, runtime_entry
from slimline.runtimes.base import Runner, RunnerSpec, Runtime


@functools.cache
def get_runtime(name: str) -> Runtime:
    """The runtime registered as `name`; ValueError (with the known names) for an unknown one."""
    entry = runtime_entry(name)
    runtime = getattr(importlib.import_module(entry.module), "RUNTIME", None)
    if not isinstance(runtime, Runtime) or runtime.name != name:
        raise RuntimeError(f"{entry.module} must define RUNTIME, a Runtime named {name!r}")
    return runtime


def all_runtimes() -> list[Runtime]:
    return [get_runtime(name) for name in sorted(RUNTIMES)]


def runtime_for_format(model_format: str, preferred: str | None = None) -> Runtime:
    """The runtime that runs a model of `model_format`: `preferred` when it loads that format, else the one
    whose engine the format is (an ONNX intermediate of a TensorRT run is timed on ONNX Runtime)."""
    if preferred is not None and model_format in get_runtime(preferred).loads:
        return get_runtime(preferred)
    owners = [r for r in all_runtimes() if r.engine_format == model_format] or \
             [r for r in all_runtimes() if model_format in r.loads]
    if not owners:
        raise ValueError(f"no runtime loads {model_format!r} models")
    return owners[0]


def runtimes_loading(model_format: str) -> list[str]:
    return [r.name for r in all_runtimes() if model_format in r.loads]


def engine_runtime(engine_format: str) -> Runtime | None:
    """The runtime whose bundles hold `engine_format` engines (None: not deployable)."""
    return next((r for r in all_runtimes() if r.engine_format == engine_format and r.engine_file_name), None)


def make_runner(spec: RunnerSpec) -> Runner:
    """The runner for `spec.runtime`; each imports its runtime lazily."""
    return get_runtime(spec.runtime).make_runner(spec)


__all__ = ["Runner", "RunnerSpec", "Runtime", "all_runtimes", "engine_runtime", "get_runtime", "make_runner",
           "runtime_for_format", "runtimes_loading"]
