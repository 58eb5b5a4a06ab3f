"""ONNX Runtime runner: CPU EP here, CUDA / TensorRT EPs where onnxruntime-gpu provides them."""

from __future__ import annotations

from slimline.core.errors import MissingDependency
from slimline.runtimes.base import RunnerSpec
from slimline.runtimes.session_runner import SessionRunner


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


class OrtRunner(SessionRunner):
    def __init__(self, spec: RunnerSpec) -> None:
        import onnxruntime as ort

        from slimline.runtimes.onnxruntime import OnnxRuntimeConfig, session_options

        check_providers(spec.providers)
        options = session_options(spec.threads, OnnxRuntimeConfig.model_validate(spec.runtime_options),
                                  spec.allow_spinning)
        super().__init__(spec, ort.InferenceSession(spec.model_path, sess_options=options,
                                                    providers=provider_entries(spec.providers, spec.precision)))

    def describe(self) -> dict[str, object]:
        import onnxruntime as ort

        return {"runtime": "onnxruntime", "version": ort.__version__, "providers": self.session.get_providers(),
                "threads": self.threads}
