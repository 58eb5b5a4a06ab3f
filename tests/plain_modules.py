"""Helpers for plain-module and image tests: the tiny CNN's files in a working directory, and image folders."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO

INPUT_SPEC = """\
inputs:
  - {name: pixels, dtype: float32, shape: [batch, 3, 16, 16]}
outputs: [logits]
task: image-classification
label_names: [cat, dog, fish]
image_preprocess: {crop_size: 16, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
"""


def write_tiny_cnn(workdir: Path, seed: int = 0, suffix: str = ".pth") -> Path:
    """tiny_cnn.py, its state dict (a .pth or .safetensors) and inputs.yaml in `workdir`; returns the weights."""
    import torch

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests" / "fixtures" / "tiny_cnn.py", workdir / "tiny_cnn.py")
    (workdir / "inputs.yaml").write_text(INPUT_SPEC)
    torch.manual_seed(seed)
    from torch import nn

    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    state = {**{f"features.{k}": v for k, v in features.state_dict().items()},
             **{f"classifier.{k}": v for k, v in nn.Linear(16, 3).state_dict().items()}}
    weights = workdir / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(weights))
    else:
        torch.save(state, weights)
    return weights


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "fish"), per_class: int = 30,
                       size: int = 20, seed: int = 0) -> Path:
    """An ImageFolder tree of seeded random RGB PNGs (each class a different mean colour)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.normal(60 + 70 * index, 40, (size, size, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


#: The input spec of tests/fixtures/tiny_lstm.py: token ids (named as a tokenizer names them, without a config that
#: gives their vocabulary) in, class logits out, judged by agreement with fp32.
LSTM_SPEC = """\
inputs:
  - {name: input_ids, dtype: int64, shape: [batch, sequence]}
outputs: [logits]
task: tensor
output_kinds: {logits: class-logits}
"""


#: Input specs of the tiny modules in tests/fixtures/quality_models.py (each shape issue 19 found mis-scored).
EMBEDDER_SPEC = """\
inputs:
  - {name: frames, dtype: float32, shape: [batch, 8, 4]}
outputs: [embedding]
task: sentence-embedding
"""
DETECTOR_SPEC = """\
inputs:
  - {name: pixels, dtype: float32, shape: [batch, 3, 16, 16]}
outputs: [boxes, keypoints, scores]
output_kinds: {scores: class-logits}
task: detection
image_preprocess: {crop_size: 16, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
"""
FRAGILE_CNN_SPEC = INPUT_SPEC


def write_quality_model(workdir: Path, factory: str, spec: str) -> Path:
    """quality_models.py, the state dict of `quality_models:<factory>()` and its input spec in `workdir`;
    returns the weights file (the spec is workdir / f"{factory}.yaml")."""
    import importlib
    import sys

    import torch

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests" / "fixtures" / "quality_models.py", workdir / "quality_models.py")
    (workdir / f"{factory}.yaml").write_text(spec)
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    module = importlib.import_module("quality_models")
    weights = workdir / f"{factory}.pth"
    torch.save(getattr(module, factory)().state_dict(), weights)
    return weights


def write_frames_npz(path: Path, count: int = 200, seed: int = 0) -> Path:
    """Seeded random (count, 8, 4) float32 sequences named `frames`, for the embedder."""
    import numpy as np

    rng = np.random.default_rng(seed)
    np.savez(path, frames=rng.standard_normal((count, 8, 4)).astype(np.float32))
    return path
