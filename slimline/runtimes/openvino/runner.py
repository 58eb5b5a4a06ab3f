"""OpenVINO runner: an IR (or a standard ONNX graph) compiled for the CPU with the target's threads and hint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slimline.formats.causal_lm import empty_past, is_past_input, positions_from_mask
from slimline.runtimes.base import RunnerSpec
from slimline.runtimes.openvino.session import OpenVINOSession, compile_properties


class OpenVINORunner:
    def __init__(self, spec: RunnerSpec) -> None:
        from slimline.runtimes.openvino import OpenVINOConfig

        config = OpenVINOConfig.model_validate(spec.runtime_options)
        properties = compile_properties(spec.threads, config.performance_hint, config.num_streams,
                                        config.inference_precision)
        self.session = OpenVINOSession(Path(spec.model_path), properties)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.threads = spec.threads
        self.kv_inputs = [s for s in spec.inputs if is_past_input(s.name)]  # a decoder exported with its cache
        config_path = Path(spec.model_dir) / "config.json"
        self.config = json.loads(config_path.read_text()) if self.kv_inputs and config_path.is_file() else {}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self.kv_inputs and self.kv_inputs[0].name not in feeds:  # a full-sequence forward: empty past
            feeds.update(empty_past(self.kv_inputs, self.config, len(feeds["input_ids"])))
            if "position_ids" in self.input_names and "position_ids" not in feeds:
                feeds["position_ids"] = positions_from_mask(feeds.get("attention_mask",
                                                                      np.ones_like(feeds["input_ids"])))
        return self.session.run(None, feeds)[0]

    def synchronize(self) -> None:
        return None  # infer() is synchronous and returns host tensors

    def describe(self) -> dict[str, object]:
        import importlib.metadata

        effective = self.session.effective()
        return {"runtime": "openvino", "version": importlib.metadata.version("openvino"), "device": self.session.device,
                "threads": self.threads, "inference_precision": effective.get("INFERENCE_PRECISION_HINT"),
                "performance_hint": effective.get("PERFORMANCE_HINT"), "streams": effective.get("NUM_STREAMS"),
                "requested": self.session.requested}
