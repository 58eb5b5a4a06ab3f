"""Writing a reshaped (pruned or distilled) Hugging Face model as a reloadable safetensors checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.base import copy_side_files
from slimline.errors import PassError
from slimline.torch_quantized import is_weight_file


def save_pruned(hf_model: Any, source_dir: Path, out_dir: Path) -> None:
    """safetensors + config (with the new widths) + the source's tokenizer files; proves it reloads.

    The reload check is cheap next to pruning and catches a config that no longer describes the
    weights before a later stage (or a user) finds out.
    """
    hf_model.save_pretrained(out_dir, safe_serialization=True)
    copy_side_files(source_dir, out_dir, skip={p.name for p in source_dir.iterdir()
                                               if is_weight_file(p.name) or p.name == "config.json"})
    assert_reloads_equal(hf_model, out_dir)


def assert_reloads_equal(hf_model: Any, out_dir: Path) -> None:
    import torch

    reloaded = type(hf_model).from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    mine, theirs = hf_model.state_dict(), reloaded.state_dict()
    mismatched = sorted(k for k in mine if k not in theirs or mine[k].shape != theirs[k].shape
                        or not torch.equal(mine[k], theirs[k]))
    if mismatched:
        raise PassError(f"the saved model does not reload into the same weights ({mismatched[:5]} differ).",
                        fix="this is a slimline bug: report it with the recipe.")
