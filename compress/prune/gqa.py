"""Structured pruning of Llama-family decoders: whole KV groups of grouped-query attention, and MLP channels.

Grouped-query attention shares one key/value head among `num_attention_heads / num_key_value_heads`
query heads, so a query head cannot be removed alone without breaking the grouping: the unit removed
is a KV group (its key and value heads, all its query heads, and their columns of `o_proj`), and
the query-per-KV ratio stays what the kernels and the config expect. An MLP channel is its row of
`gate_proj` and `up_proj` and its column of `down_proj`.

A stock Llama config describes one head count and one MLP width for every layer (there is no
`pruned_heads` for decoders), so every layer keeps the same number of groups and channels (each
layer picks its own by magnitude); `head_dim` is written explicitly, since hidden_size / heads no
longer gives it. The result reloads with `AutoModelForCausalLM.from_pretrained` from safetensors.
"""

from __future__ import annotations

from typing import Any

from slimline.compress.prune.layout import layer_list


def _linear(weight: Any, bias: Any) -> Any:
    import torch

    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _rows(linear: Any, index: Any) -> Any:
    return _linear(linear.weight[index], None if linear.bias is None else linear.bias[index])


def _columns(linear: Any, index: Any) -> Any:
    return _linear(linear.weight[:, index], linear.bias)


def gqa_shape(config: Any) -> dict[str, int]:
    heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return {"layers": int(config.num_hidden_layers), "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
            "intermediate_size": int(config.intermediate_size)}


def prune_gqa_in_place(hf_model: Any, kv_heads_keep: int, width_keep: int) -> dict[str, Any]:
    """Keep `kv_heads_keep` KV groups and `width_keep` MLP channels in every layer (largest L2 norm first)."""
    import torch

    config = hf_model.config
    before = gqa_shape(config)
    group, head_dim = before["heads"] // before["kv_heads"], before["head_dim"]
    kept_groups: dict[str, list[int]] = {}
    with torch.no_grad():
        for index, layer in enumerate(layer_list(hf_model)):
            attention, mlp = layer.self_attn, layer.mlp
            if kv_heads_keep < before["kv_heads"]:
                q = attention.q_proj.weight.view(before["kv_heads"], group * head_dim, -1)
                k = attention.k_proj.weight.view(before["kv_heads"], head_dim, -1)
                v = attention.v_proj.weight.view(before["kv_heads"], head_dim, -1)
                o = attention.o_proj.weight.view(attention.o_proj.weight.shape[0], before["kv_heads"], -1)
                score = sum(t.pow(2).sum(dim=(1, 2)) for t in (q, k, v)) + o.pow(2).sum(dim=(0, 2))
                keep = sorted(torch.topk(score, kv_heads_keep).indices.tolist())
                kept_groups[str(index)] = keep
                q_index = torch.cat([torch.arange(g * group * head_dim, (g + 1) * group * head_dim) for g in keep])
                kv_index = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in keep])
                attention.q_proj = _rows(attention.q_proj, q_index)
                attention.k_proj = _rows(attention.k_proj, kv_index)
                attention.v_proj = _rows(attention.v_proj, kv_index)
                attention.o_proj = _columns(attention.o_proj, q_index)
            if width_keep < before["intermediate_size"]:
                score = (mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)
                         + mlp.down_proj.weight.pow(2).sum(0))
                channels = torch.sort(torch.topk(score, width_keep).indices).values
                mlp.gate_proj, mlp.up_proj = _rows(mlp.gate_proj, channels), _rows(mlp.up_proj, channels)
                mlp.down_proj = _columns(mlp.down_proj, channels)
    config.head_dim = head_dim
    config.num_key_value_heads = kv_heads_keep
    config.num_attention_heads = kv_heads_keep * group
    config.intermediate_size = width_keep
    for layer in layer_list(hf_model):  # the attention modules cache these at construction
        for name, value in (("num_key_value_groups", group), ("head_dim", head_dim)):
            if hasattr(layer.self_attn, name):
                setattr(layer.self_attn, name, value)
    return {"shape_before": before, "shape_after": gqa_shape(config), "kv_groups_kept": kept_groups,
            "queries_per_kv_head": group}
