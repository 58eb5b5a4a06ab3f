"""Where the prunable parts of a transformer are, read from the model itself rather than from a table of paths.

A *block* is a member of a `ModuleList` that holds exactly one attention module; the attention module
is the one that carries its own head count or head width (`num_attention_heads`, `num_heads`,
`n_heads`, `head_dim`, `attention_head_size`: every transformers family stores one of these). One
forward pass with hooks on every `Linear` gives the order in which each block calls its projections.

Which projections belong to a head and which one mixes the heads back is read from torch-pruning's
dependency graph (DepGraph, Fang et al.): the group of the attention's first projection couples every
per-head projection by its output rows (query, key, value, and DeBERTa's relative-position ones) and
the output projection by its input columns, wherever they live; it also shows a coupling that reaches
outside the block (MPNet's relative-position bias, one per head and shared by every layer). The FFN is
the group of the first projection the block calls after attention: its rows, and the down projection's
columns. torch-pruning 1.6.1's `get_pruning_group` does not terminate on Llama-family decoders (rotary
and repeated KV heads), so there the attention module is read on its own: it calls its projections and
then, last, its output projection, and everything the block calls after it is the (gated) MLP.

Shapes then say the layout: a projection with `heads*head_dim` rows is query-sized, with
`kv_heads*head_dim` rows key/value-sized (grouped-query attention), with `(heads + 2*kv_heads)*head_dim`
rows a fused query/key/value stack (in that order: Phi-3, ModernBERT); an FFN input with twice the
down projection's width is a fused gate/up pair (halves: ModernBERT `Wi`, Phi-3 `gate_up_proj`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slimline.core.errors import PassError

if TYPE_CHECKING:  # torch is imported by the passes' apply(), not when the catalogue lists them
    import torch

log = logging.getLogger(__name__)

HEAD_COUNT_ATTRIBUTES = ("num_attention_heads", "num_heads", "n_heads")
HEAD_WIDTH_ATTRIBUTES = ("attention_head_size", "head_dim", "dim_per_head")
KV_HEAD_ATTRIBUTES = ("num_key_value_heads", "num_kv_heads")
#: Tasks whose models torch-pruning cannot group (decoders; see the module docstring): read without the graph.
CAUSAL_TASKS = frozenset({"text-generation"})


class LayoutError(PassError):
    """The model's blocks could not be read: pruning would guess, so it refuses."""


@dataclass
class Projection:
    """A Linear to cut, and how: `kind` says which rows or columns belong to a head or an FFN channel."""

    name: str
    module: torch.nn.Linear
    # rows: "query" (heads*d), "kv" (kv_heads*d), "qkv" (fused q|k|v), "ffn-in" (width), "ffn-in-halves" (2*width);
    # columns: "output" (heads*d), "ffn-out" (width)
    kind: str


@dataclass
class Attention:
    name: str
    module: torch.nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    projections: list[Projection]  # row-cut: query / kv / qkv
    output: Projection  # column-cut
    coupled_outside: list[str] = field(default_factory=list)  # graph members outside the block

    @property
    def group_size(self) -> int:
        return self.heads // self.kv_heads


@dataclass
class FeedForward:
    inputs: list[Projection]  # row-cut; kind "ffn-in" (width rows) or "ffn-in-halves" (2*width rows)
    output: Projection  # column-cut
    width: int


@dataclass
class Block:
    index: int
    name: str
    module: torch.nn.Module
    attention: Attention | None
    ffn: FeedForward | None


@dataclass
class Layout:
    blocks: list[Block]
    read_by: str  # "torch-pruning dependency graph" or "attention module walk"


def _int_attribute(module: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _is_attention(module: torch.nn.Module) -> bool:
    import torch

    # A projection: Linear, or GPT-2's transposed Conv1D (found for layer dropping; not cut by width pruning).
    has_projection = any(isinstance(child, torch.nn.Linear) or type(child).__name__ == "Conv1D"
                         for child in module.children())
    return has_projection and (_int_attribute(module, HEAD_COUNT_ATTRIBUTES) is not None
                           or _int_attribute(module, HEAD_WIDTH_ATTRIBUTES) is not None)


def find_blocks(hf_model: Any) -> list[tuple[str, torch.nn.Module, str, torch.nn.Module]]:
    """(block name, block, attention name, attention) in model order: ModuleList members holding one attention."""
    import torch

    found = []
    for list_name, container in hf_model.named_modules():
        if not isinstance(container, torch.nn.ModuleList):
            continue
        for position, block in enumerate(container):
            attentions = [(n, m) for n, m in block.named_modules() if _is_attention(m)]
            if len(attentions) == 1:
                attention_name, attention = attentions[0]
                block_name = f"{list_name}.{position}"
                found.append((block_name, block, f"{block_name}.{attention_name}" if attention_name else block_name,
                              attention))
    # ALBERT's layer group holds one layer: keep the innermost block (the layer), not the list around it.
    outer = {name for name, *_ in found for other, *_ in found if other.startswith(name + ".")}
    return [entry for entry in found if entry[0] not in outer]


def call_order(hf_model: Any, example: dict[str, Any]) -> dict[int, int]:
    """id(Linear) -> the position of its first call in one forward pass."""
    import torch

    order: dict[int, int] = {}
    handles = []

    def hook(module: torch.nn.Module, *_: Any) -> None:
        order.setdefault(id(module), len(order))

    for module in hf_model.modules():
        if isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            hf_model(**example)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _called_linears(block: torch.nn.Module, prefix: str, order: dict[int, int]) -> list[tuple[str, Any]]:
    import torch

    linears = [(f"{prefix}.{n}", m) for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)
               and id(m) in order]
    return sorted(linears, key=lambda item: order[id(item[1])])


def read_layout(hf_model: Any, example: dict[str, Any], task: str) -> Layout:
    """The model's blocks with their attention and FFN projections (see the module docstring)."""
    blocks = find_blocks(hf_model)
    if not blocks:
        raise LayoutError(f"found no transformer blocks in {type(hf_model).__name__} (no ModuleList member holds an "
                          "attention module with a head count).",
                          fix="this architecture cannot be pruned by structure; use quantization passes only.")
    order = call_order(hf_model, example)
    graph = None if task in CAUSAL_TASKS else _dependency_graph(hf_model, example)
    names = {id(m): n for n, m in hf_model.named_modules()}
    read = [_read_block(index, entry, order, graph, names) for index, entry in enumerate(blocks)]
    return Layout(read, "torch-pruning dependency graph" if graph else "attention module walk")


def _dependency_graph(hf_model: Any, example: dict[str, Any]) -> Any:
    from slimline.compression.prune.importance import torch_pruning

    tp = torch_pruning()

    def first_output(output: Any) -> Any:
        return output[0].sum()

    return tp.DependencyGraph().build_dependency(hf_model, example_inputs=example, output_transform=first_output)


def _group(graph: Any, names: dict[int, str], linear: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]],
                                                                    list[str]]:
    """Members of `linear`'s output-channel group: (row-cut linears, column-cut linears, other module names)."""
    import torch
    import torch_pruning as tp

    group = graph.get_pruning_group(linear, tp.prune_linear_out_channels, idxs=list(range(linear.out_features)))
    rows, columns, others = [], [], []
    for dependency, _ in group:
        module = dependency.target.module
        name = names.get(id(module))
        if name is None:  # torch-pruning's own stand-ins for reshapes, splits and element-wise ops
            continue
        handler = dependency.handler
        if isinstance(module, torch.nn.Linear) and handler == tp.prune_linear_out_channels:
            rows.append((name, module))
        elif isinstance(module, torch.nn.Linear) and handler == tp.prune_linear_in_channels:
            columns.append((name, module))
        else:
            others.append(name)
    return rows, columns, others


def _read_block(index: int, entry: tuple[str, Any, str, Any], order: dict[int, int], graph: Any,
                names: dict[int, str]) -> Block:
    block_name, block, attention_name, attention_module = entry
    linears = _called_linears(block, block_name, order)
    if graph is not None:
        attention, rest = _attention_from_graph(block_name, attention_name, attention_module, linears, graph, names)
        ffn = _ffn_from_graph(block_name, rest, graph, names)
    else:
        inside = [(n, m) for n, m in linears if n.startswith(attention_name + ".")]
        if len(inside) < 2:
            raise LayoutError(f"{attention_name} calls {len(inside)} projection(s); expected its per-head "
                              "projections and an output projection.",
                              fix="this attention layout is not supported for pruning; use prune.layers.")
        attention = _attention(attention_name, attention_module, inside[:-1], inside[-1], [])
        ffn = _ffn(block_name, [(n, m) for n, m in linears if not n.startswith(attention_name + ".")])
    return Block(index, block_name, block, attention, ffn)


def _attention_from_graph(block_name: str, attention_name: str, module: Any, linears: list[tuple[str, Any]],
                          graph: Any, names: dict[int, str]) -> tuple[Attention, list[tuple[str, Any]]]:
    inside = [(n, m) for n, m in linears if n.startswith(attention_name + ".")]
    if not inside:
        raise LayoutError(f"{attention_name} calls no Linear projection.", fix="use prune.layers for this model.")
    rows, columns, others = _group(graph, names, inside[0][1])
    in_block = [(n, m) for n, m in rows + columns if n.startswith(block_name + ".")]
    # A non-Linear member first (MPNet's shared relative_attention_bias): it is why other layers are coupled.
    outside = sorted(set(others)) + sorted({n for n, _ in rows + columns if not n.startswith(block_name + ".")})
    output = [(n, m) for n, m in columns if n.startswith(block_name + ".")]
    if len(output) != 1:
        raise LayoutError(f"torch-pruning couples {attention_name}'s heads to {len(output)} output projections "
                          f"({[n for n, _ in output]}); expected one.", fix="use prune.layers for this model.")
    projections = [(n, m) for n, m in rows if n.startswith(block_name + ".")]
    attention = _attention(attention_name, module, projections, output[0], outside)
    used = {id(m) for _, m in in_block}
    return attention, [(n, m) for n, m in linears if id(m) not in used]


def _attention(name: str, module: Any, projections: list[tuple[str, Any]], output: tuple[str, Any],
               coupled_outside: list[str]) -> Attention:
    out_name, out_linear = output
    width = out_linear.in_features
    heads = _int_attribute(module, HEAD_COUNT_ATTRIBUTES)
    head_dim = _int_attribute(module, HEAD_WIDTH_ATTRIBUTES)
    if heads is None and head_dim is None:
        raise LayoutError(f"{name} states neither its head count nor its head width.", fix="use prune.layers.")
    head_dim = head_dim or width // heads  # type: ignore[operator]
    heads = heads or width // head_dim
    if heads * head_dim != width:
        raise LayoutError(f"{name}: {heads} heads of {head_dim} do not make the output projection's {width} inputs.",
                          fix="use prune.layers for this model.")
    kinds = []
    kv_widths = set()
    for proj_name, linear in projections:
        rows = linear.out_features
        if rows == width:
            kinds.append(Projection(proj_name, linear, "query"))
        elif rows < width and rows % head_dim == 0 and heads % (rows // head_dim) == 0:
            kinds.append(Projection(proj_name, linear, "kv"))
            kv_widths.add(rows)
        elif rows > width and (rows - width) % (2 * head_dim) == 0:
            kinds.append(Projection(proj_name, linear, "qkv"))
            kv_widths.add((rows - width) // 2)
        else:
            raise LayoutError(f"{proj_name} has {rows} outputs, which is not a multiple of {name}'s {heads} heads of "
                              f"{head_dim}.", fix="use prune.layers for this model.")
    if len(kv_widths) > 1:
        raise LayoutError(f"{name}'s key/value projections differ in width ({sorted(kv_widths)}).",
                          fix="use prune.layers for this model.")
    kv_heads = (kv_widths.pop() // head_dim) if kv_widths else heads
    declared_kv = _int_attribute(module, KV_HEAD_ATTRIBUTES)
    if declared_kv is not None and declared_kv != kv_heads:
        raise LayoutError(f"{name} declares {declared_kv} key/value heads but its projections hold {kv_heads}.",
                          fix="use prune.layers for this model.")
    return Attention(name, module, heads, kv_heads, head_dim, kinds, Projection(out_name, out_linear, "output"),
                     coupled_outside)


def _ffn_from_graph(block_name: str, rest: list[tuple[str, Any]], graph: Any,
                    names: dict[int, str]) -> FeedForward | None:
    for _, candidate in rest:
        rows, columns, others = _group(graph, names, candidate)
        members = rows + columns
        if others or not all(n.startswith(block_name + ".") for n, _ in members) or len(columns) != 1:
            continue  # the residual stream's group, or a coupling this reader does not know
        return _ffn(block_name, [*rows, *columns], output=columns[0])
    return None


def _ffn(block_name: str, linears: list[tuple[str, Any]], output: tuple[str, Any] | None = None) -> FeedForward | None:
    """The FFN from its projections: the down projection (last called, or the graph's column member) and inputs."""
    if not linears:
        return None
    out_name, out_linear = output if output is not None else linears[-1]
    width = out_linear.in_features
    inputs = []
    for name, linear in linears:
        if linear is out_linear:
            continue
        if linear.out_features == width:
            inputs.append(Projection(name, linear, "ffn-in"))
        elif linear.out_features == 2 * width:
            inputs.append(Projection(name, linear, "ffn-in-halves"))
        else:
            raise LayoutError(f"{name} ({linear.out_features} outputs) does not feed {out_name}'s {width} inputs.",
                              fix="prune heads only (ffn_ratio: 0), or use prune.layers.")
    if not inputs:
        raise LayoutError(f"{block_name}: no projection feeds {out_name}.", fix="prune heads only (ffn_ratio: 0).")
    return FeedForward(inputs, Projection(out_name, out_linear, "ffn-out"), width)
