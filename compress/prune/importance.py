"""How much each head (or KV group) and each FFN channel matters: magnitude or first-order Taylor of its weights.

A unit's score sums over every weight that pruning it removes (its rows in each per-head projection, its
columns of the output projection; for an FFN channel its rows in the up/gate projections and its column
of the down projection): the squared L2 norm for `magnitude`, |w * dL/dw| for `taylor`. Scores are
divided by their layer's mean so that layers compare (global head ranking), which is what torch-pruning's
GroupMagnitudeImportance / GroupTaylorImportance compute for the same coupled groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from slimline.compression.prune.layout import Attention, FeedForward, Projection
from slimline.core.errors import MissingDependency

if TYPE_CHECKING:
    import torch

Importance = Literal["magnitude", "taylor"]


def torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as err:
        raise MissingDependency("structured pruning needs torch-pruning, which is not installed.",
                                fix="pip install 'torch-pruning==1.6.1' (a slimline dependency: "
                                    "reinstall with scripts/install.sh)") from err
    return torch_pruning


def unit_rows(attention: Attention, projection: Projection, units: list[int]) -> torch.Tensor:
    """Row indices of `projection` that belong to the KV groups `units` (a group is one head without GQA)."""
    import torch

    d, group, heads, kv = attention.head_dim, attention.group_size, attention.heads, attention.kv_heads
    query = [torch.arange(u * group * d, (u + 1) * group * d) for u in units]
    key = [torch.arange(u * d, (u + 1) * d) for u in units]
    if projection.kind == "query":
        parts = query
    elif projection.kind == "kv":
        parts = key
    else:  # fused query | key | value
        parts = [*query, *(k + heads * d for k in key), *(k + (heads + kv) * d for k in key)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def unit_columns(attention: Attention, units: list[int]) -> torch.Tensor:
    import torch

    width = attention.group_size * attention.head_dim
    return torch.cat([torch.arange(u * width, (u + 1) * width) for u in units]) if units else \
        torch.zeros(0, dtype=torch.long)


def channel_rows(projection: Projection, width: int, channels: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.cat([channels, channels + width]) if projection.kind == "ffn-in-halves" else channels


def _weight_score(linear: torch.nn.Linear, index: torch.Tensor, dim: int, importance: Importance) -> torch.Tensor:
    """Per-index score of `linear`'s rows (dim 0) or columns (dim 1)."""
    weight = linear.weight.detach().float()
    if importance == "taylor":
        if linear.weight.grad is None:
            return weight.new_zeros(len(index))
        value = (weight * linear.weight.grad.detach().float()).abs()
    else:
        value = weight.pow(2)
    picked = value.index_select(dim, index)
    return picked.sum(dim=1 - dim)


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    mean = scores.mean()
    return scores / mean if float(mean) > 0 else scores


def unit_scores(attention: Attention, importance: Importance) -> torch.Tensor:
    """One score per KV group (per head without GQA), normalised by the layer's mean."""
    import torch

    scores = []
    for unit in range(attention.kv_heads):
        total = sum(float(_weight_score(p.module, unit_rows(attention, p, [unit]), 0, importance).sum())
                    for p in attention.projections)
        total += float(_weight_score(attention.output.module, unit_columns(attention, [unit]), 1, importance).sum())
        scores.append(total)
    return _normalised(torch.tensor(scores))


def channel_scores(ffn: FeedForward, importance: Importance) -> torch.Tensor:
    """One score per FFN channel, normalised by the layer's mean."""
    import torch

    channels = torch.arange(ffn.width)
    total = _weight_score(ffn.output.module, channels, 1, importance)
    for projection in ffn.inputs:
        rows = _weight_score(projection.module, channel_rows(projection, ffn.width, channels), 0, importance)
        total = total + (rows[: ffn.width] + rows[ffn.width :] if projection.kind == "ffn-in-halves" else rows)
    return _normalised(total)
