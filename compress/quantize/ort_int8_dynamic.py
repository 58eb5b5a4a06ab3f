"""ONNX Runtime dynamic INT8 quantization: int8 weights, activations quantized on the fly.

Needs no calibration data, so it is the safe default for CPU targets. ONNX Runtime's CUDA EP has
no INT8 kernels (onnxruntime #12229): a quantized model there runs slower than fp32, so the pass
refuses CUDA targets instead of producing a slower model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from slimline.compression.base import (
    ModelInfo,
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    Problem,
    copy_side_files,
    register,
)
from slimline.compression.quantize.effect import check_quantization_effect
from slimline.compression.quantize.fallback import (
    FallbackConfig,
    Quantize,
    VariantSpace,
    chosen_overrides,
    quantize_with_fallback,
)
from slimline.compression.quantize.ort_common import float_model_for_quantization, weight_op_coverage
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import PassError
from slimline.core.machine import has_vnni
from slimline.profiles.schema import Target
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
QUANTIZED_MODEL_FILE = "model.onnx"


class Int8DynamicConfig(PassConfig):
    per_channel: bool = Field(default=False, description="one scale per output channel of each weight")
    reduce_range: bool | Literal["auto"] = Field(
        default="auto", description="7-bit weights (avoids u8s8 overflow on CPUs without VNNI); auto: on when "
                                    "per_channel is on and the CPU lacks VNNI, as ONNX Runtime advises")
    weight_type: Literal["qint8", "quint8"] = "qint8"
    op_types: list[str] = Field(default_factory=lambda: ["MatMul", "Gemm", "Attention", "EmbedLayerNormalization"],
                                description="ONNX op types to quantize")
    exclude_nodes: list[str] = Field(default_factory=list, description="node names to keep in float")
    preprocess: bool = Field(default=True, description="run ORT's symbolic shape inference + graph optimizations first")
    fallback: FallbackConfig = Field(default_factory=FallbackConfig, description="accuracy-aware node exclusion")


def resolve_reduce_range(config: Int8DynamicConfig) -> bool:
    if config.reduce_range == "auto":
        return config.per_channel and not has_vnni()
    return config.reduce_range


def gemm_aware_exclusions(excluded: list[str]) -> list[str]:
    """Dynamic quantization rewrites a Gemm node G into MatMul "G_MatMul" + Add before it applies
    nodes_to_exclude, so excluding G by its own name alone does nothing; name both."""
    return [*excluded, *(f"{name}_MatMul" for name in excluded)]


@register("quantize.ort-int8-dynamic")
class OrtInt8Dynamic(Pass[Int8DynamicConfig]):
    Config = Int8DynamicConfig
    stage = "onnx"
    accepts = frozenset({"onnx"})
    produces = "onnx"
    skip_consequence = "continuing unquantized"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        runtime = get_runtime(target.runtime)
        if runtime.runs_onnx_contrib_ops and target.device not in runtime.onnx_int8_devices:
            problems.append(self.error(
                "ONNX Runtime's CUDA execution provider has no INT8 kernels (onnxruntime #12229), so a "
                "dynamically quantized model runs slower than fp32 there",
                fix="use convert.fp16 or a TensorRT profile for GPUs; keep INT8 for CPU profiles"))
        if not runtime.runs_onnx_contrib_ops:
            problems.append(self.error(f"produces an ONNX Runtime QOperator model, but the target runtime is "
                                       f"{target.runtime}",
                                       fix="use an onnxruntime profile (cpu), or quantize.torch-int8-dynamic for the "
                                           "torch runtime"))
        if "Conv" in self.config.op_types:
            problems.append(self.warning("dynamic INT8 on Conv runs ConvInteger, which ONNX Runtime's CPU EP executes "
                                         "far slower than fp32 Conv (17x slower on MobileNetV2 in issue 13) and with "
                                         "poor accuracy; use quantize.ort-int8-static (QDQ, per-channel) for CNNs"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        quantization = require("onnxruntime.quantization", purpose=self.name)
        config = self.config
        source = model.model_path
        with float_model_for_quantization(source, config.preprocess, self.name) as float_model:
            coverage = weight_op_coverage(float_model.path, config.op_types)
            weight_type = getattr(quantization.QuantType, "QInt8" if config.weight_type == "qint8" else "QUInt8")

            def quantizer(per_channel: bool) -> Quantize:
                def quantize(excluded: list[str], out_path: Path) -> None:
                    try:
                        quantization.quantize_dynamic(
                            model_input=str(float_model.path), model_output=str(out_path),
                            op_types_to_quantize=config.op_types, per_channel=per_channel,
                            reduce_range=resolve_reduce_range(config.model_copy(update={"per_channel": per_channel})),
                            weight_type=weight_type, nodes_to_exclude=gemm_aware_exclusions(excluded),
                            use_external_data_format=float_model.large,
                        )
                    except Exception as err:
                        raise PassError(f"{self.name}: quantize_dynamic failed on {source}: {err}.",
                                        fix="exclude the failing node with `exclude_nodes`, or narrow `op_types`.") \
                            from err
                return quantize

            space = VariantSpace({"per_channel": config.per_channel}, [("per_channel", [not config.per_channel])],
                                 lambda settings: quantizer(bool(settings["per_channel"])))
            fallback = quantize_with_fallback(space, float_model.path, out_dir / QUANTIZED_MODEL_FILE, model,
                                              config.op_types, config.exclude_nodes, context, config.fallback)
        effect = check_quantization_effect(self.name, model.path, source.name, out_dir, QUANTIZED_MODEL_FILE,
                                           coverage, config.op_types)
        effective = config.model_copy(update=chosen_overrides(space, fallback))
        copy_side_files(model.path, out_dir, skip={source.name, QUANTIZED_MODEL_FILE})
        return PassResult(model_file=QUANTIZED_MODEL_FILE, metadata={
            "quantization": {"scheme": "dynamic-int8", **effective.model_dump(mode="json", exclude={"fallback"}),
                             "reduce_range_resolved": resolve_reduce_range(effective), **float_model.notes,
                             "coverage": coverage, "effect": effect},
            "accuracy_fallback": fallback})
