"""Tokenise a labelled split once into a .npz that every runner reads, so all see identical inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from slimline.core.data import DatasetSpec, encode_labelled


def build_eval_npz(spec: DatasetSpec, tokenizer_dir: Path, max_length: int, out_path: Path,
                   extra: dict[str, np.ndarray] | None = None) -> dict[str, object]:
    """Write input arrays + labels (shortest first) and `extra` (e.g. `meta_*` facts) to `out_path`; returns facts
    for the report (hashes)."""
    arrays, data = encode_labelled(spec, tokenizer_dir, max_length)
    np.savez(out_path, **arrays, labels=data.labels, **(extra or {}))
    digest = hashlib.sha256(out_path.read_bytes()).hexdigest()
    return {"dataset": spec.model_dump(), "examples": len(data), "examples_sha256": data.sha256,
            "inputs_sha256": digest, "max_length": max_length, "label_names": data.label_names}


def accuracy_of(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())
