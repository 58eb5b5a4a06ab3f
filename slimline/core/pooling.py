"""How an embedding model turns per-token hidden states into one vector per text.

A sentence-transformers checkpoint says so in `1_Pooling/config.json` (mean of the real tokens, the
first token, or the maximum); a bare transformers encoder says nothing, and mean pooling over the
attention mask is the common choice. Distillation (compress) and the text-embedding evaluator (bench)
both pool through here, so a student is trained on the same vectors it is scored on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

Pooling = Literal["mean", "cls", "max"]
POOLING_CONFIG = Path("1_Pooling") / "config.json"


def pooling_of(model_dir: Path) -> Pooling:
    """The checkpoint's pooling (sentence-transformers' 1_Pooling/config.json), else mean."""
    path = Path(model_dir) / POOLING_CONFIG
    if not path.is_file():
        return "mean"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


def pool(hidden: np.ndarray, mask: np.ndarray | None, mode: Pooling) -> np.ndarray:
    """(batch, tokens, width) hidden states -> (batch, width) float32 embeddings; padding never counts."""
    hidden = np.asarray(hidden, dtype=np.float32)
    if hidden.ndim == 2:  # already one vector per example
        return hidden
    weights = np.ones(hidden.shape[:2], dtype=np.float32) if mask is None else np.asarray(mask, dtype=np.float32)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return np.where(weights[..., None] > 0, hidden, -np.inf).max(axis=1)
    return (hidden * weights[..., None]).sum(axis=1) / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
