"""Drop whole transformer layers to make a shallower student (then distil it back with distill.kd).

Latency falls almost linearly with depth on every runtime, unlike width pruning, so this is the
most dependable speed lever; the accuracy it costs is what distillation recovers. The kept layers
keep their weights; `num_hidden_layers` (and the layer keys of `pruned_heads`) are rewritten so
the checkpoint reloads with `from_pretrained`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field, model_validator

from slimline.compress.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compress.hf_save import carry_side_files, save_reloadable
from slimline.compress.prune.layout import LAYER_DROPPABLE, layer_list, set_layer_list
from slimline.core.artifact import ModelDir
from slimline.core.errors import PassError
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

log = logging.getLogger(__name__)


class DropLayersConfig(PassConfig):
    keep: list[int] | None = Field(default=None, description="indices of the layers to keep (0 = bottom)")
    drop: list[int] | None = Field(default=None, description="indices of the layers to remove")
    keep_every: int | None = Field(default=None, ge=2, description="keep every k-th layer, counting so that the "
                                                                   "top layer is kept (k=2 of 6 keeps 1, 3, 5)")

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
        problems = super().check(model, target)
        if model.model_type is not None and model.model_type not in LAYER_DROPPABLE:
            problems.append(self.error(f"knows the layer list of {', '.join(sorted(LAYER_DROPPABLE))}, "
                                       f"not {model.model_type}",
                                       fix="drop the step for this model; quantization passes still apply"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        config = self.config
        hf_model = load_hf_model(model.path, model.manifest.task)
        layers = list(layer_list(hf_model))
        kept = config.kept(len(layers))
        drop_layers(hf_model, kept)
        carry_side_files(model.path, out_dir)
        save_reloadable(hf_model, out_dir, model.manifest.task)
        log.info("%s: kept layers %s of %d", self.name, kept, len(layers))
        return PassResult(model_file="model.safetensors", metadata={"layers": {
            **config.model_dump(mode="json"), "kept": kept, "layers_before": len(layers), "layers_after": len(kept),
            "parameters_after": int(sum(p.numel() for p in hf_model.parameters()))}})


def drop_layers(hf_model: object, kept: list[int]) -> None:
    """Keep only the `kept` layers (in place) and make the config say so."""
    config = hf_model.config  # type: ignore[attr-defined]
    layers = list(layer_list(hf_model))
    set_layer_list(hf_model, [layers[i] for i in kept])
    new_index = {old: new for new, old in enumerate(kept)}
    if config.pruned_heads:
        config.pruned_heads = {new_index[int(layer)]: heads for layer, heads in config.pruned_heads.items()
                               if int(layer) in new_index}
    for position, layer in enumerate(layer_list(hf_model)):  # KV caches are indexed by each layer's own idx
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    config.num_hidden_layers = len(kept)
