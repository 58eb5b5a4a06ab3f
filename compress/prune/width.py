"""Removing heads and FFN channels from a model whose blocks `layout.read_layout` has found.

Two ways a config can say how many heads a layer has, and the model decides which applies:
- *per layer*: families whose transformers class implements `prune_heads` (BERT, RoBERTa, XLM-R,
  ELECTRA, DistilBERT, ALBERT, ViT) record removed heads in `config.pruned_heads` and rebuild with a
  different head count in each layer; heads are cut with that same `prune_heads`.
- *uniform*: every other family (DeBERTa-v2, Llama, Qwen2, Phi-3, Gemma …) has one head count for
  all layers, so every layer keeps the same number of heads (each layer picks its own by importance)
  and the config's head count and head width are rewritten (surgery.describe_uniform_shape).
With grouped-query attention the unit removed is a KV group: its key and value heads and all query
heads that read them, so the query-per-KV ratio the kernels expect stays. The FFN keeps one width for
every layer (one `intermediate_size`), rounded to a multiple of `round_to`.

Heads coupled to a module outside their layer (MPNet's relative-position bias has one column per head
and is shared by every layer) cannot be removed layer by layer, and the config cannot say fewer heads
in every layer either: that is refused with the reason and a fix that works (FFN and layers).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.compression.prune.importance import channel_scores, unit_scores
from slimline.compression.prune.layout import Layout
from slimline.compression.prune.surgery import describe_uniform_shape, keep_channels, keep_units, meta_build
from slimline.core.errors import PassError

if TYPE_CHECKING:
    from slimline.compression.prune.structured import StructuredPruneConfig

log = logging.getLogger(__name__)


def kept_width(width: int, ratio: float, round_to: int) -> int:
    """Channels left after removing `ratio` of `width`, rounded to the nearest multiple of `round_to`."""
    kept = round(width * (1.0 - ratio) / round_to) * round_to
    return min(width, max(round_to, kept))


def heads_to_keep(num_heads: int, ratio: float) -> int:
    return max(1, num_heads - math.floor(num_heads * ratio + 1e-9))


def per_layer_heads_supported(hf_model: Any, layout: Layout) -> bool:
    """Can the config record different heads per layer? Tried on a meta-device copy (transformers' own code)."""
    attentions = [b.attention for b in layout.blocks if b.attention is not None]
    if not attentions or any(a.kv_heads != a.heads or a.coupled_outside for a in attentions):
        return False
    copy = meta_build(hf_model, hf_model.config)
    try:
        copy.prune_heads({0: [0]})
    except (NotImplementedError, AttributeError):
        return False
    return True


def original_head_ids(config: Any, layer_index: int, heads_now: int) -> list[int]:
    """The original ids of the heads a layer still has: `prune_heads` takes ids in the unpruned numbering."""
    pruned = {int(h) for h in (config.pruned_heads or {}).get(layer_index, [])}
    return [h for h in range(heads_now + len(pruned)) if h not in pruned]


def describe_shape(layout: Layout, hf_model: Any) -> dict[str, Any]:
    """Heads (and KV heads) per layer, FFN widths and parameter count: what the manifest and the pre-flight compare."""
    attentions = [b.attention for b in layout.blocks]
    shape: dict[str, Any] = {"layers": len(layout.blocks), "heads": [a.heads if a else 0 for a in attentions],
                             "ffn_width": [b.ffn.width if b.ffn else 0 for b in layout.blocks],
                             "parameters": int(sum(p.numel() for p in hf_model.parameters()))}
    if any(a is not None and a.kv_heads != a.heads for a in attentions):
        shape["kv_heads"] = [a.kv_heads if a else 0 for a in attentions]
    heads_dims = {a.head_dim for a in attentions if a is not None}
    if len(heads_dims) == 1:
        shape["head_dim"] = heads_dims.pop()
    return shape


def _uniform(values: list[int], what: str) -> int:
    distinct = sorted(set(values))
    if len(distinct) != 1:
        raise PassError(f"the {what} differ between layers ({distinct}), which this model's config cannot describe.",
                        fix="prune once, from the unpruned checkpoint.")
    return distinct[0]


def select_heads_per_layer(scores: dict[int, np.ndarray], config: StructuredPruneConfig) -> dict[int, list[int]]:
    """Positions (in each layer's current numbering) of the heads to remove, lowest score first."""
    if config.head_scope == "global" and config.heads_ratio and not config.heads_ratio_per_layer:
        # Scores are normalised within each layer, so they compare across layers; every layer keeps one head.
        total = sum(len(s) for s in scores.values())
        budget = math.floor(total * config.heads_ratio + 1e-9)
        ranked = sorted((float(s), layer, pos) for layer, row in scores.items() for pos, s in enumerate(row))
        chosen: dict[int, list[int]] = {layer: [] for layer in scores}
        for _, layer, pos in ranked:
            if budget == 0:
                break
            if len(chosen[layer]) < len(scores[layer]) - 1:
                chosen[layer].append(pos)
                budget -= 1
        return chosen
    positions = {}
    for layer, row in scores.items():
        ratio = config.heads_ratio_per_layer.get(layer, config.heads_ratio)
        positions[layer] = [int(p) for p in np.argsort(row, kind="stable")[: len(row) - heads_to_keep(len(row), ratio)]]
    return positions


def prune_width(hf_model: Any, layout: Layout, config: StructuredPruneConfig) -> dict[str, Any]:
    """Score, then cut FFN channels and heads of `hf_model` in place and rewrite its config; returns the facts."""
    wants_heads = bool(config.heads_ratio or any(config.heads_ratio_per_layer.values()))
    prunable = [b for b in layout.blocks if b.index not in set(config.protected_layers)]
    before = describe_shape(layout, hf_model)
    per_layer = wants_heads and per_layer_heads_supported(hf_model, layout)
    if wants_heads:
        _refuse_unprunable_heads(layout, per_layer, config)
    head_scores = {b.index: unit_scores(b.attention, config.importance).numpy()
                   for b in prunable if wants_heads and b.attention is not None}
    ffn_plan = _ffn_plan(layout, config) if config.ffn_ratio else None
    facts: dict[str, Any] = {"layout_read_by": layout.read_by, "shape_before": before}
    if ffn_plan is not None:
        width, kept = ffn_plan
        for block in prunable:
            if block.ffn is not None and kept < width:
                order = np.argsort(channel_scores(block.ffn, config.importance).numpy(), kind="stable")
                keep_channels(block.ffn, [int(c) for c in order[width - kept :]])
        facts["ffn_width"] = kept
    else:
        facts["ffn_width"] = None
    heads_after = list(before["heads"])
    if head_scores and per_layer:
        removed = _cut_heads_per_layer(hf_model, head_scores, config)
        facts["heads_removed"] = {str(k): v for k, v in removed.items() if v}
        heads_after = [h - len(removed.get(i, [])) for i, h in enumerate(before["heads"])]
    elif head_scores:
        facts.update(_cut_heads_uniformly(layout, head_scores, config))
        heads_after = [b.attention.heads if b.attention else 0 for b in layout.blocks]
    attention0 = next(b.attention for b in layout.blocks if b.attention is not None)
    shape_keys = {"heads": before["heads"][0] if per_layer else attention0.heads, "kv_heads": attention0.kv_heads,
                  "head_dim": attention0.head_dim, "ffn_width": facts["ffn_width"] or before["ffn_width"][0]}
    facts["config_keys_written"] = describe_uniform_shape(
        hf_model, layout, {"heads": before["heads"][0], "kv_heads": before.get("kv_heads", before["heads"])[0],
                           "head_dim": attention0.head_dim, "ffn_width": before["ffn_width"][0]}, shape_keys)
    after = {**before, "heads": heads_after, "ffn_width": [facts["ffn_width"] or w for w in before["ffn_width"]],
             "parameters": int(sum(p.numel() for p in hf_model.parameters()))}
    if "kv_heads" in before:
        after["kv_heads"] = [b.attention.kv_heads if b.attention else 0 for b in layout.blocks]
    facts["shape_after"] = after
    if head_scores:
        facts["head_config"] = ("per layer (config.pruned_heads)" if per_layer else
                                "uniform (one head count for every layer)")
    return facts


def _refuse_unprunable_heads(layout: Layout, per_layer: bool, config: StructuredPruneConfig) -> None:
    coupled = next((b.attention for b in layout.blocks if b.attention and b.attention.coupled_outside), None)
    if coupled is not None:
        raise PassError(f"the heads of {coupled.name} are coupled to modules outside their layer "
                        f"({', '.join(coupled.coupled_outside[:4])}), found by torch-pruning's dependency graph: a "
                        "per-head parameter shared by every layer, so heads cannot be removed layer by layer.",
                        fix="prune FFN channels only (heads_ratio: 0) and/or drop whole layers with prune.layers.")
    if per_layer:
        return
    per_layer_options = [name for name, used in (("heads_ratio_per_layer", bool(config.heads_ratio_per_layer)),
                                                 ("head_scope: global", config.head_scope == "global"),
                                                 ("protected_layers", bool(config.protected_layers))) if used]
    if per_layer_options:
        grouped = any(b.attention and b.attention.kv_heads != b.attention.heads for b in layout.blocks)
        unit = "whole KV groups" if grouped else "heads"
        raise PassError(f"this model's config holds one head count for every layer (pruning removes {unit}), so "
                        f"{', '.join(per_layer_options)} cannot apply.",
                        fix="use heads_ratio (the same in every layer) and ffn_ratio.")


def _ffn_plan(layout: Layout, config: StructuredPruneConfig) -> tuple[int, int] | None:
    widths = [b.ffn.width for b in layout.blocks if b.ffn is not None]
    if not widths:
        raise PassError("found no feed-forward projections to prune in this model's layers.",
                        fix="set ffn_ratio: 0 (prune heads only), or use prune.layers.")
    width = _uniform(widths, "FFN widths")
    kept = kept_width(width, config.ffn_ratio, config.round_to)
    if kept == width:
        log.warning("ffn_ratio %.2f of width %d rounds to nothing removed", config.ffn_ratio, width)
        return width, width
    if config.protected_layers:
        raise PassError("protected_layers cannot be combined with ffn_ratio: the config holds one FFN width "
                        "for every layer, so all layers must keep the same width.",
                        fix="protect layers only when pruning heads, or drop protected_layers.")
    return width, kept


def _cut_heads_per_layer(hf_model: Any, scores: dict[int, np.ndarray],
                         config: StructuredPruneConfig) -> dict[int, list[int]]:
    positions = select_heads_per_layer(scores, config)
    removed: dict[int, list[int]] = {}
    for layer, picked in positions.items():
        ids = original_head_ids(hf_model.config, layer, len(scores[layer]))
        removed[layer] = sorted(ids[p] for p in picked)
    if any(removed.values()):
        hf_model.prune_heads({layer: ids for layer, ids in removed.items() if ids})
    return removed


def _cut_heads_uniformly(layout: Layout, scores: dict[int, np.ndarray],
                         config: StructuredPruneConfig) -> dict[str, Any]:
    attentions = {b.index: b.attention for b in layout.blocks if b.attention is not None}
    units = _uniform([a.kv_heads for a in attentions.values()], "head counts")
    group = _uniform([a.group_size for a in attentions.values()], "query heads per KV head")
    keep = heads_to_keep(units, config.heads_ratio)
    if len(scores) != len(attentions):
        raise PassError("every layer must keep the same head count here, so no layer can be left out.",
                        fix="drop protected_layers.")
    kept: dict[str, list[int]] = {}
    for index, attention in attentions.items():
        chosen = sorted(int(u) for u in np.argsort(scores[index], kind="stable")[units - keep :])
        keep_units(attention, chosen)
        kept[str(index)] = chosen
    return {"kv_groups_kept" if group > 1 else "heads_kept": kept, "queries_per_kv_head": group}
