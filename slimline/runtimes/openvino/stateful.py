"""A decoder LLM's IR made stateful: the KV cache lives inside the OpenVINO infer request, not in numpy.

The ONNX stage of a causal LM feeds `past_key_values.{i}.key/value` in and reads `present.{i}.key/value` out
on every token; driven that way from Python, each decode step copies the whole cache out of OpenVINO and back
in (SmolLM2-135M, int8 weights, a loaded machine: 13.4 tok/s, against ONNX Runtime's 24.1). Made stateful
(what optimum-intel's `patch_stateful` does for the IRs it exports), each past/present pair becomes a
ReadValue/Assign variable that the request keeps between calls, and a step feeds only the new token.

Three steps, on the ov.Model before it is saved:
1. Attention as one ScaledDotProductAttention op. torch.onnx writes SDPA as q*sqrt(s) @ (k^T*sqrt(s)) + mask
   -> Softmax -> Where(IsNaN, 0, .) -> @ v, which OpenVINO's own SDPAFusion does not match (two scales and
   the NaN guard), so the CPU plugin would run it as MatMuls and re-concatenate the cache every step.
   `OnnxSdpaFusion` rewrites that pattern; the CPU plugin then fuses ReadValue -> Concat -> SDPA -> Assign
   into its stateful SDPA node, which appends to the cache in place (and stores it in KV_CACHE_PRECISION).
   The dropped NaN guard only matters for a query row whose every key is masked (a left-padded row's
   padding), whose output no caller reads.
2. A `beam_idx` input gathered into each cache input, as optimum-intel adds it: the IR then has the layout
   optimum-intel's OVModelForCausalLM and openvino.genai expect. slimline's session fills it (arange over
   the batch: greedy decoding never reorders rows) and does not expose it as a model input.
3. `apply_make_stateful_transformation` (OpenVINO's own), then each ReadValue initialised with an empty cache
   whose batch is input_ids' batch (optimum-intel's build_state_initializer), so one IR serves any batch.

Why slimline does this itself instead of depending on optimum-intel: optimum-intel 2.2.0 (the 2.x line) does
not install beside slimline's pins (`pip install --dry-run optimum-intel` would replace torch 2.13.0 with
torch 2.14.1 and its CUDA wheels and torchvision, and optimum 2.1.0 with 2.3.0); and it exports from torch
through its own converter, while slimline's IR comes from the ONNX stage after slimline's passes. The
stateful part is ~100 lines on OpenVINO's public transformation, kept here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimline.formats.causal_lm import PAST_INPUT

BEAM_IDX = "beam_idx"
PRESENT_PREFIX, PAST_PREFIX = "present.", "past_key_values."


def is_stateful(ov_model: Any) -> bool:
    """An ov.Model with variables (Assign sinks), or a compiled model with states."""
    if hasattr(ov_model, "get_sinks"):
        return len(ov_model.get_sinks()) > 0
    return len(ov_model.create_infer_request().query_state()) > 0


def cache_pairs(ov_model: Any) -> dict[str, str]:
    """past_key_values.{i}.{key,value} input -> present.{i}.{key,value} output, for the pairs the model has."""
    outputs = {name for port in ov_model.outputs for name in port.get_names()}
    pairs = {}
    for port in ov_model.inputs:
        name = port.get_any_name()
        present = PRESENT_PREFIX + name[len(PAST_PREFIX):]
        if PAST_INPUT.match(name) and present in outputs:
            pairs[name] = present
    return pairs


def _onnx_sdpa_fusion(counter: list[int]) -> Any:
    from openvino import opset13
    from openvino.passes import AnyInput, Matcher, MatcherPass, WrapType
    from openvino.utils import replace_node

    class OnnxSdpaFusion(MatcherPass):
        """q*a @ (Transpose(k, 0132)*b) + mask -> Softmax -> Select(IsNaN, 0, .) -> @ v  =>  SDPA(scale=a*b)."""

        def __init__(self) -> None:
            super().__init__()
            q, k, v, mask = AnyInput(), AnyInput(), AnyInput(), AnyInput()
            q_scale, k_scale, order = (WrapType("opset1.Constant") for _ in range(3))
            key_t = WrapType("opset1.Transpose", [k, order])
            scores = WrapType("opset1.MatMul", [WrapType("opset1.Multiply", [q, q_scale]),
                                                WrapType("opset1.Multiply", [key_t, k_scale])])
            softmax = WrapType("opset8.Softmax", [WrapType("opset1.Add", [scores, mask])])
            guarded = WrapType("opset1.Select", [WrapType("opset10.IsNaN", [softmax]), WrapType("opset1.Constant"),
                                                 softmax])
            out = WrapType("opset1.MatMul", [guarded, v])

            def callback(matcher: Any) -> bool:
                found = matcher.get_pattern_value_map()
                if found[order].get_node().get_data().ravel().tolist() != [0, 1, 3, 2]:
                    return False
                if any(found[node].get_node().get_attributes().get(flag) for node in (scores, out)
                       for flag in ("transpose_a", "transpose_b")):
                    return False
                a, b = found[q_scale].get_node().get_data(), found[k_scale].get_node().get_data()
                if a.size != 1 or b.size != 1 or found[softmax].get_node().get_attributes().get("axis") not in (-1, 3):
                    return False
                scale = opset13.constant(np.array(float(a.ravel()[0]) * float(b.ravel()[0]), dtype=np.float32))
                sdpa = opset13.scaled_dot_product_attention(found[q], found[k], found[v], found[mask], scale,
                                                            causal=False)
                sdpa.set_friendly_name(found[out].get_node().get_friendly_name())
                replace_node(found[out].get_node(), sdpa)
                counter[0] += 1
                return True

            self.register_matcher(Matcher(out, "SlimlineOnnxSdpaFusion"), callback)

    return OnnxSdpaFusion()


def fuse_attention(ov_model: Any) -> int:
    """Rewrite torch.onnx's decomposed attention into SDPA ops; returns how many were fused."""
    from openvino.passes import Manager

    counter = [0]
    manager = Manager()
    manager.register_pass(_onnx_sdpa_fusion(counter))
    manager.run_passes(ov_model)
    return counter[0]


def _add_beam_idx(ov_model: Any, cache_inputs: list[str]) -> None:
    import openvino as ov
    from openvino import opset13

    batch = ov_model.input("input_ids").get_partial_shape()[0]
    beam_idx = opset13.parameter(name=BEAM_IDX, dtype=ov.Type.i32, shape=ov.PartialShape([batch]))
    beam_idx.output(0).get_tensor().add_names({BEAM_IDX})
    ov_model.add_parameters([beam_idx])
    for name in cache_inputs:
        port = ov_model.input(name)
        consumers = port.get_target_inputs()
        gathered = opset13.gather(port, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    ov_model.validate_nodes_and_infer_types()


def _init_states_from_batch(ov_model: Any) -> None:
    """Each ReadValue starts as zeros of [input_ids' batch, kv heads, 0, head dim] (batch axis 0)."""
    from openvino import opset13

    shape = opset13.shape_of(ov_model.input("input_ids"), output_type="i64")
    batch = opset13.gather(shape, opset13.constant([0]), opset13.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims: list[Any] = [dim.min_length for dim in op.get_output_partial_shape(0)]
        dims[0] = batch
        parts = [opset13.constant(np.array([d], dtype=np.int64)) if isinstance(d, int) else d for d in dims]
        zero = opset13.constant(0.0, dtype=op.get_output_element_type(0))
        op.set_arguments([opset13.broadcast(zero, opset13.concat(parts, axis=0))])
    ov_model.validate_nodes_and_infer_types()


def make_stateful(ov_model: Any) -> dict[str, Any] | None:
    """Make a KV-cache decoder stateful in place; None (model untouched) when it has no cache pairs or is
    stateful already. Returns the facts the manifest records."""
    from openvino._offline_transformations import apply_make_stateful_transformation

    pairs = cache_pairs(ov_model)
    if not pairs or is_stateful(ov_model) or "input_ids" not in {p.get_any_name() for p in ov_model.inputs}:
        return None
    fused = fuse_attention(ov_model)
    _add_beam_idx(ov_model, list(pairs))
    apply_make_stateful_transformation(ov_model, pairs)
    _init_states_from_batch(ov_model)
    return {"stateful": True, "state_variables": len(pairs), "sdpa_fused": fused, "beam_idx": True}
