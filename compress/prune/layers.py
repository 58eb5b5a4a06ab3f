"""Drop whole transformer layers to make a shallower student (then distil it back with distill.kd).

Latency falls almost linearly with depth on every runtime, unlike width pruning, so this is the
most dependable speed lever; the accuracy it costs is what distillation recovers. The layers are
found in the model (layout.find_blocks: the ModuleList whose members each hold one attention module);
the kept ones keep their weights, and the config's layer count, its per-layer lists (`layer_types`)
and the layer keys of `pruned_heads` are rewritten so the checkpoint reloads with `from_pretrained`
(checked on a probe input after saving).

A layer whose structure depends on its position is only moved where the family would build the same
layer: ModernBERT's first layer has no attention norm and every n-th layer attends globally, so the
model built from the new config is compared layer by layer with the kept ones, and a keep set that
would change a layer's kind is refused with one that does not.

ALBERT applies one shared layer group `num_hidden_layers` times: there are no separate layers to take
out. `prune.layers` lowers the number of applications to the number of layers kept (which indices
does not matter: every application runs the same weights); parameters stay, time falls. Every
distinct layer must still run at least once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from slimline.compression.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compression.hf_save import carry_side_files, save_reloadable
from slimline.compression.prune.layout import find_blocks
from slimline.compression.prune.preflight import PreflightConfig, run_preflight
from slimline.compression.prune.structured import example_inputs
from slimline.compression.prune.surgery import LAYER_COUNT_KEYS, meta_build
from slimline.core.artifact import ModelDir
from slimline.core.errors import PassError
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

log = logging.getLogger(__name__)
#: Config lists with one entry per layer (Qwen2, Gemma2/3, Mistral, ModernBERT in later versions).
PER_LAYER_LIST_KEYS = ("layer_types",)


class DropLayersConfig(PassConfig):
    keep: list[int] | None = Field(default=None, description="indices of the layers to keep (0 = bottom)")
    drop: list[int] | None = Field(default=None, description="indices of the layers to remove")
    keep_every: int | None = Field(default=None, ge=2, description="keep every k-th layer, counting so that the "
                                                                   "top layer is kept (k=2 of 6 keeps 1, 3, 5)")
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)

    @model_validator(mode="after")
    def _exactly_one(self) -> DropLayersConfig:
        given = [name for name in ("keep", "drop", "keep_every") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of keep, drop, keep_every (got {given or 'none'})")
        for name in ("keep", "drop"):
            values = getattr(self, name)
            if values is not None and (len(set(values)) != len(values) or any(v < 0 for v in values)):
                raise ValueError(f"{name} must list distinct non-negative layer indices, got {values}")
        return self

    def kept(self, num_layers: int) -> list[int]:
        """The layer indices to keep out of `num_layers`, in order."""
        if self.keep is not None:
            indices = sorted(self.keep)
        elif self.drop is not None:
            indices = [i for i in range(num_layers) if i not in set(self.drop)]
        else:
            indices = [i for i in range(num_layers) if (num_layers - 1 - i) % self.keep_every == 0]  # type: ignore[operator]
        out_of_range = [i for i in (self.keep or self.drop or []) if i >= num_layers]
        if out_of_range:
            raise PassError(f"layer indices {out_of_range} do not exist: the model has {num_layers} layers.",
                            fix=f"use indices 0..{num_layers - 1}.")
        if not indices:
            raise PassError("the config keeps no layer at all.", fix="keep at least one layer.")
        return indices


@register("prune.layers")
class DropLayers(Pass[DropLayersConfig]):
    Config = DropLayersConfig
    stage = "torch"
    accepts = frozenset({"hf"})
    produces = "hf"

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        return super().check(model, target)  # which layers exist is read from the model in apply()

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        config = self.config
        hf_model = load_hf_model(model.path, model.manifest.task)
        probe = example_inputs(hf_model, model, context)
        parameters_before = int(sum(p.numel() for p in hf_model.parameters()))
        facts = drop_layers(hf_model, config, probe)
        facts["preflight_estimate"] = run_preflight(hf_model, model, context, config.preflight, parameters_before)
        carry_side_files(model.path, out_dir)
        save_reloadable(hf_model, out_dir, model.manifest.task, probe=probe)
        log.info("%s: kept layers %s of %d", self.name, facts["kept"], facts["layers_before"])
        return PassResult(model_file="model.safetensors", metadata={"layers": {
            **config.model_dump(mode="json"), **facts,
            "parameters_after": int(sum(p.numel() for p in hf_model.parameters()))}})


def _count_key(hf_model: Any) -> str:
    config = hf_model.config
    key = next((k for k in LAYER_COUNT_KEYS if isinstance(getattr(config, k, None), int)), None)
    if key is None:
        raise PassError(f"{type(hf_model).__name__}'s config names no layer count ({', '.join(LAYER_COUNT_KEYS)}).",
                        fix="drop the step for this model; quantization passes still apply.")
    return key


def drop_layers(hf_model: Any, config: DropLayersConfig, probe: dict[str, Any]) -> dict[str, Any]:
    """Keep only the configured layers (in place) and make the config say so; returns facts for the manifest."""
    blocks = find_blocks(hf_model)
    if not blocks:
        raise PassError(f"found no transformer layers in {type(hf_model).__name__} (no ModuleList of blocks "
                        "holding an attention module).", fix="drop the step; quantization passes still apply.")
    key = _count_key(hf_model)
    applications = int(getattr(hf_model.config, key))
    lists = {name.rpartition(".")[0] for name, *_ in blocks}
    if len(blocks) < applications:
        return _fewer_applications(hf_model, config, key, applications, len(blocks), probe)
    if len(lists) != 1 or len(blocks) != applications:
        raise PassError(f"the model's {len(blocks)} layers in {len(lists)} list(s) do not match its config's "
                        f"{key}={applications}.", fix="drop the step for this model; quantization passes still apply.")
    kept = config.kept(applications)
    _refuse_moved_kinds(hf_model, key, kept)
    _keep(hf_model, lists.pop(), key, kept, applications)
    return {"kept": kept, "layers_before": applications, "layers_after": len(kept)}


def _keep(hf_model: Any, list_name: str, key: str, kept: list[int], count: int) -> None:
    import torch

    model_config = hf_model.config
    parent_name, _, attribute = list_name.rpartition(".")
    parent = hf_model.get_submodule(parent_name) if parent_name else hf_model
    layers = list(getattr(parent, attribute))
    setattr(parent, attribute, torch.nn.ModuleList([layers[i] for i in kept]))
    for position, layer in enumerate(getattr(parent, attribute)):  # KV caches are indexed by each layer's own idx
        for module in layer.modules():
            for name in ("layer_idx", "layer_id"):
                if isinstance(getattr(module, name, None), int):
                    setattr(module, name, position)
    rewrite_config(model_config, key, kept, count)


def rewrite_config(model_config: Any, key: str, kept: list[int], count: int) -> None:
    """The layer count, `pruned_heads` renumbered, and per-layer lists sliced. The lists are named, not guessed
    from their length: DeBERTa's `pos_att_type` is a list of two that a two-layer model must keep whole."""
    new_index = {old: new for new, old in enumerate(kept)}
    if getattr(model_config, "pruned_heads", None):
        model_config.pruned_heads = {new_index[int(layer)]: heads for layer, heads in model_config.pruned_heads.items()
                                     if int(layer) in new_index}
    for name in PER_LAYER_LIST_KEYS:
        value = getattr(model_config, name, None)
        if isinstance(value, list) and len(value) == count:
            setattr(model_config, name, [value[i] for i in kept])
    setattr(model_config, key, len(kept))


def _layer_facts(model: Any, list_name: str) -> list[dict[tuple, Any]]:
    """Per layer: the class, plain settings and parameter shapes of every submodule."""
    facts = []
    for layer in model.get_submodule(list_name):
        found: dict[tuple, Any] = {}
        for name, module in layer.named_modules():
            found[(name, "class")] = type(module).__name__
            for attribute, value in vars(module).items():
                if not attribute.startswith("_") and attribute != "training" and \
                        isinstance(value, (bool, int, float, str, tuple)):
                    found[(name, attribute)] = value
        found.update({(name, "shape"): tuple(p.shape) for name, p in layer.named_parameters()})
        facts.append(found)
    return facts


def _same_kind(original: dict[tuple, Any], index: int, built: dict[tuple, Any], position: int) -> bool:
    """Equal facts, except a layer's own index (layer_idx, layer_id) which the new position renumbers."""
    if original.keys() != built.keys():
        return False
    return all(value == built[key] or (type(value) is int and value == index and built[key] == position)
               for key, value in original.items())


def _refuse_moved_kinds(hf_model: Any, key: str, kept: list[int]) -> None:
    """A kept layer must land where the family builds the same kind of layer (built on the meta device)."""
    import copy

    list_name = find_blocks(hf_model)[0][0].rpartition(".")[0]
    original = _layer_facts(meta_build(hf_model, hf_model.config), list_name)
    shallow_config = copy.deepcopy(hf_model.config)
    rewrite_config(shallow_config, key, kept, getattr(shallow_config, key))
    wanted = _layer_facts(meta_build(hf_model, shallow_config), list_name)
    moved = [(i, p) for p, i in enumerate(kept) if not _same_kind(original[i], i, wanted[p], p)]
    if not moved:
        return
    suggestion = _suggest(original, wanted, kept)
    layer, position = moved[0]
    raise PassError(f"layer {layer} would become layer {position} of the shallower model, where this family builds "
                    f"a different kind of layer (its first layer, or its attention pattern, depends on the position); "
                    f"{len(moved)} kept layer(s) would change kind.",
                    fix=(f"keep layers whose kind matches their new position, e.g. keep: {suggestion}"
                         if suggestion else "keep more layers, starting with layer 0."))


def _suggest(original: list[dict], wanted: list[dict], kept: list[int]) -> list[int] | None:
    """A keep set of the same size where every layer lands on a position of its own kind (the requested ones first)."""
    chosen: list[int] = []
    for position, want in enumerate(kept):
        start = chosen[-1] + 1 if chosen else 0
        candidates = [i for i in range(start, len(original)) if _same_kind(original[i], i, wanted[position], position)]
        if not candidates:
            return None
        chosen.append(want if want in candidates else min(candidates, key=lambda i: abs(i - want)))
    return chosen


def _fewer_applications(hf_model: Any, config: DropLayersConfig, key: str, applications: int, distinct: int,
                        probe: dict[str, Any]) -> dict[str, Any]:
    """Shared layers (ALBERT): run them fewer times; every distinct layer must still run."""
    import torch

    kept = config.kept(applications)
    setattr(hf_model.config, key, len(kept))
    calls = {id(module): 0 for _, module, *_ in find_blocks(hf_model)}
    handles = [module.register_forward_pre_hook(lambda m, *_: calls.__setitem__(id(m), calls[id(m)] + 1))
               for _, module, *_ in find_blocks(hf_model)]
    failure = None
    try:
        with torch.no_grad():
            hf_model(**probe)
    except Exception as err:  # the family's own indexing of its groups can fail outright (ALBERT: IndexError)
        failure = f"{type(err).__name__}: {err}"
    finally:
        for handle in handles:
            handle.remove()
    idle = sum(1 for count in calls.values() if count == 0)
    if idle or failure:
        setattr(hf_model.config, key, applications)
        consequence = f"the model fails to run ({failure})" if failure else f"{idle} of them would never run"
        raise PassError(f"the model applies {distinct} shared layer(s) {applications} times; with {len(kept)} "
                        f"application(s) {consequence}.",
                        fix=f"keep at least {distinct} layers (each shared layer must still run once).")
    return {"kept": kept, "layers_before": applications, "layers_after": len(kept), "shared_layers": True,
            "note": f"{distinct} distinct layer(s) shared across {applications} applications: the applications "
                    f"fall to {len(kept)}; which indices are kept does not matter (they run the same weights)"}
