"""OpenVINO runner: an IR (or a standard ONNX graph) compiled for the CPU with the target's threads and hint."""

from __future__ import annotations

from pathlib import Path

from slimline.runtimes.base import RunnerSpec
from slimline.runtimes.openvino.session import OpenVINOSession, config_properties
from slimline.runtimes.session_runner import SessionRunner


class OpenVINORunner(SessionRunner):
    def __init__(self, spec: RunnerSpec) -> None:
        from slimline.runtimes.openvino import OpenVINOConfig

        config = OpenVINOConfig.model_validate(spec.runtime_options)
        super().__init__(spec, OpenVINOSession(Path(spec.model_path), config_properties(spec.threads, config)))

    def describe(self) -> dict[str, object]:
        import importlib.metadata

        effective = self.session.effective()
        return {"runtime": "openvino", "version": importlib.metadata.version("openvino"), "device": self.session.device,
                "threads": self.threads, "inference_precision": effective.get("INFERENCE_PRECISION_HINT"),
                "performance_hint": effective.get("PERFORMANCE_HINT"), "streams": effective.get("NUM_STREAMS"),
                "stateful": self.session.stateful, "kv_cache_precision": effective.get("KV_CACHE_PRECISION")
                if self.session.stateful else None, "requested": self.session.requested}
