"""Lazy, guarded imports of optional heavy libraries.

Every optional import goes through `require`, so a missing library always produces the same
kind of error with the exact install line (the HfQuantizer.validate_environment habit).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from slimline.core.errors import MissingDependency

INSTALL_HINTS: dict[str, str] = {
    "tensorrt": "pip install 'slimline[tensorrt]'  (NVIDIA GPU + CUDA needed)",
    "bitsandbytes": "pip install 'slimline[bnb]'",
    "accelerate": "pip install 'slimline[bnb]'",
    "pynvml": "pip install 'slimline[gpu]'",
    "onnxruntime": "pip install onnxruntime  (or 'slimline[gpu]' for onnxruntime-gpu)",
    "optimum": "pip install 'slimline'  (optimum-onnx is a core dependency; reinstall slimline)",
    "fastapi": "pip install 'slimline[serve]'",
    "uvicorn": "pip install 'slimline[serve]'",
    "prometheus_client": "pip install 'slimline[serve]'",
    "httpx": "pip install 'slimline[serve]'",
    "mlflow": "pip install 'slimline[mlflow]'",
    "pyarrow": "pip install 'slimline[parquet]'",
    "sqlalchemy": "pip install 'slimline'  (a core dependency of the results history; reinstall slimline)",
    "alembic": "pip install 'slimline'  (a core dependency of the results history; reinstall slimline)",
    "peft": "pip install 'slimline[peft]'",
    "PIL": "pip install 'slimline[vision]'",
    "optuna": "pip install 'slimline'  (optuna is a core dependency of `slimline search`; reinstall slimline)",
    "ray": "pip install 'slimline[ray]'",
    "openvino": "pip install 'slimline[openvino]'",
    "nncf": "pip install 'slimline[openvino]'",
}


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(module: str, *, purpose: str) -> ModuleType:
    """Import `module` or raise MissingDependency naming what needed it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = INSTALL_HINTS.get(module.split(".")[0], f"pip install {module.split('.')[0]}")
        raise MissingDependency(
            f"{purpose} needs the Python module '{module}', which cannot be imported here ({err}).",
            fix=hint,
        ) from err
