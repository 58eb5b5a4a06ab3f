"""An OpenVINO compiled model behind onnxruntime.InferenceSession's API, with the properties it was compiled with.

The runner, the decode loop (slimline.formats.causal_lm.OrtDecoder), `verify`'s real load and
`slimline serve` all drive sessions through `get_inputs() / get_outputs() / run(None, feeds)`, so an
OpenVINO engine plugs into each without a branch of its own.

Compile properties: the thread count (INFERENCE_NUM_THREADS), the performance hint (LATENCY: one stream,
every thread on one request; THROUGHPUT: several streams), and the inference precision (bf16 / f32 / f16):
the runtime option when given, else the IR's own rt_info (set by convert.openvino-precision), else
OpenVINO's default for the CPU (bf16 on AMX and, in 2026.4, on AVX-512-BF16 CPUs too). What the compiled
model actually uses is read back and reported, never assumed.

A stateful decoder (slimline.runtimes.openvino.stateful) keeps its KV cache in the one infer request. `run`
stays a plain full forward for the runner, the perplexity evaluator and `verify`: it resets the state first
and fills beam_idx (and position_ids, from the mask) itself. Decoding token by token goes through
slimline.runtimes.openvino.decoder, which resets only at the start of a generation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimline.formats.causal_lm import positions_from_mask
from slimline.runtimes.openvino.ir import openvino, runtime_options_of
from slimline.runtimes.openvino.stateful import BEAM_IDX

#: OpenVINO element type -> numpy dtype name; ORT's type strings call float32 "float" and float64 "double".
DTYPES = {"i64": "int64", "i32": "int32", "f32": "float32", "f16": "float16", "bf16": "bfloat16", "u8": "uint8",
          "i8": "int8", "boolean": "bool", "f64": "float64"}
ORT_NAMES = {"float32": "float", "float64": "double"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}


@dataclass(frozen=True)
class PortInfo:
    """What ORT's NodeArg offers: name, type ("tensor(int64)") and shape (ints, or a name for a dynamic axis)."""

    name: str
    type: str
    shape: list[int | str]
    dtype: str  # numpy's name


def _port_info(port: Any) -> PortInfo:
    element = port.get_element_type().get_type_name()
    dtype = DTYPES.get(element, element)
    shape: list[int | str] = []
    for index, dim in enumerate(port.get_partial_shape()):
        shape.append(dim.get_length() if dim.is_static else f"dynamic_{index}")
    return PortInfo(port.get_any_name(), f"tensor({ORT_NAMES.get(dtype, dtype)})", shape, dtype)


def port_specs(ports: Any) -> list[PortInfo]:
    return [_port_info(port) for port in ports]


def compile_properties(threads: int, performance_hint: str, num_streams: int | None,
                       inference_precision: str | None, kv_cache_precision: str | None = None) -> dict[str, str]:
    properties = {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": HINTS[performance_hint]}
    if num_streams is not None:
        properties["NUM_STREAMS"] = str(num_streams)
    if inference_precision is not None:
        properties["INFERENCE_PRECISION_HINT"] = inference_precision
    if kv_cache_precision is not None:
        properties["KV_CACHE_PRECISION"] = kv_cache_precision
    return properties


def config_properties(threads: int, config: Any) -> dict[str, str]:
    """compile_properties from an OpenVINOConfig (the runtime's options)."""
    return compile_properties(threads, config.performance_hint, config.num_streams, config.inference_precision,
                              config.kv_cache_precision)


class OpenVINOSession:
    """One compiled model and one infer request (a lock serialises callers: serving runs it from threads)."""

    def __init__(self, model_path: Path, properties: dict[str, str], device: str = "CPU") -> None:
        ov = openvino("an OpenVINO runner")
        self.core = ov.Core()
        self.model = self.core.read_model(str(model_path))
        # The IR's own options (convert.openvino-precision) are applied here: OpenVINO 2026.4 does not apply
        # rt_info's runtime_options to INFERENCE_PRECISION_HINT by itself. Explicit properties win.
        properties = {**runtime_options_of(self.model), **properties}
        self.compiled = self.core.compile_model(self.model, device, properties)
        self.request = self.compiled.create_infer_request()
        self.device = device
        self.requested = dict(properties)
        self.stateful = len(self.request.query_state()) > 0
        # beam_idx is the session's to fill (greedy rows are never reordered), not a model input to feed.
        self._inputs = [port for port in port_specs(self.compiled.inputs) if port.name != BEAM_IDX]
        self._names = {port.name for port in port_specs(self.compiled.inputs)}
        self._outputs = port_specs(self.compiled.outputs)
        self._lock = threading.Lock()

    def get_inputs(self) -> list[PortInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[PortInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"OpenVINO {self.device}"]

    def stateful_feeds(self, feeds: dict[str, np.ndarray], past_length: int) -> dict[str, np.ndarray]:
        """A stateful decoder's feeds: beam_idx over the batch, position_ids from the mask when not given."""
        feeds = {k: v for k, v in feeds.items() if k in self._names}
        batch = len(feeds["input_ids"])
        if BEAM_IDX in self._names:
            feeds[BEAM_IDX] = np.arange(batch, dtype=np.int32)
        if "position_ids" in self._names and "position_ids" not in feeds:
            mask = feeds.get("attention_mask")
            if mask is None:
                mask = np.ones((batch, past_length + feeds["input_ids"].shape[1]), dtype=np.int64)
            feeds["position_ids"] = positions_from_mask(mask, past_length)
        return feeds

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One full forward; a stateful decoder's cache is reset first, so each call stands alone."""
        with self._lock:
            if self.stateful:
                self.request.reset_state()
                self.request.infer(self.stateful_feeds(feeds, 0))
            else:
                self.request.infer({k: v for k, v in feeds.items() if k in self._names})
            results = [np.array(self.request.get_output_tensor(i).data) for i in range(len(self._outputs))]
        if output_names is None:
            return results
        index = {port.name: i for i, port in enumerate(self._outputs)}
        return [results[index[name]] for name in output_names]

    def effective(self) -> dict[str, str]:
        """The properties the compiled model settled on (the CPU plugin resolves hints into these)."""
        facts = {}
        for key in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                    "EXECUTION_MODE_HINT", "KV_CACHE_PRECISION"):
            try:
                value = self.compiled.get_property(key)
                facts[key] = value.get_type_name() if hasattr(value, "get_type_name") else str(value)  # ov.Type
            except Exception:  # a property this plugin does not report
                continue
        return facts
