"""ONNX Runtime's transformer graph optimiser: fuse attention, LayerNorm, GELU and bias adds.

A raw export runs attention as a dozen small ops; the fused `Attention` / `SkipLayerNormalization`
/ `BiasGelu` kernels are much faster on CPU, and a following dynamic INT8 pass then quantizes the
fused Attention op too (QAttention). The result is an ONNX Runtime-specific graph (contrib ops),
so the pass refuses other runtimes.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

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
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
OPTIMIZED_MODEL_FILE = "model.onnx"
#: HF model_type -> the ORT optimizer's model_type (encoders that share BERT's layout use "bert").
ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                   "electra": "bert", "camembert": "bert", "mpnet": "bert", "deberta": "bert",
                   "gpt2": "gpt2", "gpt_neox": "gpt_neox", "vit": "vit", "swin": "swin", "bart": "bart", "t5": "t5",
                   "clip": "clip", "phi": "phi", "qwen3": "qwen3"}


class OrtTransformersConfig(PassConfig):
    model_type: str = Field(default="auto", description="ORT optimizer model type; auto maps from config.json")
    opt_level: Literal[0, 1, 2, 99] = Field(default=0, description="extra ORT graph optimisation baked in "
                                                                   "(0: fusions only; the session optimises at load)")
    min_fused_attention: int = Field(default=1, ge=0, description="fail if fewer Attention fusions happen")


@register("optimize.ort-transformers")
class OrtTransformersOptimizer(Pass[OrtTransformersConfig]):
    Config = OrtTransformersConfig
    stage = "onnx"
    accepts = frozenset({"onnx"})
    produces = "onnx"

    def _ort_model_type(self, model_type: str | None) -> str | None:
        config = self.config
        if config.model_type != "auto":
            return config.model_type
        return ORT_MODEL_TYPES.get(model_type or "")

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        if not get_runtime(target.runtime).runs_onnx_contrib_ops:
            problems.append(self.error(f"emits ONNX Runtime contrib ops, but the target runtime is {target.runtime}",
                                       fix="drop the step, or use an onnxruntime profile"))
        if self._ort_model_type(model.model_type) is None:
            known = sorted(set(ORT_MODEL_TYPES.values()))
            why = (f"model_type {model.model_type!r}" if model.model_type else
                   "a model whose manifest names no model_type (metadata.model_type: made by hand or from a plain "
                   "PyTorch module)")
            problems.append(self.error(f"has no fusion rules for {why}; it fuses transformer blocks only",
                                       fix=f"drop the step; or, for a transformer that shares one of these layouts, "
                                           f"set the step's model_type to one of {known}"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        optimizer = require("onnxruntime.transformers.optimizer", purpose=self.name)
        config = self.config
        ort_type = self._ort_model_type(model.manifest.metadata.get("model_type"))
        try:
            optimized = optimizer.optimize_model(str(model.model_path), model_type=ort_type, num_heads=0,
                                                 hidden_size=0, opt_level=config.opt_level, use_gpu=False)
        except Exception as err:
            raise PassError(f"{self.name}: ORT's optimizer failed on {model.model_path}: {err}.",
                            fix="drop this step; dynamic INT8 still works on the unfused graph.") from err
        ops = Counter(node.op_type for node in optimized.model.graph.node)
        fused = {op: ops[op] for op in ("Attention", "MultiHeadAttention", "SkipLayerNormalization",
                                        "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "EmbedLayerNormalization")
                 if ops[op]}
        attention = ops["Attention"] + ops["MultiHeadAttention"]
        if attention < config.min_fused_attention:
            raise PassError(f"{self.name}: only {attention} attention blocks were fused (needed "
                            f"{config.min_fused_attention}); the graph does not match ORT's {ort_type} patterns.",
                            fix="set min_fused_attention: 0 to accept a partial fusion, or drop the step.")
        optimized.save_model_to_file(str(out_dir / OPTIMIZED_MODEL_FILE))
        copy_side_files(model.path, out_dir, skip={model.model_path.name, OPTIMIZED_MODEL_FILE})
        return PassResult(model_file=OPTIMIZED_MODEL_FILE,
                          metadata={"optimization": {"ort_model_type": ort_type, "fused_ops": fused,
                                                     "node_count": sum(ops.values())}})
