"""GPU memory a benchmark worker holds, read through NVML (nvidia-ml-py's `pynvml`).

NVML's per-process figure is what nvidia-smi shows: CUDA context, weights, TensorRT and cuBLAS
workspaces and the caching allocator's pool - what a deployment has to budget for, unlike
torch.cuda.max_memory_allocated, which sees torch's own tensors only. NVML keeps no per-process
peak, so the worker reads it after the timing loop, when buffers for the largest shape exist.

A process inside a container can be invisible to NVML (its own PID namespace); then the device-wide
used memory minus what was in use before the worker touched the GPU is reported. Where there is no
NVML at all (Jetson), cudaMemGetInfo's device-wide figure stands in, as a delta that excludes the
CUDA context. `method` says which was used. Devices are summed rather than mapped (NVML numbers GPUs
without regard to CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from slimline.core.gpu import nvml

MB = 1024 * 1024


@dataclass(frozen=True)
class GpuMemory:
    mb: float
    method: Literal["nvml-process", "nvml-device-delta", "cuda-meminfo-delta"]


def _handles(lib: Any) -> list[Any]:
    return [lib.nvmlDeviceGetHandleByIndex(i) for i in range(lib.nvmlDeviceGetCount())]


def _process_used_bytes(lib: Any, pid: int) -> int | None:
    """Bytes `pid` holds on all GPUs, or None when NVML does not list it (or reports no value)."""
    found = None
    for handle in _handles(lib):
        for process in lib.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == pid and process.usedGpuMemory is not None:  # None: NVML_VALUE_NOT_AVAILABLE
                found = (found or 0) + int(process.usedGpuMemory)
    return found


def device_used_mb() -> float | None:
    """Used memory over all GPUs NVML sees, in MB; None without NVML."""
    with nvml() as lib:
        if lib is None:
            return None
        try:
            return sum(lib.nvmlDeviceGetMemoryInfo(h).used for h in _handles(lib)) / MB
        except Exception:
            return None


def process_gpu_memory(pid: int | None = None, device_baseline_mb: float | None = None) -> GpuMemory | None:
    """GPU memory held by `pid` (default: this process) in MB, or None when NVML is unavailable.

    `device_baseline_mb` (from device_used_mb() before the GPU was touched) enables the container
    fallback; without it a process NVML cannot see gives None rather than someone else's memory.
    """
    pid = os.getpid() if pid is None else pid
    with nvml() as lib:
        if lib is None:
            return None
        try:
            used = _process_used_bytes(lib, pid)
            if used is not None:
                return GpuMemory(round(used / MB, 1), "nvml-process")
            if device_baseline_mb is None:
                return None
            now = sum(lib.nvmlDeviceGetMemoryInfo(h).used for h in _handles(lib)) / MB
        except Exception:  # NVMLError_NotSupported and friends: treat as unmeasurable
            return None
    return GpuMemory(round(max(now - device_baseline_mb, 0.0), 1), "nvml-device-delta")


def cuda_meminfo_used_mb() -> float | None:
    """Device-wide used memory from cudaMemGetInfo (torch.cuda.mem_get_info); creates the CUDA context."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
    except Exception:
        return None
    return (total - free) / MB


class GpuMemoryProbe:
    """Baselines taken before the model loads, read back after the benchmark."""

    def __init__(self) -> None:
        self.nvml_baseline_mb = device_used_mb()
        self.meminfo_baseline_mb = cuda_meminfo_used_mb() if self.nvml_baseline_mb is None else None

    def read(self) -> GpuMemory | None:
        measured = process_gpu_memory(device_baseline_mb=self.nvml_baseline_mb)
        if measured is not None or self.meminfo_baseline_mb is None:
            return measured
        now = cuda_meminfo_used_mb()
        return None if now is None else GpuMemory(round(max(now - self.meminfo_baseline_mb, 0.0), 1),
                                                  "cuda-meminfo-delta")
