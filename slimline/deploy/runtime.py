"""Which runtime a bundle's engine needs, and whether this machine has it: the version rule and a real load.

Version rule. ONNX models are forward compatible across onnxruntime releases, but an older release may
lack the opset or contrib ops the packaging one wrote: the major version must match and the local
minor must be at least the recorded one. A TensorRT plan deserialises only with the release that built
it ("expecting library version 8.2.4 got 8.2.3, please rebuild"): major.minor.patch must match (the
same rule as slimline.engine_facts), and the plan only loads on the GPU architecture it was built for.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.deps import require
from slimline.core.errors import BundleError
from slimline.profiles.schema import Profile

RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "tensorrt": "tensorrt"}
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
               11: "float64", 16: "bfloat16"}


class RuntimeRequirement(BaseModel):
    """The runtime that loaded the engine when it was packaged (and, for a plan, built it)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["onnxruntime", "tensorrt"]
    version: str
    providers: list[str] = Field(default_factory=list)


def _release(version: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a version string, as far as it has them."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


def local_version(runtime: str) -> str:
    module = require(runtime, purpose=f"loading a {runtime} bundle")
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    return importlib.metadata.version(runtime)


def runtime_for(fmt: str, model: ModelDir, providers: list[str]) -> RuntimeRequirement:
    name = RUNTIME_OF_FORMAT[fmt]
    if name == "tensorrt":  # the plan's builder, not whatever is installed while packaging
        engine = model.manifest.metadata.get("engine") or {}
        version = engine.get("tensorrt_version") or model.manifest.provenance.versions.get("tensorrt")
        if not version:
            raise BundleError(f"{model.path} is a TensorRT plan whose manifest does not record the TensorRT "
                              "version that built it.", fix="rebuild the plan with slimline so its version "
                              "is recorded.")
        return RuntimeRequirement(name=name, version=version, providers=providers)
    return RuntimeRequirement(name=name, version=local_version(name), providers=providers)


def check_runtime(requirement: RuntimeRequirement) -> str:
    """Raise BundleError when the local runtime cannot be trusted to load the engine; returns its version."""
    here = local_version(requirement.name)
    recorded, local = _release(requirement.version), _release(here)
    if recorded is None or local is None:
        raise BundleError(f"cannot compare {requirement.name} versions {requirement.version!r} (bundle) and "
                          f"{here!r} (here).", fix="repackage the bundle on this machine.")
    if requirement.name == "tensorrt":
        if recorded[:3] != local[:3]:
            pinned = ".".join(str(part) for part in recorded[:3])
            raise BundleError(f"the bundle's TensorRT plan was built with TensorRT {requirement.version}; this "
                              f"machine has {here}. A plan only loads on the TensorRT release that built it.",
                              fix=f"install tensorrt=={pinned}.*, or rebuild the plan here (`slimline run` with "
                                  "the same profile) and repackage.")
    elif recorded[0] != local[0] or recorded[:2] > local[:2]:
        raise BundleError(f"the bundle was packaged with onnxruntime {requirement.version}; this machine has "
                          f"{here}, which may not load its opset and operators.",
                          fix=f"install onnxruntime>={recorded[0]}.{recorded[1]},<{recorded[0] + 1} "
                              "(or onnxruntime-gpu), or repackage the bundle here.")
    return here


def _onnx_session(engine: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(engine), sess_options=options, providers=["CPUExecutionProvider"])


def load_check(requirement: RuntimeRequirement, engine: Path, inputs: list[TensorSpec],
               profile: Profile) -> list[str]:
    """Load the engine as the runtime would; returns warnings (the target's providers missing here)."""
    warnings: list[str] = []
    if requirement.name == "onnxruntime":
        import onnxruntime as ort

        try:
            session = _onnx_session(engine, threads=1)
        except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise BundleError(f"onnxruntime {ort.__version__} cannot load {engine}: {err}",
                              fix="repackage the bundle with the onnxruntime version it was built for.") from err
        missing = {spec.name for spec in inputs} - {i.name for i in session.get_inputs()}
        if missing:
            raise BundleError(f"{engine} has no input(s) {sorted(missing)} that the manifest records.",
                              fix="repackage the bundle.")
        wanted = [p for p in profile.target.providers() if p not in ort.get_available_providers()]
        if wanted:
            warnings.append(f"the target's execution provider(s) {wanted} are not available here; "
                            "the engine was loaded with CPUExecutionProvider")
        return warnings
    trt = require("tensorrt", purpose="loading a TensorRT plan")
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    if runtime.deserialize_cuda_engine(engine.read_bytes()) is None:
        raise BundleError(f"TensorRT {trt.__version__} cannot deserialize {engine} on this GPU.",
                          fix="plans are specific to a GPU architecture and TensorRT release: rebuild it here.")
    return warnings


def engine_outputs(fmt: str, engine: Path, model: ModelDir) -> list[TensorSpec]:
    """Output names, dtypes and shapes: read from the ONNX graph; for a plan, the classifier's logits."""
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(engine), load_external_data=False).graph
        outputs = []
        for value in graph.output:
            tensor_type = value.type.tensor_type
            dims: list[int | str] = [d.dim_param or d.dim_value or "dynamic" for d in tensor_type.shape.dim]
            outputs.append(TensorSpec(name=value.name, dtype=ONNX_DTYPES.get(tensor_type.elem_type, "float32"),
                                      shape=dims))
        return outputs
    labels = model.manifest.metadata.get("label_names") or []
    return [TensorSpec(name=name, dtype="float32", shape=["batch", len(labels) or "classes"])
            for name in model.manifest.outputs or ["logits"]]
