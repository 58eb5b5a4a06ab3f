"""ONNX Runtime's transformer graph optimiser: fuse attention, LayerNorm, GELU and bias adds.

A raw export runs attention as a dozen small ops; the fused `Attention` / `SkipLayerNormalization`
/ `BiasGelu` kernels are much faster on CPU, and a following dynamic INT8 pass then quantizes the
fused Attention op too (QAttention). The result is an ONNX Runtime-specific graph (contrib ops),
so the pass refuses other runtimes.

Which Hugging Face families it maps to which of ORT's optimizer model types (ORT's own table:
`onnxruntime.transformers.optimizer.MODEL_TYPES`) is checked by fusion counts, not by family resemblance:
tests/unit/test_fusion_mapping.py exports a tiny model of each mapped encoder and requires fused Attention.
ORT's README lists BERT, DistilBERT, RoBERTa and ALBERT as tested; XLM-R and CamemBERT are RoBERTa's code and
ELECTRA BERT's layout, and fuse alike. MPNet (relative position bias added to the scores), DeBERTa (disentangled
attention) and ModernBERT (rotary, local/global attention) fuse no attention under any of ORT's types (0 of 2
blocks on ORT 1.32), so they are not mapped: mapping MPNet to bert failed after the export with "0 attention
blocks fused". Where nothing applies, an `optional: true` step (as in every shipped recipe) is skipped with
"fusion: not available for <type>; continuing unfused", and a required one refuses (exit 2) or fails (exit 3).
"""

from __future__ import annotations

import logging
from collections import Counter
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
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import StepNotApplicable
from slimline.profiles.schema import Target
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
OPTIMIZED_MODEL_FILE = "model.onnx"
#: HF model_type -> the ORT optimizer's model_type. Encoders whose attention ORT's "bert" rules fuse (checked by
#: fusion counts in tests/unit/test_fusion_mapping.py), and the families ORT names as types of its own. ViT keeps
#: ORT's "vit" type, but today's exports of it fuse no attention (SDPA's split scaling): the count decides at run
#: time, so an optional step is skipped there.
ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                   "electra": "bert", "camembert": "bert", "albert": "bert",
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
    skip_label = "fusion"
    skip_consequence = "continuing unfused"

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
            what = model.model_type or "this model (no model_type: a plain PyTorch module or an ONNX file)"
            problems.append(self.error(f"not available for {what}: ONNX Runtime's optimizer has no fusion rules "
                                       "for it",
                                       fix=f"mark the step `optional: true` (skipped where it cannot apply) or drop "
                                           f"it; for a transformer that shares one of these layouts, set the step's "
                                           f"model_type to one of {known}"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        optimizer = require("onnxruntime.transformers.optimizer", purpose=self.name)
        config = self.config
        model_type = model.manifest.metadata.get("model_type")
        ort_type = self._ort_model_type(model_type)
        if ort_type is None:  # check() refuses this before any work; a direct call gets the same answer
            raise StepNotApplicable(f"{self.name}: ONNX Runtime's optimizer has no fusion rules for "
                                    f"{model_type or 'a model without a model_type'}.",
                                    reason=f"not available for {model_type or 'this model'}",
                                    fix="mark the step `optional: true`, or drop it.")
        try:
            optimized = optimizer.optimize_model(str(model.model_path), model_type=ort_type, num_heads=0,
                                                 hidden_size=0, opt_level=config.opt_level, use_gpu=False)
        except Exception as err:  # ORT raises plain exceptions on graphs its rules do not expect
            raise StepNotApplicable(f"{self.name}: ORT's optimizer failed on {model.model_path}: {err}.",
                                    reason=f"ONNX Runtime's {ort_type} optimizer failed on this graph "
                                           f"({type(err).__name__})",
                                    fix="mark the step `optional: true` or drop it; dynamic INT8 still works on the "
                                        "unfused graph.") from err
        ops = Counter(node.op_type for node in optimized.model.graph.node)
        fused = {op: ops[op] for op in ("Attention", "MultiHeadAttention", "SkipLayerNormalization",
                                        "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "EmbedLayerNormalization")
                 if ops[op]}
        attention = ops["Attention"] + ops["MultiHeadAttention"]
        if attention < config.min_fused_attention:
            raise StepNotApplicable(f"{self.name}: only {attention} attention blocks were fused (needed "
                                    f"{config.min_fused_attention}); the graph does not match ORT's {ort_type} "
                                    "patterns.",
                                    reason=f"not available for {model_type} ({attention} attention blocks fused by "
                                           f"ONNX Runtime's {ort_type} rules)",
                                    fix="mark the step `optional: true` (skipped where nothing fuses), set "
                                        "min_fused_attention: 0 to accept a partial fusion, or drop the step.")
        optimized.save_model_to_file(str(out_dir / OPTIMIZED_MODEL_FILE))
        copy_side_files(model.path, out_dir, skip={model.model_path.name, OPTIMIZED_MODEL_FILE})
        return PassResult(model_file=OPTIMIZED_MODEL_FILE,
                          metadata={"optimization": {"ort_model_type": ort_type, "fused_ops": fused,
                                                     "node_count": sum(ops.values())}})
