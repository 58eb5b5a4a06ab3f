"""Did a quantization pass quantize anything? The check that keeps a no-op from passing as a result.

Issue 20: dynamic INT8 on a streaming ONNX model quantized 0 of its 6 weight ops (they were Conv; the
op_types named MatMul and Gemm), made the file bigger (1.29 -> 1.80 MB) and exited 0, with the warning only in
the manifest. Every ONNX Runtime quantization pass now counts what its output really holds (ops that read
quantized weights, and weights stored in int8/int4 behind a DequantizeLinear) and compares the weight files'
sizes. Quantizing nothing, or ending up bigger, raises StepNotApplicable with the coverage: a required step
fails (exit 3: only running ORT's quantizer shows which ops it takes), an `optional: true` one is skipped
with that line on the console and in the report.

The size rule has a floor (SIZE_SLACK_BYTES): on models of a few hundred kilobytes the scales, zero points
and extra nodes of the quantized graph can outweigh the bytes saved, which says nothing about a real model.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from slimline.core.errors import StepNotApplicable

#: Ops that compute on a quantized weight: QOperator / dynamic INT8 and the 4-bit weight-only kernels.
QUANTIZED_WEIGHT_OPS = frozenset({
    "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "QGemm", "QAttention", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "MatMulNBits", "GatherBlockQuantized",
})
#: Weight element types of a QDQ graph's DequantizeLinear (int8, uint8, int4, uint4, int16, uint16).
QUANTIZED_TENSOR_TYPES = frozenset({2, 3, 5, 4, 21, 22})
#: A model may grow by this much before "bigger" counts: graph overhead on tiny models, not a failed pass.
SIZE_SLACK_BYTES = 64 * 1024
WEIGHT_SUFFIXES = (".onnx", ".onnx_data", ".data")


def quantized_weight_ops(model_path: Path) -> dict[str, int]:
    """Per op type, the ops of `model_path` that read a quantized weight (QDQ weights: `DequantizeLinear`)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    quantized_initializers = {init.name for init in graph.initializer if init.data_type in QUANTIZED_TENSOR_TYPES}
    counts: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in QUANTIZED_WEIGHT_OPS:
            counts[node.op_type] += 1
        elif node.op_type == "DequantizeLinear" and node.input and node.input[0] in quantized_initializers:
            counts["DequantizeLinear (weights)"] += 1
    return dict(counts)


def weight_bytes(directory: Path, model_file: str) -> int:
    """The bytes of the model file and its external data in `directory` (what size_mb counts)."""
    names = {model_file, *(p.name for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))}
    return sum((directory / name).stat().st_size for name in names if (directory / name).is_file())


def check_quantization_effect(pass_name: str, source_dir: Path, source_file: str, out_dir: Path, out_file: str,
                              coverage: dict[str, Any] | None, op_types: list[str]) -> dict[str, Any]:
    """Raise StepNotApplicable when the output quantizes no weight op or is bigger than the input; else the
    facts for the manifest (`effect`: quantized ops by type, sizes before and after)."""
    quantized = quantized_weight_ops(out_dir / out_file)
    before, after = weight_bytes(source_dir, source_file), weight_bytes(out_dir, out_file)
    effect = {"quantized_ops": quantized, "size_bytes_before": before, "size_bytes_after": after}
    weight_ops = (coverage or {}).get("weight_ops")
    by_type = (coverage or {}).get("by_type") or {}
    present = ", ".join(f"{count} {op}" for op, count in sorted(by_type.items())) or "none that op_types name"
    if not quantized:
        of = f" of {weight_ops}" if weight_ops is not None else ""
        raise StepNotApplicable(
            f"{pass_name}: quantized 0{of} weight ops (the model's weight ops: {present}; op_types {op_types}); the "
            f"output would be the fp32 model ({before / 1e6:.2f} -> {after / 1e6:.2f} MB) passed off as quantized.",
            reason=f"quantized 0{of} weight ops (op_types {op_types}; the model has {present})",
            fix="name the model's weight ops in op_types (static INT8, quantize.ort-int8-static, for Conv), use a "
                "pass that fits the model, or mark the step `optional: true` to continue without it.")
    if after > before + SIZE_SLACK_BYTES:
        done = ", ".join(f"{count} {op}" for op, count in sorted(quantized.items()))
        raise StepNotApplicable(
            f"{pass_name}: the quantized model is bigger than its input ({before / 1e6:.2f} -> {after / 1e6:.2f} MB) "
            f"although it quantized {done} (the model's weight ops: {present}).",
            reason=f"made the model bigger ({before / 1e6:.2f} -> {after / 1e6:.2f} MB)",
            fix="quantize the ops that hold the weights (op_types), turn off `preprocess`, or mark the step "
                "`optional: true` to continue without it.")
    return effect
