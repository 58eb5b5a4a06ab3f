"""Structured pruning of attention heads and FFN channels with torch-pruning.

torch-pruning (Fang et al., DepGraph) traces the model once and knows which weights are coupled:
a query channel drags the matching key, value and output-projection channels with it, an FFN
channel its row in `intermediate.dense` and its column in `output.dense`. Its group importances
(magnitude, or first-order Taylor from gradients on a data sample) rank heads and channels; its
group pruning cuts the FFN. Heads are cut with transformers' own `prune_heads` instead, because
that records them in `config.pruned_heads` and is the only form in which a stock config rebuilds
a model with different head counts per layer. The FFN keeps one width for all layers
(`intermediate_size`), rounded to a multiple of 8, for the same reason. The result is a plain
safetensors checkpoint: `AutoModelFor*.from_pretrained` reloads it, no pickled module (the
torch-pruning README's `torch.save(model)` is what makes pruned models unloadable elsewhere).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from slimline.compress.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compress.hf_save import carry_side_files, save_reloadable
from slimline.compress.prune.gqa import gqa_shape, prune_gqa_in_place
from slimline.compress.prune.layout import (
    GQA_PRUNABLE,
    HEAD_AND_FFN_PRUNABLE,
    encoder_parts,
    layer_list,
    original_head_ids,
)
from slimline.compress.prune.preflight import PreflightConfig, run_preflight
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.core.errors import MissingDependency, PassError
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

log = logging.getLogger(__name__)
ROUND_TO = 8  # GEMM kernels (MLAS, cuBLAS, oneDNN) tile in multiples of 8: other widths waste lanes


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


def kept_width(width: int, ratio: float, round_to: int) -> int:
    """Channels left after removing `ratio` of `width`, rounded to the nearest multiple of `round_to`."""
    kept = round(width * (1.0 - ratio) / round_to) * round_to
    return min(width, max(round_to, kept))


def heads_to_keep(num_heads: int, ratio: float) -> int:
    return max(1, num_heads - math.floor(num_heads * ratio + 1e-9))


@register("prune.structured")
class StructuredPrune(Pass[StructuredPruneConfig]):
    Config = StructuredPruneConfig
    stage = "torch"
    accepts = frozenset({"hf"})
    produces = "hf"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        config = self.config
        if model.model_type in GQA_PRUNABLE:
            return problems + self._decoder_problems()
        if model.model_type is not None and model.model_type not in HEAD_AND_FFN_PRUNABLE:
            problems.append(self.error(
                f"prunes heads and FFN channels of BERT-style encoders ({', '.join(sorted(HEAD_AND_FFN_PRUNABLE))}), "
                f"not {model.model_type}", fix="use prune.layers to drop whole blocks, or drop the step"))
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

    def _decoder_problems(self) -> list[Problem]:
        """A Llama config holds one head count and one MLP width for all layers: per-layer options cannot apply."""
        config = self.config
        unsupported = [name for name, used in (("heads_ratio_per_layer", bool(config.heads_ratio_per_layer)),
                                               ("head_scope: global", config.head_scope == "global"),
                                               ("protected_layers", bool(config.protected_layers)),
                                               ("importance: taylor", config.importance == "taylor")) if used]
        if unsupported:
            return [self.error(f"Llama-family decoders keep one head count and MLP width for every layer (their "
                               "config has no per-layer shapes; pruning removes whole KV groups), so "
                               f"{', '.join(unsupported)} cannot apply",
                               fix="use heads_ratio (whole KV groups) and ffn_ratio with importance: magnitude")]
        return []

    def _apply_decoder(self, hf_model: Any, model: ModelDir, out_dir: Path) -> PassResult:
        config, shape = self.config, gqa_shape(hf_model.config)
        kv_keep = heads_to_keep(shape["kv_heads"], config.heads_ratio) if config.heads_ratio else shape["kv_heads"]
        width = shape["intermediate_size"]
        width_keep = kept_width(width, config.ffn_ratio, config.round_to) if config.ffn_ratio else width
        facts = prune_gqa_in_place(hf_model, kv_keep, width_keep)
        import torch

        probe = {"input_ids": torch.arange(8).remainder(hf_model.config.vocab_size)[None]}
        carry_side_files(model.path, out_dir)
        save_reloadable(hf_model, out_dir, model.manifest.task, probe=probe)
        log.info("%s: %s -> %s", self.name, facts["shape_before"], facts["shape_after"])
        return PassResult(model_file="model.safetensors", metadata={"pruning": {
            **config.model_dump(mode="json"), **facts,
            "preflight_estimate": "not run for decoders (the pre-flight times encoder shapes)"}})

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        config = self.config
        hf_model = load_hf_model(model.path, model.manifest.task)
        if hf_model.config.model_type in GQA_PRUNABLE:
            return self._apply_decoder(hf_model, model, out_dir)
        facts, data_sha256 = prune_in_place(hf_model, model, context, config)
        facts["preflight_estimate"] = run_preflight(hf_model, facts["shape_before"], facts["shape_after"], model,
                                                    context, config.preflight)
        carry_side_files(model.path, out_dir)
        save_reloadable(hf_model, out_dir, model.manifest.task)
        log.info("%s: %s -> %s", self.name, facts["shape_before"], facts["shape_after"])
        return PassResult(model_file="model.safetensors", data_sha256=data_sha256,
                          metadata={"pruning": {**config.model_dump(mode="json"), **facts}})


def prune_in_place(hf_model: Any, model: ModelDir, context: PassContext,
                   config: StructuredPruneConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Rank and remove heads and FFN channels of `hf_model`; returns (facts, data hashes)."""
    tp = _torch_pruning()
    shape_before = describe_shape(hf_model)
    graph = tp.DependencyGraph().build_dependency(hf_model, example_inputs=example_inputs(hf_model, model, context),
                                                  output_transform=lambda output: output.logits.sum())
    data_sha256: dict[str, str] = {}
    if config.importance == "taylor":
        data_sha256["importance_data"] = accumulate_gradients(hf_model, model, context, config)
    importance = (tp.importance.GroupTaylorImportance() if config.importance == "taylor"
                  else tp.importance.GroupMagnitudeImportance(p=2))
    prunable = [i for i in range(len(layer_list(hf_model))) if i not in set(config.protected_layers)]
    heads = select_heads(hf_model, graph, importance, prunable, config)
    ffn_kept = prune_ffn(hf_model, graph, importance, prunable, config) if config.ffn_ratio else None
    hf_model.zero_grad(set_to_none=True)
    if any(heads.values()):
        hf_model.prune_heads({layer: ids for layer, ids in heads.items() if ids})
    shape_after = describe_shape(hf_model)
    return {"heads_removed": {str(k): v for k, v in heads.items() if v}, "ffn_width": ffn_kept,
            "shape_before": shape_before, "shape_after": shape_after,
            "torch_pruning_version": _version("torch-pruning")}, data_sha256


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as err:
        raise MissingDependency("prune.structured needs torch-pruning, which is not installed.",
                                fix="pip install 'torch-pruning==1.6.1' (a slimline dependency: "
                                    "reinstall with scripts/install.sh)") from err
    return torch_pruning


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def describe_shape(hf_model: Any) -> dict[str, Any]:
    """Heads per layer, FFN widths and parameter count: what the manifest and the pre-flight compare."""
    layers = list(layer_list(hf_model))
    parts = [encoder_parts(layer) for layer in layers]
    return {"layers": len(layers), "heads": [p.num_heads for p in parts],
            "ffn_width": [p.ffn_in.out_features for p in parts],
            "parameters": int(sum(p.numel() for p in hf_model.parameters()))}


def example_inputs(hf_model: Any, model: ModelDir, context: PassContext) -> dict[str, Any]:
    """Synthetic inputs of the profile's sequence length (batch 2) to trace the dependency graph."""
    from slimline.formats.inputs import torch_feeds_for
    from slimline.profiles.schema import Shape

    shape = Shape(batch_size=2, sequence_length=min(context.shape.sequence_length, 32))
    return torch_feeds_for(hf_model, model, shape, seed=context.seed)


def accumulate_gradients(hf_model: Any, model: ModelDir, context: PassContext,
                         config: StructuredPruneConfig) -> str:
    """Label-loss gradients on a train-split sample, summed in `.grad`, for Taylor importance."""
    import torch

    from slimline.core.data import encode_labelled, trimmed_batches

    if context.tuning_data is None:
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


def _group_scores(graph: Any, importance: Any, module: Any, channels: int) -> Any:
    import torch_pruning as tp

    group = graph.get_pruning_group(module, tp.prune_linear_out_channels, idxs=list(range(channels)))
    return importance(group).detach().float()


def select_heads(hf_model: Any, graph: Any, importance: Any, prunable: list[int],
                 config: StructuredPruneConfig) -> dict[int, list[int]]:
    """Original ids of the heads to remove per layer, lowest group importance first.

    A head's score is the sum of its channels' scores in the query/key/value/output group that
    torch-pruning builds for the layer (it couples the four projections by head).
    """
    layers = list(layer_list(hf_model))
    scores: dict[int, np.ndarray] = {}
    for index in prunable:
        parts = encoder_parts(layers[index])
        channel_scores = _group_scores(graph, importance, parts.query, parts.query.out_features)
        scores[index] = channel_scores.reshape(parts.num_heads, -1).sum(-1).numpy()
    removed: dict[int, list[int]] = {}
    if config.head_scope == "global" and config.heads_ratio and not config.heads_ratio_per_layer:
        # Scores are normalised within each group, so they compare across layers; every layer keeps one head.
        total = sum(len(s) for s in scores.values())
        budget = math.floor(total * config.heads_ratio + 1e-9)
        ranked = sorted(((float(s), layer, pos) for layer, row in scores.items() for pos, s in enumerate(row)))
        chosen: dict[int, list[int]] = {layer: [] for layer in scores}
        for _, layer, pos in ranked:
            if budget == 0:
                break
            if len(chosen[layer]) < len(scores[layer]) - 1:
                chosen[layer].append(pos)
                budget -= 1
        positions = chosen
    else:
        positions = {}
        for layer, row in scores.items():
            ratio = config.heads_ratio_per_layer.get(layer, config.heads_ratio)
            positions[layer] = list(np.argsort(row, kind="stable")[: len(row) - heads_to_keep(len(row), ratio)])
    for layer, picked in positions.items():
        ids = original_head_ids(hf_model.config, layer)
        removed[layer] = sorted(ids[int(p)] for p in picked)
    return removed


def prune_ffn(hf_model: Any, graph: Any, importance: Any, prunable: list[int],
              config: StructuredPruneConfig) -> int:
    """Remove the least important FFN channels of each prunable layer; returns the kept width."""
    import torch_pruning as tp

    layers = list(layer_list(hf_model))
    widths = {encoder_parts(layers[i]).ffn_in.out_features for i in range(len(layers))}
    if len(widths) != 1:
        raise PassError(f"the FFN widths differ between layers ({sorted(widths)}), which a stock config cannot "
                        "describe.", fix="prune the FFN once, from the unpruned checkpoint.")
    width = widths.pop()
    kept = kept_width(width, config.ffn_ratio, config.round_to)
    if kept == width:
        log.warning("ffn_ratio %.2f of width %d rounds to nothing removed", config.ffn_ratio, width)
        return width
    if config.protected_layers:
        raise PassError("protected_layers cannot be combined with ffn_ratio: the config holds one FFN width "
                        "for every layer, so all layers must keep the same width.",
                        fix="protect layers only when pruning heads, or drop protected_layers.")
    for index in prunable:
        ffn_in = encoder_parts(layers[index]).ffn_in
        scores = _group_scores(graph, importance, ffn_in, width)
        drop = np.argsort(scores.numpy(), kind="stable")[: width - kept]
        graph.get_pruning_group(ffn_in, tp.prune_linear_out_channels, idxs=sorted(int(i) for i in drop)).prune()
    hf_model.config.intermediate_size = kept
    return kept
