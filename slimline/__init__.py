"""slimline: compress, export and benchmark fine-tuned models against a deployment target's budgets.

The Python API mirrors the CLI::

    import slimline
    report = slimline.run("my-checkpoint", profile="cpu", out="runs/cpu")
    print(report.verdict, report.measurements.primary_latency().p50_ms)

Every name in `__all__` is a function of slimline.api (or an error class, or `ProgressEvent`), reachable as
`slimline.NAME`. Importing this package stays cheap: no torch, onnxruntime, transformers, tensorrt or
bitsandbytes until a function needs them (the functions are resolved on first use).

slimline logs through the `slimline` logger, which has a NullHandler: a library does not print. Configure
logging (`logging.basicConfig()`) to see its warnings, or pass `progress=True` to see progress.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

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
from slimline.core.progress import ProgressEvent

__version__ = "0.1.0"

logging.getLogger("slimline").addHandler(logging.NullHandler())

#: The functions of slimline.api that are the public API (`slimline.run` is `slimline.api.run`).
API_FUNCTIONS = ("run", "rerun", "compress", "export", "bench", "search", "package", "verify", "demo_checkpoint",
                 "history_runs", "history_run", "ship", "compare", "export_history", "import_history_record",
                 "check_history", "doctor", "keygen")

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports slimline.api on first use
    from slimline.api import (
        bench,
        check_history,
        compare,
        compress,
        demo_checkpoint,
        doctor,
        export,
        export_history,
        history_run,
        history_runs,
        import_history_record,
        keygen,
        package,
        rerun,
        run,
        search,
        ship,
        verify,
    )


def __getattr__(name: str) -> Any:
    if name in API_FUNCTIONS:
        return getattr(importlib.import_module("slimline.api"), name)
    if name == "api":  # `slimline.api.as_recipe` after a bare `import slimline`
        return importlib.import_module("slimline.api")
    raise AttributeError(f"module 'slimline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API_FUNCTIONS})


__all__ = ["BadInputError", "BenchError", "BundleError", "CheckpointError", "DataError", "ExportError",
           "MissingDependency", "OutputError", "PassError", "ProfileError", "ProgressEvent", "RecipeError",
           "SlimlineError", "__version__", "bench", "check_history", "compare", "compress", "demo_checkpoint",
           "doctor", "export", "export_history", "history_run", "history_runs", "import_history_record", "keygen",
           "package", "rerun", "run", "search", "ship", "verify"]
