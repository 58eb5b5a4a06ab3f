"""4-bit weight-only quantization to ONNX Runtime's MatMulNBits (and GatherBlockQuantized for embeddings).

Weights are stored as blocks of 4-bit integers with one scale (and zero point when asymmetric) per
block; activations stay float. The point is size: MiniLM-sized encoders shrink to about a quarter of
fp32. MatMulNBits has CPU and CUDA kernels in ONNX Runtime; TensorRT has none, so that is refused.
`accuracy_level: 4` lets the CPU kernel compute in int8 (faster on CPUs with VNNI, lossier).
`bits: 8` stores 8-bit blocks instead: on small LLMs 4-bit rounding costs tens of percent of
perplexity while 8-bit blocks cost about one (bench/results/llm-cpu.md), and decoding is still
about twice as fast as fp32 because each step reads a quarter of the bytes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

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
from slimline.compression.quantize.ort_common import weight_op_coverage
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import PassError
from slimline.profiles.schema import Target
from slimline.runtimes import get_runtime

INT4_MODEL_FILE = "model.onnx"


class Int4WeightOnlyConfig(PassConfig):
    bits: Literal[4, 8] = Field(default=4, description="4, or 8 (MatMul only: GatherBlockQuantized takes 4 bits); "
                                                       "8-bit blocks lose far less on small LLMs")
    block_size: int = Field(default=32, description="weights per scale; a power of two from 16 to 256")
    symmetric: bool = Field(default=False, description="symmetric blocks drop the zero point (slightly smaller)")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(default=0, description="0 default, 4 = int8 compute on CPU")
    op_types: list[Literal["MatMul", "Gather"]] = Field(default_factory=lambda: ["MatMul", "Gather"])
    exclude_nodes: list[str] = Field(default_factory=list)
    transposed_weights: Literal["materialize", "keep"] = Field(
        default="materialize", description="a MatMul reading Transpose(initializer) - a tied LM head - gets its "
                                           "own transposed copy so that it is quantized too (4-bit copies of a tied "
                                           "matrix are far smaller than the one fp32 matrix)")

    @model_validator(mode="after")
    def _gather_is_4_bit(self) -> Int4WeightOnlyConfig:
        if self.bits == 8 and "Gather" in self.op_types:
            raise ValueError("bits: 8 quantizes MatMul weights only (ONNX Runtime's GatherBlockQuantized takes 4 "
                             "bits): set op_types: [MatMul]")
        return self

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
    skip_consequence = "continuing unquantized"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        if not get_runtime(target.runtime).runs_onnx_contrib_ops:
            problems.append(self.error(f"MatMulNBits is an ONNX Runtime contrib op; {target.runtime} has no kernel "
                                       "for it", fix="use an onnxruntime profile (cpu, gpu-t4), or drop the step"))
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
        graph_model = onnx.load(str(source))
        materialized = materialize_transposed_weights(graph_model) if config.transposed_weights == "materialize" else []
        try:
            quantizer = nbits.MatMulNBitsQuantizer(
                graph_model, bits=config.bits, block_size=config.block_size, is_symmetric=config.symmetric,
                accuracy_level=config.accuracy_level, nodes_to_exclude=config.exclude_nodes,
                op_types_to_quantize=tuple(config.op_types), quant_axes=(("MatMul", 0), ("Gather", 1)),
            )
            quantizer.process()
            quantizer.model.save_model_to_file(str(out_dir / INT4_MODEL_FILE), use_external_data_format=False)
        except Exception as err:
            raise PassError(f"{self.name}: {config.bits}-bit quantization failed on {source}: {err}.",
                            fix="try op_types: [MatMul] or another block_size.") from err
        ops = Counter(node.op_type for node in onnx.load(str(out_dir / INT4_MODEL_FILE)).graph.node)
        quantized = {op: ops[op] for op in ("MatMulNBits", "GatherBlockQuantized") if ops[op]}
        effect = check_quantization_effect(self.name, model.path, source.name, out_dir, INT4_MODEL_FILE,
                                           weight_op_coverage(source, list(config.op_types)), list(config.op_types))
        copy_side_files(model.path, out_dir, skip={source.name, INT4_MODEL_FILE})
        return PassResult(model_file=INT4_MODEL_FILE, metadata={"quantization": {
            "scheme": f"int{config.bits}-weight-only", **config.model_dump(mode="json"), "quantized_ops": quantized,
            "materialized_transposed_weights": materialized, "effect": effect}})


def materialize_transposed_weights(model: Any) -> list[str]:
    """Give each MatMul whose weight is Transpose(initializer) its own transposed initializer (in place).

    optimum keeps a tied LM head as `MatMul(x, Transpose(embed_tokens.weight))` so that the fp32 file
    stores the matrix once; MatMulNBits only quantizes constant weights, so that head (the largest
    matrix of a small LLM, read at every decode step) would stay fp32. Returns the MatMul names rewired.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    rewired = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in producers:
            continue
        transpose = producers[node.input[1]]
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [1, 0])
        if transpose.op_type != "Transpose" or transpose.input[0] not in initializers or perm != [1, 0]:
            continue
        weight = numpy_helper.to_array(initializers[transpose.input[0]])
        copy = numpy_helper.from_array(weight.T.copy(), name=f"{transpose.input[0]}.transposed_for_{node.name}")
        graph.initializer.append(copy)
        node.input[1] = copy.name
        rewired.append(node.name)
    still_read = {name for node in graph.node for name in node.input}
    for node in [n for n in graph.node if n.op_type == "Transpose" and not set(n.output) & still_read]:
        graph.node.remove(node)
    return rewired
