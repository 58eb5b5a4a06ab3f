"""Every recipe shipped in recipes/ parses against the registry and suits the profile it is meant for."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.base import ModelInfo
from compress.recipe import load_recipe
from profiles.schema import load_profile

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_parses_and_checks_clean(path: Path) -> None:
    steps = load_recipe(path)
    assert steps
    target = load_profile("gpu-t4" if path.stem.startswith("gpu") else "cpu").target
    info = ModelInfo("onnx", "text-classification", "bert")
    errors = [p for step in steps for p in step.pass_.check(info, target) if p.severity == "error"]
    assert not errors, errors
