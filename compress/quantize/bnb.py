"""bitsandbytes weight quantization for PyTorch-runtime targets: LLM.int8 and 4-bit NF4/FP4.

Two passes in one file because they share their refusals and differ only in options. Quantization
happens as transformers loads the checkpoint through a BitsAndBytesConfig, on the target's device;
the result is a torch-quantized directory (slimline.torch_quantized). bitsandbytes models cannot be
exported to ONNX or TensorRT (optimum #1914), so check() refuses any target whose runtime is not
torch before anything runs. bitsandbytes >= 0.48 also runs on CPU (see slimline.torch_quantized for
what was verified); transformers additionally needs accelerate for it, hence the `bnb` extra.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from slimline.compression.base import (
    ConfigT,
    ModelInfo,
    PassConfig,
    PassContext,
    PassResult,
    Problem,
    TorchRuntimePass,
    copy_side_files,
    register,
)
from slimline.core.artifact import ModelDir
from slimline.core.deps import is_available
from slimline.formats.torch_quantized import BNB_INSTALL, WEIGHTS_FILE, bnb_scheme, is_weight_file, quantize_bnb
from slimline.profiles.schema import Target

NOT_EXPORTABLE = ("bitsandbytes models cannot be exported to ONNX or TensorRT (optimum #1914), so they run "
                  "only on the torch runtime")


class BnbInt8Config(PassConfig):
    threshold: float = Field(default=6.0, gt=0, description="LLM.int8 outlier threshold: activations above it "
                                                            "stay in fp16")
    skip_modules: list[str] = Field(default_factory=list, description="module names to keep unquantized "
                                                                       "(the classifier head is kept anyway)")


class BnbNf4Config(PassConfig):
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit data type: NormalFloat4 or FP4")
    compute_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="dtype of the 4-bit matmuls and the unquantized layers; "
                                       "float16/bfloat16 are faster on GPUs")
    double_quant: bool = Field(default=False, description="also quantize the quantization constants (~0.4 bit/param)")
    skip_modules: list[str] = Field(default_factory=list, description="module names to keep unquantized")


class _BitsAndBytesPass(TorchRuntimePass[ConfigT]):
    torch_only_reason = NOT_EXPORTABLE

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        missing = [module for module in ("bitsandbytes", "accelerate") if not is_available(module)]
        if missing:
            problems.append(self.error(f"needs {' and '.join(missing)}, which cannot be imported here",
                                       fix=BNB_INSTALL))
        return problems

    @abstractmethod
    def quantization_options(self) -> dict[str, Any]:
        """quantization.json's scheme and options for slimline.torch_quantized.quantize_bnb."""

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        info = quantize_bnb(model.path, out_dir, model.manifest.task, self.quantization_options(),
                            context.target.device)
        copy_side_files(model.path, out_dir, skip={p.name for p in model.path.iterdir() if is_weight_file(p.name)})
        return PassResult(model_file=WEIGHTS_FILE, metadata={"quantization": info})


@register("quantize.bnb-int8", extra="bnb")
class BnbInt8(_BitsAndBytesPass[BnbInt8Config]):
    Config = BnbInt8Config

    def quantization_options(self) -> dict[str, Any]:
        return {"scheme": bnb_scheme("int8"), **self.config.model_dump(mode="json")}


@register("quantize.bnb-nf4", extra="bnb")
class BnbNf4(_BitsAndBytesPass[BnbNf4Config]):
    Config = BnbNf4Config

    def quantization_options(self) -> dict[str, Any]:
        config = self.config
        return {"scheme": bnb_scheme("4bit", config.quant_type), **config.model_dump(mode="json")}
