"""What machine and which library versions produced a result.

INT8 speed-ups depend on the CPU's instruction sets (AVX2 vs AVX-512 VNNI vs AMX), so every
manifest and report records them; results are only comparable within one run on one machine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import sys
from typing import Any

#: Instruction-set flags that change which int8/fp16 kernels ONNX Runtime and PyTorch pick.
RELEVANT_CPU_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vnni",
    "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd",
)

#: Distributions whose versions go into every manifest and report.
TRACKED_DISTRIBUTIONS = (
    "slimline", "torch", "transformers", "tokenizers", "safetensors", "optimum", "optimum-onnx",
    "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "tensorrt", "bitsandbytes", "torch-pruning", "peft",
    "openvino", "nncf",
)


def _cpu_flags_from_proc() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.cache
def cpu_flags() -> tuple[str, ...]:
    """The relevant instruction sets of this CPU, normalised (avx512vnni -> avx512_vnni)."""
    flags = _cpu_flags_from_proc()
    if not flags:
        try:
            import cpuinfo  # py-cpuinfo: portable fallback where /proc/cpuinfo is absent

            flags = set(cpuinfo.get_cpu_info().get("flags", []))
        except Exception:  # pragma: no cover - cpuinfo failing is not fatal
            flags = set()
    found = {flag.replace("avx512vnni", "avx512_vnni") for flag in flags if flag in RELEVANT_CPU_FLAGS}
    return tuple(sorted(found))


def has_vnni() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_flags()))


def has_amx() -> bool:
    """Intel AMX tiles (Sapphire Rapids and later): INT8 and bf16 matrix multiplies far beyond AVX-512."""
    return bool({"amx_int8", "amx_bf16"} & set(cpu_flags()))


def has_bf16() -> bool:
    """bf16 arithmetic in hardware (AVX-512-BF16 or AMX-BF16): bf16 inference then runs faster than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def cpu_kind() -> str:
    """The CPU class INT8 / bf16 speed depends on: amx, avx512-vnni, avx512, avx2, other."""
    flags = set(cpu_flags())
    if has_amx():
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def cpu_capabilities() -> dict[str, Any]:
    """What the runtime choice turns on: INT8 dot products, bf16 in hardware, AMX; recorded with every result."""
    flags = set(cpu_flags())
    return {"kind": cpu_kind(), "vnni": has_vnni(), "bf16": has_bf16(), "amx": has_amx(),
            "amx_int8": "amx_int8" in flags, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


@functools.cache
def machine_info() -> dict[str, Any]:
    return {
        "host_id": hashlib.sha256(platform.node().encode()).hexdigest()[:12],
        "os": platform.platform(),
        "arch": platform.machine(),
        "cpu_model": _cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": list(cpu_flags()),
        "cpu_capabilities": cpu_capabilities(),
        "python": sys.version.split()[0],
        "cuda_devices": cuda_devices(),
    }


def cuda_devices() -> list[dict[str, Any]]:
    """CUDA GPUs visible to torch, if torch is already imported; never imports torch itself."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
             "memory_gb": round(props.total_memory / 2**30, 1)}
        )
    return devices


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results; absent ones are left out."""
    versions: dict[str, str] = {}
    for dist in TRACKED_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
