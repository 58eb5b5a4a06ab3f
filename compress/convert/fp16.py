"""ONNX fp16 conversion for GPU targets, keeping fp32 inputs and outputs.

Halves the weights and uses tensor cores on the GPU. ONNX Runtime's CPU EP has few fp16 kernels and
inserts casts around the rest, so an fp16 model is slower there than fp32: the pass refuses CPU
targets. Ops that overflow or lose too much in fp16 can be kept in fp32 with `keep_fp32_ops`.
"""

from __future__ import annotations

from pathlib import Path

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
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import PassError
from slimline.profiles.schema import Target

FP16_MODEL_FILE = "model.onnx"


class Fp16Config(PassConfig):
    keep_io_types: bool = Field(default=True, description="fp32 inputs/outputs so callers need not change")
    keep_fp32_ops: list[str] = Field(default_factory=list, description="op types left in fp32")
    keep_fp32_nodes: list[str] = Field(default_factory=list, description="node names left in fp32")


@register("convert.fp16")
class ConvertFp16(Pass[Fp16Config]):
    Config = Fp16Config
    stage = "onnx"
    accepts = frozenset({"onnx"})
    produces = "onnx"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        if target.device != "cuda":
            problems.append(self.error("fp16 is for GPU targets: ONNX Runtime's CPU EP lacks most fp16 kernels and "
                                       "casts around them, so the model would run slower than fp32 on this target",
                                       fix="drop the step for CPU profiles (quantize.ort-int8-dynamic shrinks and "
                                           "speeds up there), or use a GPU profile"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        onnx = require("onnx", purpose=self.name)
        onnx_model_module = require("onnxruntime.transformers.onnx_model", purpose=self.name)
        config = self.config
        try:
            onnx_model = onnx_model_module.OnnxModel(onnx.load(str(model.model_path)))
            onnx_model.convert_float_to_float16(keep_io_types=config.keep_io_types,
                                                op_block_list=config.keep_fp32_ops or None,
                                                node_block_list=config.keep_fp32_nodes or None)
            onnx_model.save_model_to_file(str(out_dir / FP16_MODEL_FILE))
        except Exception as err:
            raise PassError(f"{self.name}: fp16 conversion of {model.model_path} failed: {err}.",
                            fix="keep the failing op type in fp32 with keep_fp32_ops.") from err
        copy_side_files(model.path, out_dir, skip={model.model_path.name, FP16_MODEL_FILE})
        return PassResult(model_file=FP16_MODEL_FILE, metadata={"conversion": {"precision": "fp16",
                                                                               **config.model_dump(mode="json")}})
