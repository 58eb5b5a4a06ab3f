"""Every recipe shipped in profiles/recipes/ parses against the registry and suits the profile it is meant for."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimline.compression.base import ModelInfo
from slimline.compression.recipe import load_recipe
from slimline.profiles.schema import RECIPES_DIR, load_profile

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))


def test_the_recipes_ship_beside_the_profiles() -> None:
    assert len(RECIPES) >= 9, RECIPES_DIR


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_parses_and_checks_clean(path: Path) -> None:
    steps = load_recipe(path)
    assert steps
    torch_level = path.stem.startswith(("torch", "bnb"))
    profile = "gpu-t4" if path.stem.startswith("gpu") else "cpu-torch" if torch_level else \
        "cpu-openvino" if "openvino" in path.stem else "cpu"
    target = load_profile(profile).target
    info, errors = ModelInfo("hf", "text-classification", "bert"), []
    for step in steps:  # as the pipeline runs them: torch-level passes, the export, ONNX-level passes
        if step.pass_.stage == "onnx" and info.format == "hf":
            info = ModelInfo("onnx", info.task, info.model_type)
        errors += [p for p in step.pass_.check(info, target) if p.severity == "error"]
        info = ModelInfo(step.pass_.produces, info.task, info.model_type)
    assert not errors, errors
