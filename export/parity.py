"""Parity between an exported ONNX model and the PyTorch model it came from, on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.artifact import TensorSpec
from slimline.core.errors import ExportError
from slimline.formats.hf import load_hf_model
from slimline.formats.inputs import synthetic_feeds
from slimline.profiles.schema import Shape

#: Real sentences used for text models that ship a tokenizer, padded into one batch.
PARITY_SENTENCES = [
    "A gripping, beautifully shot film with a cast that never hits a false note.",
    "Two hours of my life I will never get back.",
    "The plot wobbles in the middle, but the ending lands.",
    "Not bad.",
]


def _parity_feeds(source: Path, task: str, inputs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    config = json.loads((source / "config.json").read_text())
    feeds = [synthetic_feeds(inputs, Shape(batch_size=3, sequence_length=24), config, seed=1)]
    if task != "image-classification" and (source / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
        encoded = tokenizer(PARITY_SENTENCES, padding=True, return_tensors="np")
        names = {spec.name for spec in inputs}
        real = {name: encoded[name].astype(np.int64) for name in names if name in encoded}
        if set(real) == names:
            feeds.insert(0, real)
    return feeds


def check_parity(source: Path, task: str, onnx_path: Path, inputs: list[TensorSpec],
                 atol: float, min_agreement: float) -> dict[str, Any]:
    """Compare ONNX Runtime (CPU) and PyTorch outputs; raise ExportError when outside tolerance."""
    import onnxruntime as ort
    import torch

    model = load_hf_model(source, task)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst_diff, agree, total = 0.0, 0, 0
    for feeds in _parity_feeds(source, task, inputs):
        with torch.inference_mode():
            expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.float().numpy()
        actual = session.run(None, feeds)[0]
        if actual.shape != expected.shape:
            raise ExportError(f"exported model's output shape {actual.shape} differs from PyTorch's {expected.shape}.",
                              fix="the export traced a different graph; try exporter: torch or another opset.")
        worst_diff = max(worst_diff, float(np.max(np.abs(actual.astype(np.float64) - expected))))
        agree += int((actual.argmax(-1) == expected.argmax(-1)).sum())
        total += int(np.prod(expected.shape[:-1]))
    agreement = agree / total
    result = {"max_abs_diff": worst_diff, "argmax_agreement": agreement, "atol": atol,
              "min_agreement": min_agreement, "compared_predictions": total}
    if worst_diff > atol or agreement < min_agreement:
        raise ExportError(
            f"ONNX export does not match PyTorch: max |diff| = {worst_diff:.3g} (tolerance {atol:g}), "
            f"argmax agreement = {agreement:.3f} (required {min_agreement:g}) over {total} predictions.",
            fix="try another opset or exporter; if the difference is expected, raise parity_atol in the export config.",
        )
    return result
