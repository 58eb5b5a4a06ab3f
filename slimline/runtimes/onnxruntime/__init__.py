"""ONNX Runtime: the CPU EP here, CUDA / TensorRT EPs where onnxruntime-gpu provides them.

Runs ONNX models as exported and as slimline's ONNX-level passes leave them (ORT's fused contrib ops,
QOperator / QDQ INT8, MatMulNBits); bundles use Triton's onnxruntime backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.profiles.schema import Target
from slimline.runtimes.base import Runner, RunnerSpec, Runtime, RuntimeConfig, Session

ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
               11: "float64", 16: "bfloat16"}
GRAPH_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
                "disabled": "ORT_DISABLE_ALL"}


class OnnxRuntimeConfig(RuntimeConfig):
    #: ORT's load-time graph optimisations (slimline's own fusion pass runs before; "all" adds layout ones).
    graph_optimization_level: Literal["all", "extended", "basic", "disabled"] = "all"


def session_options(threads: int, config: OnnxRuntimeConfig, allow_spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = GRAPH_LEVELS[config.graph_optimization_level]
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    module_name = "onnxruntime"
    Config = OnnxRuntimeConfig
    loads = frozenset({"onnx"})
    engine_format = "onnx"
    runs_onnx_contrib_ops = True
    screens_search_trials = True
    onnx_int8_devices = frozenset({"cpu"})  # the CUDA EP has no INT8 kernels (onnxruntime #12229)
    pruning_timer: ClassVar[Literal["onnx", "torch"] | None] = "onnx"
    triton_platform, triton_backend = "onnxruntime_onnx", "onnxruntime"
    engine_file_name = "model.onnx"
    engine_suffixes = (".onnx", ".onnx_data", ".data")
    engine_description = "an ONNX model"

    def check_available(self, target: Target, purpose: str) -> None:
        from slimline.runtimes.onnxruntime.runner import check_providers

        check_providers(self.providers(target))

    def preflight_notes(self, target: Target, capabilities: dict[str, Any]) -> list[str]:
        if target.device != "cpu" or not capabilities.get("amx"):
            return []
        return ["this CPU has AMX: bf16 there is nearly free in accuracy and several times faster than fp32, and "
                "AMX-INT8 beats VNNI; ONNX Runtime's CPU EP uses neither for these graphs, OpenVINO does (profile "
                "cpu-openvino, or target.runtime: auto to time both side by side)"]

    def providers(self, target: Target) -> list[str]:
        return target.providers()

    def make_runner(self, spec: RunnerSpec) -> Runner:
        from slimline.runtimes.onnxruntime.runner import OrtRunner

        return OrtRunner(spec)

    def triton_parameters(self, target: Target) -> dict[str, str]:
        return {"intra_op_thread_count": str(target.threads)} if target.device == "cpu" else {}

    def open_session(self, engine: Path, threads: int, target: Target) -> Session:
        import onnxruntime as ort

        options = session_options(threads, self.config(target))
        options.log_severity_level = 3
        available = ort.get_available_providers()
        providers = [p for p in target.providers() if p in available] or ["CPUExecutionProvider"]
        return ort.InferenceSession(str(engine), sess_options=options, providers=providers)

    def load_check(self, engine: Path, inputs: list[TensorSpec], target: Target) -> list[str]:
        import onnxruntime as ort

        warnings = super().load_check(engine, inputs, target)
        wanted = [p for p in target.providers() if p not in ort.get_available_providers()]
        if wanted:
            warnings.append(f"the target's execution provider(s) {wanted} are not available here; "
                            "the engine was loaded with CPUExecutionProvider")
        return warnings

    def engine_outputs(self, engine: Path, model: ModelDir) -> list[TensorSpec]:
        return onnx_outputs(engine)


def onnx_outputs(engine: Path) -> list[TensorSpec]:
    """Output names, dtypes and shapes read from an ONNX graph (no weights loaded)."""
    import onnx

    graph = onnx.load(str(engine), load_external_data=False).graph
    outputs = []
    for value in graph.output:
        tensor_type = value.type.tensor_type
        dims: list[int | str] = [d.dim_param or d.dim_value or "dynamic" for d in tensor_type.shape.dim]
        outputs.append(TensorSpec(name=value.name, dtype=ONNX_DTYPES.get(tensor_type.elem_type, "float32"),
                                  shape=dims))
    return outputs


RUNTIME = OnnxRuntime()
