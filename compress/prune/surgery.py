"""Cutting heads and FFN channels out of a model in place, and making its config describe the result.

A pruned model must rebuild from its config alone (`from_pretrained`), so the config is the contract.
Which config key a family reads a width from lives in its constructor, not in the module graph; so the
keys below are candidates, and the family's own constructor decides: the model is built from the
edited config on the meta device (no memory, no weights) and every parameter shape must equal the
pruned model's. A family whose constructor derives the head width from `hidden_size /
num_attention_heads` (ModernBERT, MPNet) has no key that can say "fewer heads of the same width", and
is refused rather than saved with weights that would not load.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from slimline.compression.prune.importance import channel_rows, unit_columns, unit_rows
from slimline.compression.prune.layout import Attention, FeedForward, Layout
from slimline.core.errors import PassError

if TYPE_CHECKING:
    import torch

#: Config keys that may hold a head count, a head width, a KV head count, an FFN width, a layer count.
HEAD_COUNT_KEYS = ("num_attention_heads", "n_heads", "num_heads", "n_head", "encoder_attention_heads")
HEAD_WIDTH_KEYS = ("head_dim", "attention_head_size")
KV_HEAD_KEYS = ("num_key_value_heads",)
FFN_WIDTH_KEYS = ("intermediate_size", "hidden_dim", "ffn_dim", "n_inner", "encoder_ffn_dim")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")
#: Module attributes that are state, not shape (never copied from a freshly built model).
NOT_SHAPE = frozenset({"training"})


def _keep_rows(linear: torch.nn.Linear, index: torch.Tensor) -> None:
    import torch

    linear.weight = torch.nn.Parameter(linear.weight.data.index_select(0, index).clone())
    if linear.bias is not None:
        linear.bias = torch.nn.Parameter(linear.bias.data.index_select(0, index).clone())
    linear.out_features = len(index)


def _keep_columns(linear: torch.nn.Linear, index: torch.Tensor) -> None:
    import torch

    linear.weight = torch.nn.Parameter(linear.weight.data.index_select(1, index).clone())
    linear.in_features = len(index)


def keep_units(attention: Attention, units: list[int]) -> None:
    """Keep the KV groups `units` (heads, without GQA) of one attention module, in their order."""
    units = sorted(units)
    for projection in attention.projections:
        _keep_rows(projection.module, unit_rows(attention, projection, units))
    _keep_columns(attention.output.module, unit_columns(attention, units))
    attention.heads = len(units) * attention.group_size
    attention.kv_heads = len(units)


def keep_channels(ffn: FeedForward, channels: list[int]) -> None:
    """Keep the FFN channels `channels` (and both halves of a fused gate/up projection)."""
    import torch

    index = torch.tensor(sorted(channels), dtype=torch.long)
    for projection in ffn.inputs:
        _keep_rows(projection.module, channel_rows(projection, ffn.width, index))
    _keep_columns(ffn.output.module, index)
    ffn.width = len(index)


def meta_build(hf_model: Any, config: Any) -> Any:
    """The model `config` describes, its parameters on the meta device: shapes without memory or initialisation.

    Only parameters go to the meta device (transformers' init_empty_weights): `prune_heads`, applied from
    config.pruned_heads while the model is built, computes which rows to keep from ordinary tensors, which a
    global meta device would turn into placeholders (and silently keep every row).
    """
    from transformers.integrations.accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return type(hf_model)(copy.deepcopy(config))


def shape_mismatches(hf_model: Any, built: Any) -> list[str]:
    mine = {k: tuple(v.shape) for k, v in hf_model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    return [f"{k}: {mine.get(k)} vs config {theirs.get(k)}" for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k)]


def _set(config: Any, keys: tuple[str, ...], before: int, after: int) -> list[str]:
    changed = [key for key in keys if getattr(config, key, None) == before]
    for key in changed:
        setattr(config, key, after)
    return changed


def describe_uniform_shape(hf_model: Any, layout: Layout, before: dict[str, int], after: dict[str, int]) -> dict[str,
                                                                                                                Any]:
    """Write the pruned head count / FFN width into the config; the meta-built model must match every shape.

    `before` / `after`: heads, kv_heads, head_dim, ffn_width (the same in every block). Returns the keys set.
    """
    config = hf_model.config
    written: dict[str, Any] = {}
    if after["ffn_width"] != before["ffn_width"]:
        for key in _set(config, FFN_WIDTH_KEYS, before["ffn_width"], after["ffn_width"]):
            written[key] = after["ffn_width"]
    width_options: list[str | None] = [None]
    if after["heads"] != before["heads"]:
        for key in _set(config, HEAD_COUNT_KEYS, before["heads"], after["heads"]):
            written[key] = after["heads"]
        if after["kv_heads"] != before["kv_heads"]:
            for key in _set(config, KV_HEAD_KEYS, before["kv_heads"], after["kv_heads"]):
                written[key] = after["kv_heads"]
        width_options = [None, *HEAD_WIDTH_KEYS]
    problems: list[str] = []
    for width_key in width_options:
        trial = copy.deepcopy(config)
        if width_key is not None:
            setattr(trial, width_key, before["head_dim"])
        built = meta_build(hf_model, trial)
        problems = shape_mismatches(hf_model, built)
        if not problems:
            if width_key is not None:
                setattr(config, width_key, before["head_dim"])
                written[width_key] = before["head_dim"]
            sync_cached_attributes(hf_model, built)
            return written
    family = getattr(config, "model_type", type(hf_model).__name__)
    raise PassError(f"the pruned {family} cannot be described by its config: built from it, the model would have "
                    f"other shapes ({'; '.join(problems[:3])}); its constructor takes these widths from no config key "
                    "(it derives them from hidden_size), so the checkpoint would not reload.",
                    fix="prune FFN channels only (heads_ratio: 0) and/or drop whole layers with prune.layers; "
                        "both keep a config that describes the model.")


def sync_cached_attributes(hf_model: Any, built: Any) -> list[str]:
    """Modules cache widths at construction (all_head_size, num_key_value_groups, n_heads): copy them from `built`.

    Without this the in-memory model would still reshape to the old widths, and its outputs could not be
    compared with the reloaded checkpoint's.
    """
    fresh = dict(built.named_modules())
    updated = []
    for name, module in hf_model.named_modules():
        twin = fresh.get(name)
        if twin is None or type(twin) is not type(module):
            continue
        for attribute, value in vars(twin).items():
            if attribute.startswith("_") or attribute in NOT_SHAPE or not isinstance(value, (int, float, tuple)):
                continue
            if attribute in vars(module) and vars(module)[attribute] != value:
                setattr(module, attribute, value)
                updated.append(f"{name}.{attribute}")
    return updated


def layer_count_key(config: Any, count: int) -> str | None:
    """The config key holding the number of layers (`count`), or None."""
    return next((key for key in LAYER_COUNT_KEYS if getattr(config, key, None) == count), None)
