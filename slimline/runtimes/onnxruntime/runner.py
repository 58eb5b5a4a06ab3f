"""ONNX Runtime runner: CPU EP here, CUDA / TensorRT EPs where onnxruntime-gpu provides them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slimline.core.errors import MissingDependency
from slimline.formats.causal_lm import empty_past, is_past_input, positions_from_mask
from slimline.runtimes.base import RunnerSpec


def check_providers(requested: list[str]) -> None:
    """Refuse up front when an execution provider the target needs is not in this onnxruntime build."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in requested if p != "CPUExecutionProvider" and p not in available]
    if missing:
        raise MissingDependency(
            f"the target needs ONNX Runtime execution provider(s) {missing}, but this onnxruntime build "
            f"has only {available}.",
            fix="on an NVIDIA GPU machine: pip uninstall -y onnxruntime && pip install 'slimline[gpu]' "
                "(onnxruntime-gpu and onnxruntime cannot be installed together).",
        )


def provider_entries(providers: list[str], precision: str) -> list[str | tuple[str, dict[str, object]]]:
    """Provider names, with options for TensorRT's EP: fp16 when the target asks for it, and engine and timing
    caches under the user cache dir, or every new session rebuilds its engines (minutes for a transformer)."""
    entries: list[str | tuple[str, dict[str, object]]] = []
    for provider in providers:
        if provider != "TensorrtExecutionProvider":
            entries.append(provider)
            continue
        from slimline.core.paths import cache_root

        cache = cache_root() / "ort-tensorrt"
        cache.mkdir(parents=True, exist_ok=True)
        entries.append((provider, {"trt_fp16_enable": precision in ("fp16", "mixed"), "trt_engine_cache_enable": True,
                                   "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                                   "trt_timing_cache_path": str(cache)}))
    return entries


class OrtRunner:
    def __init__(self, spec: RunnerSpec) -> None:
        import onnxruntime as ort

        from slimline.runtimes.onnxruntime import OnnxRuntimeConfig, session_options

        check_providers(spec.providers)
        options = session_options(spec.threads, OnnxRuntimeConfig.model_validate(spec.runtime_options),
                                  spec.allow_spinning)
        self.session = ort.InferenceSession(spec.model_path, sess_options=options,
                                            providers=provider_entries(spec.providers, spec.precision))
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
        return None  # session.run returns host arrays: the copy back already synchronises

    def describe(self) -> dict[str, object]:
        import onnxruntime as ort

        return {"runtime": "onnxruntime", "version": ort.__version__, "providers": self.session.get_providers(),
                "threads": self.threads}
