"""PyTorch dynamic INT8 quantization: nn.Linear weights to int8, activations quantized on the fly.

For profiles whose runtime is PyTorch (no export): torch.ao's quantize_dynamic, run by torch's
fbgemm/x86/qnnpack kernels, which exist on CPU only. The result is a torch-quantized directory (see
slimline.torch_quantized for the pickle-free format); it cannot be exported to ONNX, so the pass
refuses any target that is not the torch runtime on a CPU. Only nn.Linear is converted: GPT-2's
Conv1D projections stay in float (only its LM head is an nn.Linear).
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

from pydantic import Field

from slimline.compression.base import (
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
from slimline.core.errors import PassError
from slimline.formats.hf import load_hf_model
from slimline.formats.torch_quantized import (
    INT8_DYNAMIC,
    WEIGHTS_FILE,
    is_weight_file,
    linear_module_names,
    quantize_int8_dynamic,
    save_int8_dynamic,
)
from slimline.profiles.schema import Target

log = logging.getLogger(__name__)


class TorchInt8DynamicConfig(PassConfig):
    per_channel: bool = Field(default=False, description="one scale per output channel of each weight")
    exclude: list[str] = Field(default_factory=list,
                               description="module names to keep in float: exact names, a parent module "
                                           "(e.g. 'classifier', 'bert.encoder.layer.0') or fnmatch globs")


def excluded(name: str, patterns: list[str]) -> bool:
    return any(name == p or name.startswith(f"{p}.") or fnmatch.fnmatchcase(name, p) for p in patterns)


@register("quantize.torch-int8-dynamic")
class TorchInt8Dynamic(TorchRuntimePass[TorchInt8DynamicConfig]):
    Config = TorchInt8DynamicConfig
    torch_only_reason = ("produces a PyTorch dynamically quantized model that only the torch runtime can run "
                         "(it cannot be exported to ONNX)")

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        if target.device != "cpu":
            problems.append(self.error(
                f"PyTorch's dynamic int8 kernels (fbgemm/qnnpack) run on CPU only, but the target device is "
                f"{target.device}", fix="use quantize.bnb-int8 or quantize.bnb-nf4 for GPU targets"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        config = self.config
        hf_model = load_hf_model(model.path, model.manifest.task)
        linears = linear_module_names(hf_model)
        unmatched = [p for p in config.exclude if not any(excluded(name, [p]) for name in linears)]
        if unmatched:
            raise PassError(f"{self.name}: exclude entries {unmatched} match no nn.Linear module of {model.path}.",
                            fix=f"use module names such as {', '.join(linears[:3])} or fnmatch globs.")
        selected = [name for name in linears if not excluded(name, config.exclude)]
        if not selected:
            raise PassError(f"{self.name}: {model.path} has no nn.Linear module left to quantize "
                            f"({len(linears)} found, all excluded or none present).",
                            fix="narrow `exclude`, or use a pass that suits this architecture.")
        quantized = quantize_int8_dynamic(hf_model, selected, config.per_channel)
        info = save_int8_dynamic(quantized, out_dir, config.model_dump(mode="json"))
        copy_side_files(model.path, out_dir, skip={p.name for p in model.path.iterdir() if is_weight_file(p.name)})
        log.info("%s: quantized %d of %d nn.Linear modules", self.name, len(selected), len(linears))
        return PassResult(model_file=WEIGHTS_FILE, metadata={"quantization": {
            "scheme": INT8_DYNAMIC, **config.model_dump(mode="json"), "quantized_modules": len(selected),
            "float_linear_modules": len(linears) - len(selected), "engine": info["engine"]}})
