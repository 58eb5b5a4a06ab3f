"""The torch runner loads a Hugging Face model from its directory, whatever file its manifest names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import slimline
from slimline.formats.hf import load_hf_model
from slimline.pipeline.side_by_side import runner_spec
from slimline.profiles.schema import load_profile
from slimline.runtimes import make_runner


def test_a_pruned_students_directory_runs_on_the_torch_runner(tiny_bert: Path, tmp_path: Path) -> None:
    """A pass's Hugging Face output names `model.safetensors` as its model file; transformers loads the directory."""
    student = slimline.compress(tiny_bert, recipe=[{"pass": "prune.layers", "with": {"keep_every": 2}}],
                                profile="cpu", out=tmp_path / "student")
    assert student.manifest.model_file == "model.safetensors"
    runner = make_runner(runner_spec("student", student, "torch", load_profile("cpu")))
    feeds = {"input_ids": np.array([[2, 5, 7, 3]]), "attention_mask": np.ones((1, 4), dtype=np.int64)}
    with torch.inference_mode():
        expected = load_hf_model(student.path, "text-classification")(
            **{name: torch.from_numpy(values) for name, values in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(runner.run(feeds), expected, rtol=1e-5, atol=1e-6)
