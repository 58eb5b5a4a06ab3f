"""`slimline doctor`: which runtimes, execution providers and devices this machine has, and how to get the rest.

Every probe catches its own failure (a doctor that crashes on a broken install tells nothing) and
reports what it found, never what a profile hopes for: on a CPU-only machine it says so. The two slow probes
(the export stack imported in a fresh interpreter, torch's CUDA facts) are cached per environment
(slimline.core.env_cache), so a second `doctor` answers in about a second; `refresh` probes again.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from pydantic import BaseModel, Field

from slimline.core.deps import is_available
from slimline.core.env_cache import per_environment
from slimline.core.gpu import NVML_INSTALL, nvml, tensorrt_problem, tensorrt_version, torch_cuda_problem
from slimline.core.machine import cpu_capabilities, cpu_flags, library_versions, machine_info

ORT_GPU_INSTALL = ("pip uninstall -y onnxruntime && pip install 'slimline[gpu]'  (onnxruntime-gpu; NVIDIA GPU with "
                   "CUDA 12 and cuDNN 9 libraries)")
BNB_INSTALL = "pip install 'slimline[bnb]'"
OPENVINO_INSTALL = "pip install 'slimline[openvino]'"


class Check(BaseModel):
    """One capability: whether this machine has it, what was found, and the fix when it does not."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    #: What slimline cannot work without (the export stack): `doctor` exits 2 when such a check fails.
    required: bool = False


class DoctorReport(BaseModel):
    python: str
    platform: str
    cpu_model: str
    cpu_flags: list[str]
    #: INT8 dot products (VNNI), bf16 in hardware, AMX: what decides between runtimes and precisions.
    cpu_capabilities: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str]
    onnxruntime_providers: list[str] = Field(default_factory=list)
    torch_cuda_build: str | None = None
    cuda_devices: list[dict[str, Any]] = Field(default_factory=list)
    nvidia_driver: str | None = None
    tensorrt: str | None = None
    checks: list[Check]
    #: Probes answered from the per-environment cache -> when they were probed (`doctor --refresh` redoes them).
    cached: dict[str, str] = Field(default_factory=dict)

    @property
    def broken(self) -> list[Check]:
        """Required checks that fail: export and run cannot work on this machine until they are fixed."""
        return [check for check in self.checks if check.required and not check.ok]


def _onnxruntime_checks(providers: list[str], error: str | None) -> list[Check]:
    if error is not None:
        return [Check(name="onnxruntime", ok=False, detail=error, fix="pip install slimline", required=True)]
    checks = [Check(name="onnxruntime", ok=True, detail="providers: " + ", ".join(providers), required=True)]
    for provider, needs in (("CUDAExecutionProvider", "profiles with device cuda (gpu-t4)"),
                            ("TensorrtExecutionProvider", "target.execution_providers [TensorrtExecutionProvider]")):
        found = provider in providers
        detail = ("in this onnxruntime build (it still needs the CUDA libraries at session start)" if found
                  else f"not in this onnxruntime build; needed by {needs}")
        checks.append(Check(name=f"onnxruntime {provider}", ok=found, detail=detail,
                            fix=None if found else ORT_GPU_INSTALL))
    return checks


def _torch_check() -> tuple[Check, str | None, list[dict[str, Any]]]:
    problem = torch_cuda_problem()
    if problem is not None:
        cuda_build = None
        if is_available("torch"):
            import torch

            cuda_build = torch.version.cuda
        return Check(name="torch CUDA", ok=False, detail=problem.what, fix=problem.fix), cuda_build, []
    import torch

    from slimline.core.gpu import cuda_device_facts

    devices = [cuda_device_facts(i) for i in range(torch.cuda.device_count())]
    names = ", ".join(f"{d['name']} (sm {d['compute_capability']}, {d['memory_gb']} GB)" for d in devices)
    return Check(name="torch CUDA", ok=True, detail=f"CUDA {torch.version.cuda}: {names}"), torch.version.cuda, devices


def _nvml_check() -> tuple[Check, str | None]:
    if not is_available("pynvml"):
        return Check(name="NVML (GPU memory, driver)", ok=False, detail="nvidia-ml-py is not installed: "
                     "no driver version in manifests; GPU memory falls back to a cudaMemGetInfo delta",
                     fix=NVML_INSTALL), None
    with nvml() as lib:
        if lib is None:
            return Check(name="NVML (GPU memory, driver)", ok=False, detail="nvidia-ml-py is installed but NVML "
                         "cannot start: no NVIDIA driver on this machine", fix="install the NVIDIA driver"), None
        version = lib.nvmlSystemGetDriverVersion()
        driver = version.decode() if isinstance(version, bytes) else str(version)
    return Check(name="NVML (GPU memory, driver)", ok=True, detail=f"NVIDIA driver {driver}"), driver


def _tensorrt_check() -> Check:
    problem = tensorrt_problem()
    if problem is not None:
        return Check(name="TensorRT", ok=False, detail=problem.what + "; needed by runtime tensorrt profiles "
                     "(gpu-a100-trt, jetson-orin-trt)", fix=problem.fix)
    return Check(name="TensorRT", ok=True, detail=f"tensorrt {tensorrt_version() or '?'} imports")


def _bitsandbytes_check(cuda_ok: bool) -> Check:
    if not is_available("bitsandbytes"):
        return Check(name="bitsandbytes", ok=False, detail="not installed: quantize.bnb-* passes unavailable",
                     fix=BNB_INSTALL)
    version = library_versions().get("bitsandbytes", "?")
    if cuda_ok:
        return Check(name="bitsandbytes", ok=True, detail=f"bitsandbytes {version}; int8/NF4 on CUDA available")
    return Check(name="bitsandbytes", ok=True, detail=f"bitsandbytes {version} installed; its int8/NF4 CUDA kernels "
                 "need a CUDA device, which torch does not see here")


def _cpu_precision_check() -> Check:
    """bf16 and AMX: on AMX CPUs bf16 inference is nearly free in accuracy and several times faster than fp32."""
    caps = cpu_capabilities()
    if caps["amx"]:
        detail = ("AMX (" + ", ".join(k for k in ("amx_int8", "amx_bf16") if caps[k]) + "): bf16 and INT8 matrix "
                  "tiles; bf16 is nearly free in accuracy and several times faster than fp32 (OpenVINO's default)")
    elif caps["bf16"]:
        detail = "AVX-512-BF16: bf16 runs in hardware (faster than fp32 at about 3 significant digits); no AMX"
    else:
        detail = "no bf16 in hardware: fp32 or INT8 only (bf16 would be emulated, slower than fp32)"
    int8 = "INT8 dot products (VNNI)" if caps["vnni"] else "no INT8 dot products (no VNNI): static INT8 may not pay"
    return Check(name=f"CPU precisions ({caps['kind']})", ok=bool(caps["bf16"] or caps["vnni"]),
                 detail=f"{detail}; {int8}")


def _openvino_check() -> Check:
    if not is_available("openvino"):
        return Check(name="OpenVINO", ok=False, detail="not installed: runtime openvino (cpu-openvino, runtime auto "
                     "candidates) and the NNCF passes are unavailable", fix=OPENVINO_INSTALL)
    try:
        import openvino as ov

        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        precision = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
        precision = getattr(precision, "get_type_name", lambda: str(precision))()
    except Exception as err:  # a broken install whose CPU plugin does not load
        return Check(name="OpenVINO", ok=False, detail=f"openvino cannot start its CPU plugin: {err}",
                     fix=f"pip install --force-reinstall {OPENVINO_INSTALL[12:]}")
    nncf = "nncf " + library_versions()["nncf"] if "nncf" in library_versions() else "no nncf (INT8 passes unavailable)"
    return Check(name="OpenVINO", ok=True, detail=f"openvino {ov.__version__} CPU plugin: {', '.join(capabilities)}; "
                 f"default inference precision {precision}; {nncf}")


def _export_imports_check() -> Check:
    """The imports every export runs through, in a fresh interpreter: a package transformers imports when
    installed (a torchvision built for another torch) breaks export without slimline ever using it."""
    from slimline.core.import_probe import IMPORT_PROBES, probe_export_imports

    name = "export imports (torch, transformers, optimum-onnx, onnxruntime)"
    failures = probe_export_imports()
    if isinstance(failures, str):
        return Check(name=name, ok=False, detail=failures, fix="run `python -c 'import optimum.exporters.onnx'` "
                     "to see the failure, then reinstall what it names", required=True)
    if not failures:
        return Check(name=name, ok=True, detail=f"all {len(IMPORT_PROBES)} import groups load", required=True)
    first = failures[0]
    package = first.distribution or first.culprit
    where = (f"importing {package} ({first.file})" if package else "an unknown module")
    if first.raised_in:  # e.g. raised in torch/library.py while torchvision registered its ops
        where += f"; raised in {first.raised_in}"
    detail = (f"{', '.join(f.probe for f in failures)} cannot be imported: {first.error}, while {where}; "
              f"the package that breaks it is {package or 'unknown'}; `slimline export` and `run` fail until this "
              "is fixed")
    return Check(name=name, ok=False, detail=detail, fix=first.fix(library_versions().get("torch")), required=True)


def _cached_torch_check(refresh: bool, cached: dict[str, str]) -> tuple[Check, str | None, list[dict[str, Any]]]:
    def probe() -> dict[str, Any]:
        check, build, devices = _torch_check()
        return {"check": check.model_dump(), "cuda_build": build, "devices": devices}

    facts, at = per_environment("doctor.torch", probe, refresh=refresh)
    if at:
        cached["torch CUDA"] = at
    return Check.model_validate(facts["check"]), facts["cuda_build"], facts["devices"]


def _cached_export_imports_check(refresh: bool, cached: dict[str, str]) -> Check:
    """Only a probe that passed is kept: after a fix, the next doctor probes again and shows it."""
    facts, at = per_environment("doctor.export-imports", lambda: _export_imports_check().model_dump(),
                                refresh=refresh, keep=lambda facts: facts["ok"])
    if at:
        cached["export imports"] = at
    return Check.model_validate(facts)


def diagnose(refresh: bool = False) -> DoctorReport:
    """Probe everything and never fail; the slow probes come from the per-environment cache unless `refresh`."""
    providers: list[str] = []
    ort_error = None
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except Exception as err:  # ImportError, or a broken onnxruntime-gpu install
        ort_error = f"onnxruntime cannot be imported: {type(err).__name__}: {err}"
    cached: dict[str, str] = {}
    torch_check, cuda_build, devices = _cached_torch_check(refresh, cached)
    nvml_check, driver = _nvml_check()
    trt_check = _tensorrt_check()
    checks = [_cpu_precision_check(), *_onnxruntime_checks(providers, ort_error), _openvino_check(), torch_check,
              nvml_check, trt_check, _bitsandbytes_check(torch_check.ok), _cached_export_imports_check(refresh, cached)]
    machine = machine_info()
    return DoctorReport(python=sys.version.split()[0], platform=platform.platform(), cpu_model=machine["cpu_model"],
                        cpu_flags=list(cpu_flags()), cpu_capabilities=cpu_capabilities(), versions=library_versions(),
                        onnxruntime_providers=providers,
                        torch_cuda_build=cuda_build, cuda_devices=devices, nvidia_driver=driver,
                        tensorrt=tensorrt_version() if trt_check.ok else None, checks=checks, cached=cached)
