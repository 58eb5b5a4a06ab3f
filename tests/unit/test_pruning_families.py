"""prune.structured and prune.layers on a tiny model of every family: heads + FFN, then whole layers, then ONNX.

Each family's pruned checkpoint must reload from safetensors with the outputs of the same pruning done in
memory, its config must describe every parameter (the reloaded model has exactly the pruned parameter count),
and the shallower model must export to ONNX (with slimline's parity check). Where a family's config cannot
describe fewer heads (ModernBERT, MPNet, DeBERTa-v2), the refusal's fix is followed and must work.

The whole sweep takes about two minutes on two cores, so it is slow-marked; four families that between them
exercise every code path stay in the default suite: DistilBERT (per-layer heads under other config keys),
ALBERT (one shared layer applied twice), ModernBERT (refused heads, fused gate/up FFN, position-dependent
layers) and Phi-3 (grouped-query attention with a fused q/k/v projection and a fused gate/up MLP).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_zoo import DECODERS, TEXT_CLASSIFIERS, build

import slimline
from slimline.compression.base import ModelInfo, PassContext
from slimline.compression.catalogue import registry
from slimline.compression.prune.layout import read_layout
from slimline.compression.prune.structured import HEADS_NOT_DESCRIBABLE, StructuredPruneConfig, prune_in_place
from slimline.compression.prune.surgery import describe_uniform_shape, keep_channels, keep_units
from slimline.core.errors import PassError
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

CPU = Target(device="cpu", runtime="onnxruntime", threads=1)
NO_PREFLIGHT = {"preflight": {"enabled": False}}
TASKS = {"vit": "image-classification", **dict.fromkeys(DECODERS, "text-generation")}
DEFAULT_SUITE = frozenset({"distilbert", "albert", "modernbert", "phi3"})
FAMILIES = [pytest.param(f, marks=() if f in DEFAULT_SUITE else pytest.mark.slow)
            for f in (*TEXT_CLASSIFIERS, "vit", *DECODERS)]


def task_of(family: str) -> str:
    return TASKS.get(family, "text-classification")


def feeds_for(family: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    if family == "vit":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=generator)}
    ids = torch.randint(12, 30, (2, 9), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def first_output(model: torch.nn.Module, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**feeds)[0]


def apply(name: str, source: Path, out: Path, **options: object) -> dict:
    out.mkdir(parents=True)
    pass_class = registry()[name]
    result = pass_class(pass_class.Config(**options)).apply(open_checkpoint(source), out, PassContext(target=CPU))
    return result.metadata


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_prunes_heads_ffn_and_layers_reloads_identically_and_exports(family: str,
                                                                                  tmp_path: Path) -> None:
    source = build(family, tmp_path / "source")
    task = task_of(family)
    options: dict = {"heads_ratio": 0.5, "ffn_ratio": 0.5}
    if family in HEADS_NOT_DESCRIBABLE:  # refused before any work, and by the model itself: follow the fix
        check = registry()["prune.structured"](StructuredPruneConfig(**options))
        errors = [p for p in check.check(ModelInfo("hf", task, family), CPU) if p.severity == "error"]
        assert errors and "heads_ratio: 0" in (errors[0].fix or "")
        with pytest.raises(PassError, match="heads_ratio: 0"):
            apply("prune.structured", source, tmp_path / "refused", **options, **NO_PREFLIGHT)
        options = {"ffn_ratio": 0.5}
    facts = apply("prune.structured", source, tmp_path / "width", **options, **NO_PREFLIGHT)["pruning"]

    in_memory = load_hf_model(source, task)
    prune_in_place(in_memory, open_checkpoint(source), PassContext(target=CPU),
                   StructuredPruneConfig(**options, **NO_PREFLIGHT))
    reloaded = load_hf_model(tmp_path / "width", task)
    feeds = feeds_for(family)
    torch.testing.assert_close(first_output(reloaded, feeds), first_output(in_memory, feeds), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in reloaded.parameters()) == facts["shape_after"]["parameters"] \
        < facts["shape_before"]["parameters"]
    assert facts["shape_after"]["ffn_width"] == [w // 2 for w in facts["shape_before"]["ffn_width"]]
    if "heads_ratio" in options:
        before = facts["shape_before"].get("kv_heads", facts["shape_before"]["heads"])
        after = facts["shape_after"].get("kv_heads", facts["shape_after"]["heads"])
        assert after == [h // 2 for h in before]

    layers = apply("prune.layers", tmp_path / "width", tmp_path / "shallow", drop=[1], **NO_PREFLIGHT)["layers"]
    shallow = load_hf_model(tmp_path / "shallow", task)
    assert layers["layers_after"] == 1 and first_output(shallow, feeds).shape[0] == 2
    exported = slimline.export(tmp_path / "shallow", out=tmp_path / "onnx")
    assert (exported.path / "model.onnx").is_file() and exported.manifest.metadata["parity"]


@pytest.mark.parametrize(("family", "heads"), [("phi3", True), ("llama", True), ("modernbert", False),
                                             ("deberta-v2", False)])
def test_pruning_a_silenced_unit_leaves_the_outputs_unchanged(family: str, heads: bool, tmp_path: Path) -> None:
    """Zero KV group 1's columns of every output projection and FFN channel 5's column of every down projection:
    removing exactly those must leave the outputs as they were, which holds only if every fused (q/k/v, gate/up)
    or grouped projection was cut at the matching rows."""
    source = build(family, tmp_path / "source")
    model = load_hf_model(source, task_of(family))
    feeds = feeds_for(family)
    layout = read_layout(model, feeds, task_of(family))
    first = layout.blocks[0]
    assert first.attention is not None and first.ffn is not None
    before = {"heads": first.attention.heads, "kv_heads": first.attention.kv_heads,
              "head_dim": first.attention.head_dim, "ffn_width": first.ffn.width}
    unit_width = first.attention.group_size * first.attention.head_dim
    with torch.no_grad():
        for block in layout.blocks:
            block.ffn.output.module.weight[:, 5] = 0
            if heads:
                block.attention.output.module.weight[:, unit_width : 2 * unit_width] = 0
    expected = first_output(model, feeds)
    for block in layout.blocks:
        keep_channels(block.ffn, [c for c in range(before["ffn_width"]) if c != 5])
        if heads:
            keep_units(block.attention, [u for u in range(before["kv_heads"]) if u != 1])
    after = {**before, "heads": first.attention.heads, "kv_heads": first.attention.kv_heads,
             "ffn_width": first.ffn.width}
    describe_uniform_shape(model, layout, before, after)  # the config, and the widths modules cached from it
    assert after["ffn_width"] == before["ffn_width"] - 1
    torch.testing.assert_close(first_output(model, feeds), expected, rtol=0, atol=2e-5)


def test_modernbert_refuses_a_layer_that_would_change_kind_and_its_suggestion_works(tmp_path: Path) -> None:
    source = build("modernbert", tmp_path / "source")
    with pytest.raises(PassError, match=r"different kind of layer") as refused:
        apply("prune.layers", source, tmp_path / "refused", keep=[1], **NO_PREFLIGHT)
    suggested = json.loads(refused.value.fix.rpartition("keep: ")[2])
    assert suggested == [0]
    apply("prune.layers", source, tmp_path / "kept", keep=suggested, **NO_PREFLIGHT)
    assert json.loads((tmp_path / "kept" / "config.json").read_text())["num_hidden_layers"] == 1


def test_albert_runs_its_shared_layers_fewer_times_and_refuses_leaving_one_idle(tmp_path: Path) -> None:
    from transformers import AlbertConfig, AlbertForSequenceClassification

    source = build("albert", tmp_path / "source")
    facts = apply("prune.layers", source, tmp_path / "once", keep=[1], **NO_PREFLIGHT)["layers"]
    assert facts["shared_layers"] and facts["layers_after"] == 1
    assert facts["parameters_after"] == sum(p.numel() for p in load_hf_model(source, "text-classification")
                                            .parameters())
    grouped = tmp_path / "grouped"
    torch.manual_seed(0)
    config = AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_hidden_groups=2,
                          num_attention_heads=2, intermediate_size=64, num_labels=2)
    AlbertForSequenceClassification(config).save_pretrained(grouped, safe_serialization=True)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (source / name).is_file():
            (grouped / name).write_bytes((source / name).read_bytes())
    with pytest.raises(PassError, match="shared layer") as refused:
        apply("prune.layers", grouped, tmp_path / "idle", keep=[0], **NO_PREFLIGHT)
    assert "keep at least 2 layers" in refused.value.fix
    facts = apply("prune.layers", grouped, tmp_path / "two", keep=[0, 3], **NO_PREFLIGHT)["layers"]
    assert facts["layers_after"] == 2
