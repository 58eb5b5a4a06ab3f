"""TensorRT: a plan built for this GPU and TensorRT release from the last ONNX stage (export.tensorrt).

A plan deserialises only with the TensorRT release that built it ("expecting library version 8.2.4 got
8.2.3, please rebuild"): a bundle records the builder's version, and major.minor.patch must match (the
same rule as slimline.formats.engine_facts). Bundles use Triton's tensorrt backend. slimline does not serve
plans itself (Triton does).
"""

from __future__ import annotations

from pathlib import Path

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import BundleError
from slimline.profiles.schema import Target
from slimline.runtimes.base import Runner, RunnerSpec, Runtime


class TensorRT(Runtime):
    name = "tensorrt"
    module_name = "tensorrt"
    loads = frozenset({"tensorrt"})
    engine_format = "tensorrt"
    engine_step = "export.tensorrt"
    engine_exporter = "slimline.exporters.tensorrt:ENGINE_EXPORTER"
    onnx_int8_devices = frozenset({"cuda"})  # TensorRT reads QDQ graphs as explicit INT8
    times_side_by_side = False  # one model owns the GPU at a time
    triton_platform, triton_backend = "tensorrt_plan", "tensorrt"
    engine_file_name = "model.plan"
    engine_suffixes = (".plan", ".engine")
    engine_description = "a TensorRT plan"

    def check_available(self, target: Target, purpose: str) -> None:
        from slimline.core.gpu import require_tensorrt

        require_tensorrt(purpose)  # names every missing piece (module, CUDA torch, device)

    def make_runner(self, spec: RunnerSpec) -> Runner:
        from slimline.runtimes.tensorrt.runner import TensorRTRunner

        return TensorRTRunner(spec)

    def bundle_version(self, model: ModelDir) -> str:
        """The plan's builder, not whatever is installed while packaging."""
        engine = model.manifest.metadata.get("engine") or {}
        version = engine.get("tensorrt_version") or model.manifest.provenance.versions.get("tensorrt")
        if not version:
            raise BundleError(f"{model.path} is a TensorRT plan whose manifest does not record the TensorRT "
                              "version that built it.", fix="rebuild the plan with slimline so its version "
                              "is recorded.")
        return str(version)

    def version_problem(self, recorded: tuple[int, ...], local: tuple[int, ...], recorded_text: str,
                        local_text: str) -> tuple[str, str] | None:
        if recorded[:3] == local[:3]:
            return None
        pinned = ".".join(str(part) for part in recorded[:3])
        return (f"the bundle's TensorRT plan was built with TensorRT {recorded_text}; this machine has {local_text}. "
                "A plan only loads on the TensorRT release that built it",
                f"install tensorrt=={pinned}.*, or rebuild the plan here (`slimline run` with the same profile) and "
                "repackage.")

    def load_check(self, engine: Path, inputs: list[TensorSpec], target: Target) -> list[str]:
        from slimline.core.deps import require

        trt = require("tensorrt", purpose="loading a TensorRT plan")
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        if runtime.deserialize_cuda_engine(engine.read_bytes()) is None:
            raise BundleError(f"TensorRT {trt.__version__} cannot deserialize {engine} on this GPU.",
                              fix="plans are specific to a GPU architecture and TensorRT release: rebuild it here.")
        return []


RUNTIME = TensorRT()
