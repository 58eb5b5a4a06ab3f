"""Structured pruning of attention heads and FFN channels, for any transformer whose blocks can be read.

Where the heads and the FFN are is read from the model (layout.py: the attention modules' own head
counts, the projections each block calls, torch-pruning's dependency graph for what is coupled);
importance.py ranks heads (KV groups under grouped-query attention) and channels by magnitude or
first-order Taylor; width.py cuts them and surgery.py makes the config describe the result, checked
by building the model from that config on the meta device. The result is a plain safetensors
checkpoint that `AutoModelFor*.from_pretrained` reloads with the same outputs (checked after saving),
never a pickled module (the torch-pruning README's `torch.save(model)` is what makes pruned models
unloadable elsewhere). A pre-flight then times the unpruned and pruned model side by side.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from slimline.compression.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compression.hf_save import carry_side_files, save_reloadable
from slimline.compression.prune.layout import read_layout
from slimline.compression.prune.preflight import PreflightConfig, run_preflight
from slimline.compression.prune.width import heads_to_keep, kept_width, prune_width
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.core.errors import PassError
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

log = logging.getLogger(__name__)
ROUND_TO = 8  # GEMM kernels (MLAS, cuBLAS, oneDNN) tile in multiples of 8: other widths waste lanes
__all__ = ["StructuredPrune", "StructuredPruneConfig", "heads_to_keep", "kept_width", "prune_in_place"]

#: What check() can refuse before loading anything. apply() finds the same from the model itself (a family
#: missing here is refused there, with the same fix); the table only moves the refusal before heavy work.
HEADS_NOT_DESCRIBABLE = {
    "modernbert": "ModernBERT derives its head width from hidden_size / num_attention_heads (no config key for it)",
    "deberta-v2": "DeBERTa-v2 builds its attention output projection hidden_size wide whatever the head count",
    "mpnet": "MPNet shares one relative-position bias per head across all layers and derives its head width from "
             "hidden_size / num_attention_heads",
}
#: One head count for every layer: per-layer options cannot apply (grouped-query decoders remove KV groups).
UNIFORM_HEADS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2"})
#: Projections kept as transposed Conv1D modules, which this pass does not cut.
CONV1D_FAMILIES = frozenset({"gpt2"})
FIX_WITHOUT_HEADS = "set heads_ratio: 0 and prune FFN channels (ffn_ratio) and/or drop whole layers with prune.layers"


class StructuredPruneConfig(PassConfig):
    heads_ratio: float = Field(default=0.0, ge=0, lt=1, description="fraction of each layer's heads to remove")
    ffn_ratio: float = Field(default=0.0, ge=0, lt=1, description="fraction of the FFN width to remove "
                                                                  "(same kept width in every layer)")
    heads_ratio_per_layer: dict[int, float] = Field(
        default_factory=dict, description="layer index -> heads ratio, overriding heads_ratio for that layer")
    head_scope: Literal["per-layer", "global"] = Field(
        default="per-layer", description="global: rank heads across all layers, so layer head counts differ")
    importance: Literal["magnitude", "taylor"] = "magnitude"
    importance_samples: int = Field(default=256, ge=8, description="train-split examples for Taylor gradients")
    round_to: int = Field(default=ROUND_TO, ge=1, description="kept FFN width is a multiple of this")
    protected_layers: list[int] = Field(default_factory=list, description="encoder layers left untouched")
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)

    @model_validator(mode="after")
    def _something_to_prune(self) -> StructuredPruneConfig:
        if not (self.heads_ratio or self.ffn_ratio or any(self.heads_ratio_per_layer.values())):
            raise ValueError("heads_ratio, ffn_ratio and heads_ratio_per_layer are all 0: nothing to prune")
        bad = {k: v for k, v in self.heads_ratio_per_layer.items() if not 0 <= v < 1}
        if bad:
            raise ValueError(f"heads_ratio_per_layer values must be in [0, 1): {bad}")
        return self


@register("prune.structured")
class StructuredPrune(Pass[StructuredPruneConfig]):
    Config = StructuredPruneConfig
    stage = "torch"
    accepts = frozenset({"hf"})
    produces = "hf"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        config = self.config
        wants_heads = bool(config.heads_ratio or any(config.heads_ratio_per_layer.values()))
        if model.model_type in CONV1D_FAMILIES:
            problems.append(self.error(f"{model.model_type} keeps its projections as transposed Conv1D modules, "
                                       "which this pass does not cut", fix="use prune.layers to drop whole blocks, "
                                                                           "or drop the step"))
        elif wants_heads and model.model_type in HEADS_NOT_DESCRIBABLE:
            problems.append(self.error(f"cannot prune heads of {model.model_type}: "
                                       f"{HEADS_NOT_DESCRIBABLE[model.model_type]}, so its config cannot describe "
                                       "fewer heads", fix=FIX_WITHOUT_HEADS))
        elif model.model_type in UNIFORM_HEADS:
            problems.extend(self._uniform_problems(model.task == "text-generation"))
        if config.importance == "taylor" and model.task != "text-classification":
            problems.append(self.error("Taylor importance needs labelled text examples (text-classification)",
                                       fix="set importance: magnitude"))
        if config.round_to % ROUND_TO:
            problems.append(self.warning(f"round_to {config.round_to} is not a multiple of {ROUND_TO}: pruned "
                                         "widths that GEMM kernels cannot tile evenly rarely get faster"))
        largest = max([config.heads_ratio, config.ffn_ratio, *config.heads_ratio_per_layer.values()])
        if largest < 0.1:
            problems.append(self.warning(f"pruning at most {largest:.0%} of any width rarely cuts latency "
                                         "measurably; the pre-flight estimate will tell"))
        return problems

    def _uniform_problems(self, grouped: bool) -> list[Problem]:
        """One head count and FFN width for all layers in the config: per-layer options cannot apply."""
        config = self.config
        unsupported = [name for name, used in (("heads_ratio_per_layer", bool(config.heads_ratio_per_layer)),
                                               ("head_scope: global", config.head_scope == "global"),
                                               ("protected_layers", bool(config.protected_layers))) if used]
        if not unsupported:
            return []
        unit = "whole KV groups" if grouped else "the same number of heads in every layer"
        return [self.error(f"this family keeps one head count and FFN width for every layer (its config has no "
                           f"per-layer shapes; pruning removes {unit}), so {', '.join(unsupported)} cannot apply",
                           fix="use heads_ratio (the same in every layer) and ffn_ratio")]

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        config = self.config
        hf_model = load_hf_model(model.path, model.manifest.task)
        probe = example_inputs(hf_model, model, context)
        facts, data_sha256 = prune_in_place(hf_model, model, context, config, probe)
        facts["preflight_estimate"] = run_preflight(hf_model, model, context, config.preflight,
                                                    facts["shape_before"]["parameters"])
        carry_side_files(model.path, out_dir)
        save_reloadable(hf_model, out_dir, model.manifest.task, probe=probe)
        log.info("%s: %s -> %s", self.name, facts["shape_before"], facts["shape_after"])
        return PassResult(model_file="model.safetensors", data_sha256=data_sha256,
                          metadata={"pruning": {**config.model_dump(mode="json"), **facts}})


def prune_in_place(hf_model: Any, model: ModelDir, context: PassContext, config: StructuredPruneConfig,
                   example: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Read the layout, rank and remove heads and FFN channels of `hf_model`; returns (facts, data hashes)."""
    example = example if example is not None else example_inputs(hf_model, model, context)
    layout = read_layout(hf_model, example, model.manifest.task)
    data_sha256: dict[str, str] = {}
    if config.importance == "taylor":
        data_sha256["importance_data"] = accumulate_gradients(hf_model, model, context, config)
    facts = prune_width(hf_model, layout, config)
    hf_model.zero_grad(set_to_none=True)
    facts["torch_pruning_version"] = _version("torch-pruning")
    return facts, data_sha256


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def example_inputs(hf_model: Any, model: ModelDir, context: PassContext) -> dict[str, Any]:
    """Synthetic inputs of the profile's sequence length (batch 2, at most 32 tokens) to trace the model."""
    from slimline.formats.inputs import torch_feeds_for
    from slimline.profiles.schema import Shape

    shape = Shape(batch_size=2, sequence_length=min(context.shape.sequence_length, 32))
    return torch_feeds_for(hf_model, model, shape, seed=context.seed)


def accumulate_gradients(hf_model: Any, model: ModelDir, context: PassContext,
                         config: StructuredPruneConfig) -> str:
    """Label-loss gradients on a train-split sample, summed in `.grad`, for Taylor importance."""
    import torch

    from slimline.core.data import encode_labelled, trimmed_batches

    if context.tuning_data is None or not isinstance(context.tuning_data, DatasetSpec):
        raise PassError("Taylor importance needs labelled examples and this run has none.",
                        fix="pass --eval-data (its train split is used), or set importance: magnitude.")
    spec: DatasetSpec = context.tuning_data.model_copy(
        update={"split": "train", "max_samples": config.importance_samples, "seed": context.seed})
    arrays, data = encode_labelled(spec, model.path, context.shape.sequence_length)
    hf_model.zero_grad(set_to_none=True)
    start = 0
    for batch in trimmed_batches(arrays, 32):
        rows = len(next(iter(batch.values())))
        labels = torch.from_numpy(np.asarray(data.labels[start : start + rows], dtype=np.int64))
        start += rows
        loss = hf_model(**{k: torch.from_numpy(v) for k, v in batch.items()}, labels=labels).loss
        (loss * rows / len(data)).backward()
    return data.sha256
