"""Saving a reshaped (pruned or distilled) Hugging Face model as a checkpoint that provably reloads.

A config that no longer describes the weights (num_hidden_layers, intermediate_size or
pruned_heads of a pruned model) would load silently with freshly initialised weights in place of
the trained ones, so every save is reloaded from disk and compared while the cause is still obvious.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.compression.base import copy_side_files
from slimline.core.errors import BadInputError, PassError
from slimline.formats.hf import load_hf_model
from slimline.formats.torch_quantized import is_weight_file

#: Weight files of any framework: the saved model replaces them, so they are never carried along.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".index.json")
REWRITTEN_BY_SAVE = frozenset({"config.json", "generation_config.json"})
ROUND_TRIP_ATOL = 1e-4


def carry_side_files(source_dir: Path, out_dir: Path, replaced: frozenset[str] = frozenset()) -> None:
    """Copy tokenizer and other side files from the input model; weights, configs and `replaced` stay behind."""
    skip = {p.name for p in source_dir.iterdir()
            if is_weight_file(p.name) or p.name.endswith(WEIGHT_SUFFIXES) or p.name in REWRITTEN_BY_SAVE | replaced}
    copy_side_files(source_dir, out_dir, skip=skip)


def save_reloadable(hf_model: Any, out_dir: Path, task: str, probe: dict[str, Any] | None = None) -> None:
    """safetensors + config, then reload from disk: the same outputs on `probe` (when given) and the same weights."""
    import torch

    hf_model.eval()
    hf_model.save_pretrained(out_dir, safe_serialization=True)
    device = next(hf_model.parameters()).device
    try:
        reloaded = load_hf_model(out_dir, task).to(device)
    except BadInputError as err:
        raise PassError(f"the model saved in {out_dir} does not reload: {err}",
                        fix="its config does not match its weights; check the pass that reshaped it.") from err
    if probe is not None:
        with torch.no_grad():  # the first output: logits of a classifier or LM, last_hidden_state of an encoder
            difference = float((hf_model(**probe)[0] - reloaded(**probe)[0]).abs().max())
        if not difference <= ROUND_TRIP_ATOL:
            raise PassError(f"the model saved in {out_dir} reloads with different outputs (max |diff| "
                            f"{difference:.3g} > {ROUND_TRIP_ATOL}): its config.json does not describe its shape.",
                            fix="this is a slimline bug (the pass that reshaped it left the config behind): "
                                "report it with the recipe and the model's config.json.")
    mine, theirs = hf_model.state_dict(), reloaded.state_dict()
    mismatched = sorted(k for k in mine if k not in theirs or mine[k].shape != theirs[k].shape
                        or not torch.equal(mine[k], theirs[k]))
    if mismatched:
        raise PassError(f"the model saved in {out_dir} does not reload into the same weights "
                        f"({mismatched[:5]} differ).", fix="this is a slimline bug: report it with the recipe.")
