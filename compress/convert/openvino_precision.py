"""The OpenVINO inference precision: bf16 where the CPU computes it in hardware, f32 elsewhere.

OpenVINO's CPU plugin runs the float part of a graph (all of it for an fp32 model, what INT8 leaves for a
quantized one) in its `INFERENCE_PRECISION_HINT`. bf16 keeps fp32's range with an 8-bit mantissa: on AMX CPUs
it is several times faster than fp32 and costs almost no accuracy on classifiers (the issue's demo: -0.08 pt);
on AVX-512-BF16 CPUs without AMX it is faster too, by less; elsewhere it is emulated and slower than f32.
`precision: auto` takes bf16 exactly where the CPU has AMX-BF16 or AVX-512-BF16, and records which it chose
and why, in the manifest and in the IR's rt_info (applied by slimline's OpenVINO sessions, the runner and
`serve`). The weights are not changed: the plugin converts at compile time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from slimline.compression.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compression.quantize.openvino_common import target_problems
from slimline.core.artifact import ModelDir
from slimline.core.machine import cpu_capabilities
from slimline.profiles.schema import Target
from slimline.runtimes.openvino.ir import IR_XML, READS, ir_interface, read_model, save_ir, set_runtime_option

PRECISION_KEY = "INFERENCE_PRECISION_HINT"


class OpenVINOPrecisionConfig(PassConfig):
    precision: Literal["auto", "bf16", "f32", "f16"] = "auto"
    #: Weights as stored in the IR (fp16 halves an fp32 model's size; an INT8 model's stay INT8).
    compress_to_fp16: bool = True


def choose_precision(requested: str, capabilities: dict[str, object]) -> tuple[str, str]:
    """(precision, why) for this CPU."""
    if requested != "auto":
        return requested, "as configured"
    if capabilities.get("amx_bf16"):
        return "bf16", "the CPU has AMX-BF16: bf16 tiles, far faster than f32 at almost no accuracy cost"
    if capabilities.get("avx512_bf16"):
        return "bf16", "the CPU has AVX-512-BF16 (no AMX): bf16 dot products in hardware, faster than f32"
    return "f32", "the CPU has no bf16 in hardware: bf16 would be emulated, slower than f32"


@register("convert.openvino-precision", extra="openvino")
class OpenVINOPrecision(Pass[OpenVINOPrecisionConfig]):
    Config = OpenVINOPrecisionConfig
    stage = "onnx"
    accepts = READS
    produces = "openvino"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = [*super().check(model, target), *target_problems(self, target)]
        precision = self.config.precision
        capabilities = cpu_capabilities()
        if precision == "f32" and capabilities["amx"]:
            problems.append(self.warning("this CPU has AMX: bf16 is nearly free in accuracy on classifiers and several "
                                         "times faster than f32 here", fix="use precision: auto (bf16 here)"))
        if precision == "bf16" and not capabilities["bf16"]:
            problems.append(self.warning("this CPU has no bf16 in hardware: OpenVINO emulates it, slower than f32",
                                         fix="use precision: auto (f32 here)"))
        if precision == "f16":
            problems.append(self.warning("the CPU plugin has f16 kernels only on CPUs with AVX-512-FP16 / AMX-FP16; "
                                         "elsewhere it falls back to f32"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        capabilities = cpu_capabilities()
        precision, why = choose_precision(self.config.precision, capabilities)
        ov_model = read_model(model, self.name)
        set_runtime_option(ov_model, PRECISION_KEY, precision)
        # An IR from an earlier OpenVINO step is saved as it is (its INT8 or fp16 weights already chosen).
        facts = save_ir(ov_model, model, out_dir, self.config.compress_to_fp16 and model.manifest.format == "onnx")
        kept = {k: v for k, v in model.manifest.metadata.items() if k in ("quantization", "accuracy_control")}
        inputs, outputs = ir_interface(model, facts)
        return PassResult(model_file=IR_XML, inputs=inputs, outputs=outputs, metadata={**kept, "openvino": {
            **model.manifest.metadata.get("openvino", {}), **facts, "inference_precision": precision,
            "precision_reason": why, "cpu_capabilities": capabilities, "runtime_options": {PRECISION_KEY: precision}}})
