"""slimline: compress, export and benchmark fine-tuned models against a deployment target's budgets.

The Python API mirrors the CLI::

    import slimline
    report = slimline.run("my-checkpoint", profile="cpu", out="runs/cpu")
    print(report.verdict, report.measurements.latency)

`run`, `rerun`, `compress`, `export`, `bench`, `search`, `package`, `verify` and `demo_checkpoint` are slimline.api's
functions. Importing this package stays cheap: no torch, onnxruntime, transformers, tensorrt or
bitsandbytes until a function needs them (each is resolved on first use).

`slimline.compress`, `slimline.export` and `slimline.bench` are also the packages of those layers; so
that `slimline.compress(...)` keeps working after `import slimline.compress.quantize` has bound the
name to the package, those three packages are callable modules that forward the call to the API.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from slimline.core.errors import (
    BadInputError,
    BenchError,
    BundleError,
    CheckpointError,
    DataError,
    ExportError,
    MissingDependency,
    OutputError,
    PassError,
    ProfileError,
    RecipeError,
    SlimlineError,
)

__version__ = "0.1.0"

_API_FUNCTIONS = ("run", "rerun", "compress", "export", "bench", "search", "package", "verify", "demo_checkpoint")
_LAYER_PACKAGES = ("compress", "export", "bench")


class _CallableLayer(types.ModuleType):
    """A layer package (slimline.compress, .export, .bench) that is also the API function of its name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = importlib.import_module("slimline.api")
        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _API_FUNCTIONS:
        return getattr(importlib.import_module("slimline.api"), name)
    raise AttributeError(f"module 'slimline' has no attribute {name!r}")


for _name in _LAYER_PACKAGES:  # their __init__ modules hold only a docstring: importing them is free
    _module = importlib.import_module(f"{__name__}.{_name}")
    _module.__class__ = _CallableLayer
del _name, _module

__all__ = ["BadInputError", "BenchError", "BundleError", "CheckpointError", "DataError", "ExportError",
           "MissingDependency", "OutputError", "PassError", "ProfileError", "RecipeError", "SlimlineError",
           "__version__", "bench", "compress", "demo_checkpoint", "export", "package", "rerun", "run", "verify"]
