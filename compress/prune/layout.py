"""Where the prunable parts of a Hugging Face transformer live, per architecture family.

Pruning must leave a model that `AutoModel*.from_pretrained` rebuilds from its config alone, so
only what a stock config can describe is pruned: attention heads (config `pruned_heads`, applied
by transformers' own `prune_heads` on load), one FFN width for every layer (`intermediate_size`)
and the number of layers (`num_hidden_layers`). The hidden/residual width, embeddings and the
task head are never touched: they are shared by every layer and fixed by the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by the passes' apply(), not when the catalogue lists them
    import torch

#: model_type -> path of the encoder layer list from the task model's base model.
ENCODER_LAYER_LISTS = {
    "bert": "encoder.layer", "roberta": "encoder.layer", "xlm-roberta": "encoder.layer",
    "camembert": "encoder.layer", "electra": "encoder.layer", "vit": "encoder.layer",
}
#: model_type -> path of the decoder block list (only whole blocks are dropped there).
DECODER_LAYER_LISTS = {"gpt2": "h", "llama": "layers", "mistral": "layers", "qwen2": "layers", "qwen3": "layers"}
#: Llama-family decoders: grouped-query attention (q/k/v/o_proj) and a gated MLP (gate/up/down_proj).
GQA_PRUNABLE = frozenset({"llama", "mistral", "qwen2", "qwen3"})
HEAD_AND_FFN_PRUNABLE = frozenset(ENCODER_LAYER_LISTS)
LAYER_DROPPABLE = frozenset(ENCODER_LAYER_LISTS) | frozenset(DECODER_LAYER_LISTS)


@dataclass(frozen=True)
class EncoderLayerParts:
    """One BERT-style encoder layer: its attention projections and its feed-forward pair."""

    query: torch.nn.Linear
    num_heads: int
    ffn_in: torch.nn.Linear  # hidden -> intermediate: its output channels are the FFN width
    ffn_out: torch.nn.Linear  # intermediate -> hidden


def _attribute(root: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def layer_list(model: Any) -> torch.nn.ModuleList:
    """The model's list of transformer layers (encoder layers or decoder blocks)."""
    model_type = model.config.model_type
    path = ENCODER_LAYER_LISTS.get(model_type) or DECODER_LAYER_LISTS.get(model_type)
    if path is None:
        raise KeyError(model_type)
    return _attribute(model.base_model, path)


def set_layer_list(model: Any, layers: list[torch.nn.Module]) -> None:
    model_type = model.config.model_type
    path = ENCODER_LAYER_LISTS.get(model_type) or DECODER_LAYER_LISTS[model_type]
    parent_path, _, name = path.rpartition(".")
    parent = _attribute(model.base_model, parent_path) if parent_path else model.base_model
    import torch

    setattr(parent, name, torch.nn.ModuleList(layers))


def encoder_parts(layer: torch.nn.Module) -> EncoderLayerParts:
    """BERT, RoBERTa, ELECTRA and ViT share this layout (`attention.self` or `attention.attention`)."""
    attention = layer.attention
    heads_module = getattr(attention, "self", None) or attention.attention
    return EncoderLayerParts(query=heads_module.query, num_heads=int(heads_module.num_attention_heads),
                             ffn_in=layer.intermediate.dense, ffn_out=layer.output.dense)


def original_head_ids(config: Any, layer_index: int) -> list[int]:
    """The original ids of the heads a layer still has: `prune_heads` takes ids in the unpruned numbering."""
    pruned = {int(h) for h in (config.pruned_heads or {}).get(layer_index, [])}
    return [h for h in range(int(config.num_attention_heads)) if h not in pruned]
