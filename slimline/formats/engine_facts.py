"""Which TensorRT release and GPU an engine is tied to, and the refusal to load it anywhere else.

Shared by export/tensorrt.py (records the facts in the manifest) and the TensorRT runner (checks them
before deserialising), which meet only through the model directory, so this lives in slimline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from slimline.core.errors import CheckpointError
from slimline.core.gpu import cuda_device_facts, nvml_driver_version, require_tensorrt

REBUILD_HINT = ("TensorRT engines are tied to the TensorRT version and GPU architecture they were built with "
                "(TensorRT #2195): rebuild the engine on this machine (rerun `slimline run` with the same profile)")


def parse_compute_capability(value: str | tuple[int, int] | Iterable[int]) -> tuple[int, int]:
    if isinstance(value, str):
        major, _, minor = value.partition(".")
        return int(major), int(minor or 0)
    major, minor = tuple(value)
    return int(major), int(minor)


class EngineFacts(BaseModel):
    """What an engine was built with (manifest metadata["engine"]) or what this machine runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tensorrt_version: str
    compute_capability: str
    gpu_name: str | None = None
    cuda_version: str | None = None
    driver_version: str | None = None


def _version_key(version: str) -> tuple[str, ...]:
    """major.minor.patch: the part of a TensorRT version a plan file is tied to (the build number is not)."""
    return tuple(version.split(".")[:3])


def check_engine_compatible(manifest_metadata: dict[str, Any],
                            runtime_facts: EngineFacts | dict[str, Any]) -> list[str]:
    """Refuse (CheckpointError, exit 2) an engine this machine cannot load; return warnings for lesser mismatches.

    TensorRT deserialises a plan only with the exact release that built it (major.minor.patch: "expecting
    library version 8.2.4 got 8.2.3, please rebuild") and only on the compute capability it was built
    for; failing here names both sides instead of a deserialisation error. A different GPU model with the
    same compute capability loads, but its tactics were timed elsewhere: a warning.
    """
    runtime = runtime_facts if isinstance(runtime_facts, EngineFacts) else EngineFacts.model_validate(runtime_facts)
    recorded = manifest_metadata.get("engine")
    if not recorded:
        raise CheckpointError("this TensorRT engine's manifest records no build facts (TensorRT version, GPU).",
                              fix=REBUILD_HINT + ".")
    built = EngineFacts.model_validate(recorded)
    if _version_key(built.tensorrt_version) != _version_key(runtime.tensorrt_version):
        raise CheckpointError(f"the engine was built with TensorRT {built.tensorrt_version}, but this machine has "
                              f"TensorRT {runtime.tensorrt_version}.", fix=REBUILD_HINT + ".")
    if parse_compute_capability(built.compute_capability) != parse_compute_capability(runtime.compute_capability):
        raise CheckpointError(f"the engine was built for compute capability {built.compute_capability} "
                              f"({built.gpu_name or 'unknown GPU'}), but this GPU is {runtime.compute_capability} "
                              f"({runtime.gpu_name or 'unknown GPU'}).", fix=REBUILD_HINT + ".")
    warnings = []
    if built.gpu_name and runtime.gpu_name and built.gpu_name != runtime.gpu_name:
        warnings.append(f"the engine was tuned on {built.gpu_name} and runs on {runtime.gpu_name} (same compute "
                        "capability): it loads, but its kernel choices may not be the fastest here; rebuild to retune")
    return warnings


def current_engine_facts(device_index: int = 0) -> EngineFacts:
    """What an engine built or loaded here is tied to (tensorrt and CUDA must be usable)."""
    trt = require_tensorrt("reading the TensorRT build facts")
    import torch

    device = cuda_device_facts(device_index)
    return EngineFacts(tensorrt_version=trt.__version__, compute_capability=device["compute_capability"],
                       gpu_name=device["name"], cuda_version=torch.version.cuda, driver_version=nvml_driver_version())
