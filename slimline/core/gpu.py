"""What this machine offers the GPU paths: a CUDA build of torch and a device, the NVIDIA driver, TensorRT.

Every function imports lazily and answers None / False / [] when a piece is absent, so the caller
decides how loud to be: `plan_run` refuses (exit 2), `slimline doctor` reports, the manifest records.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

TENSORRT_INSTALL = "pip install 'slimline[tensorrt]'  (needs an NVIDIA GPU with a recent driver)"
NVML_INSTALL = "pip install 'slimline[gpu]'  (nvidia-ml-py)"
TORCH_CUDA_INSTALL = ("pip install --force-reinstall 'torch=={version}' --index-url "
                      "https://download.pytorch.org/whl/cu128  (a CUDA build of torch; pick the cuXYZ tag your driver "
                      "supports)")


@dataclass(frozen=True)
class Missing:
    """One piece a GPU path needs that this machine lacks, with the line that fixes it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} (fix: {self.fix})"


@contextlib.contextmanager
def nvml() -> Iterator[ModuleType | None]:
    """pynvml, initialised, or None when nvidia-ml-py or the driver is absent; shut down on exit."""
    try:
        import pynvml
    except ImportError:
        yield None
        return
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver on this machine
        yield None
        return
    try:
        yield pynvml
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)  # older nvidia-ml-py returns bytes


def nvml_driver_version() -> str | None:
    with nvml() as lib:
        if lib is None:
            return None
        try:
            return _text(lib.nvmlSystemGetDriverVersion())
        except Exception:
            return None


def torch_cuda_problem() -> Missing | None:
    """Why torch cannot reach a CUDA device here, or None when it can."""
    try:
        import torch
    except ImportError:
        return Missing("torch is not installed", "pip install slimline")
    if torch.version.cuda is None:
        return Missing(f"torch {torch.__version__} is a CPU-only build",
                       TORCH_CUDA_INSTALL.format(version=torch.__version__.split("+")[0]))
    if not torch.cuda.is_available():
        return Missing(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device",
                       "run on a machine with an NVIDIA GPU and driver; check nvidia-smi and CUDA_VISIBLE_DEVICES")
    return None


def tensorrt_problem() -> Missing | None:
    """Why `import tensorrt` fails here, or None when it works."""
    try:
        import tensorrt  # noqa: F401
    except Exception as err:  # ImportError, or OSError when the wheel's CUDA libraries cannot load
        return Missing(f"the Python module 'tensorrt' cannot be imported ({type(err).__name__}: {err})",
                       TENSORRT_INSTALL)
    return None


def tensorrt_version() -> str | None:
    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorrt_problems() -> list[Missing]:
    """Everything the TensorRT path lacks on this machine, all at once so one run names every fix."""
    return [m for m in (tensorrt_problem(), torch_cuda_problem()) if m is not None]


def require_tensorrt(purpose: str) -> ModuleType:
    """The tensorrt module, or MissingDependency (exit 2) naming everything this machine lacks and each fix."""
    missing = tensorrt_problems()
    if missing:
        from slimline.core.errors import MissingDependency

        raise MissingDependency(f"{purpose} needs TensorRT on an NVIDIA GPU; this machine lacks: "
                                + "; ".join(m.what for m in missing) + ".",
                                fix=" and ".join(dict.fromkeys(m.fix for m in missing)))
    import tensorrt

    return tensorrt


def cuda_device_facts(index: int = 0) -> dict[str, Any]:
    """Name, compute capability and memory of CUDA device `index` (torch must see CUDA)."""
    import torch

    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1)}
