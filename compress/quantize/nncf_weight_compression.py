"""NNCF weight compression for OpenVINO: int8 or int4 weights, float activations (decoder LLMs).

Decoding an LLM one token at a time reads every weight once per token: it is memory-bound, so fewer bytes
per weight is speed. `nncf.compress_weights` stores MatMul (and embedding) weights in int8 (per output
channel) or int4 (groups of `group_size` along the input, `ratio` of the layers, the rest int8), and the CPU
plugin decompresses them on the fly. Data-free: no calibration set. Writes an OpenVINO IR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from slimline.compression.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compression.quantize.openvino_common import target_problems
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import PassError
from slimline.profiles.schema import Target
from slimline.runtimes.openvino.ir import IR_XML, READS, ir_interface, read_model, save_ir


class WeightCompressionConfig(PassConfig):
    mode: Literal["int8_asym", "int8_sym", "int4_asym", "int4_sym"] = "int8_asym"
    group_size: int = Field(default=128, ge=-1, description="int4 only: weights per scale (-1: per channel)")
    ratio: float = Field(default=1.0, gt=0, le=1, description="int4 only: share of layers in int4 (rest int8)")
    all_layers: bool = Field(default=False, description="int4: also the embeddings and the last layer in int4")
    #: A layer whose input width group_size does not divide (SmolLM2's 576 with 128): adjust: the largest
    #: dividing group down to 32; ignore: leave it in int8; error: refuse.
    group_size_fallback: Literal["adjust", "ignore", "error"] = "adjust"


@register("quantize.nncf-weight-compression", extra="openvino")
class NncfWeightCompression(Pass[WeightCompressionConfig]):
    Config = WeightCompressionConfig
    stage = "onnx"
    accepts = READS
    produces = "openvino"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = [*super().check(model, target), *target_problems(self, target)]
        if model.task != "text-generation":
            problems.append(self.warning("weight-only compression pays off when decoding is memory-bound (decoder "
                                         "LLMs); an encoder is compute-bound: quantize.nncf-int8 is faster there"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        nncf = require("nncf", purpose=self.name)
        config = self.config
        ov_model = read_model(model, self.name)
        options: dict = {"mode": getattr(nncf.CompressWeightsMode, config.mode.upper())}
        if config.mode.startswith("int4"):
            from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

            fallback = getattr(GroupSizeFallbackMode, config.group_size_fallback.upper())
            options.update(group_size=config.group_size, ratio=config.ratio, all_layers=config.all_layers,
                           advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=fallback))
        try:
            compressed = nncf.compress_weights(ov_model, **options)
        except Exception as err:  # nncf.ValidationError, InternalError ...
            raise PassError(f"{self.name}: nncf.compress_weights failed on {model.model_path}: {err}",
                            fix="try mode int8_asym, group_size -1 (per channel), or group_size_fallback: adjust."
                            ) from err
        facts = save_ir(compressed, model, out_dir, compress_to_fp16=False)
        inputs, outputs = ir_interface(model, facts)
        return PassResult(model_file=IR_XML, inputs=inputs, outputs=outputs, metadata={
            "quantization": {"scheme": f"nncf-weights-{config.mode}", **config.model_dump(mode="json")},
            "openvino": facts})
