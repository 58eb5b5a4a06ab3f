"""4-bit weight-only quantization to ONNX Runtime's MatMulNBits (and GatherBlockQuantized for embeddings).

Weights are stored as blocks of 4-bit integers with one scale (and zero point when asymmetric) per
block; activations stay float. The point is size: MiniLM-sized encoders shrink to about a quarter of
fp32. MatMulNBits has CPU and CUDA kernels in ONNX Runtime; TensorRT has none, so that is refused.
`accuracy_level: 4` lets the CPU kernel compute in int8 (faster on CPUs with VNNI, lossier).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from slimline.compress.base import (
    ModelInfo,
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    Problem,
    copy_side_files,
    register,
)
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import PassError
from slimline.profiles.schema import Target

INT4_MODEL_FILE = "model.onnx"


class Int4WeightOnlyConfig(PassConfig):
    block_size: int = Field(default=32, description="weights per scale; a power of two from 16 to 256")
    symmetric: bool = Field(default=False, description="symmetric blocks drop the zero point (slightly smaller)")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(default=0, description="0 default, 4 = int8 compute on CPU")
    op_types: list[Literal["MatMul", "Gather"]] = Field(default_factory=lambda: ["MatMul", "Gather"])
    exclude_nodes: list[str] = Field(default_factory=list)

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 16 or value > 256 or value & (value - 1):
            raise ValueError("block_size must be a power of two between 16 and 256")
        return value


@register("quantize.ort-int4-weight-only")
class OrtInt4WeightOnly(Pass[Int4WeightOnlyConfig]):
    Config = Int4WeightOnlyConfig
    stage = "onnx"
    accepts = frozenset({"onnx"})
    produces = "onnx"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        if target.runtime != "onnxruntime":
            problems.append(self.error(f"MatMulNBits is an ONNX Runtime contrib op; {target.runtime} has no kernel "
                                       "for it. Use an onnxruntime target"))
        providers = target.providers()
        if any(p in ("TensorrtExecutionProvider", "OpenVINOExecutionProvider") for p in providers):
            problems.append(self.warning(f"execution providers {providers} have no 4-bit kernel: those nodes fall "
                                         "back to the CPU/CUDA EP"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        nbits = require("onnxruntime.quantization.matmul_nbits_quantizer", purpose=self.name)
        onnx = require("onnx", purpose=self.name)
        config = self.config
        source = model.model_path
        try:
            quantizer = nbits.MatMulNBitsQuantizer(
                onnx.load(str(source)), bits=4, block_size=config.block_size, is_symmetric=config.symmetric,
                accuracy_level=config.accuracy_level, nodes_to_exclude=config.exclude_nodes,
                op_types_to_quantize=tuple(config.op_types), quant_axes=(("MatMul", 0), ("Gather", 1)),
            )
            quantizer.process()
            quantizer.model.save_model_to_file(str(out_dir / INT4_MODEL_FILE), use_external_data_format=False)
        except Exception as err:
            raise PassError(f"{self.name}: 4-bit quantization failed on {source}: {err}.",
                            fix="try op_types: [MatMul] or another block_size.") from err
        ops = Counter(node.op_type for node in onnx.load(str(out_dir / INT4_MODEL_FILE)).graph.node)
        quantized = {op: ops[op] for op in ("MatMulNBits", "GatherBlockQuantized") if ops[op]}
        if not quantized:
            raise PassError(f"{self.name}: no MatMul or Gather weights were quantized in {source}.",
                            fix="check op_types and exclude_nodes; the weights must be constant initializers.")
        copy_side_files(model.path, out_dir, skip={source.name, INT4_MODEL_FILE})
        return PassResult(model_file=INT4_MODEL_FILE, metadata={"quantization": {
            "scheme": "int4-weight-only", **config.model_dump(mode="json"), "quantized_ops": quantized}})
