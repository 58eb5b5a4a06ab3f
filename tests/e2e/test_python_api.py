"""The Python API's arguments: names, paths, objects and configs. (The README's and docs' Python examples run in
tests/e2e/test_docs_examples.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

import slimline


def test_api_arguments_accept_names_paths_objects_and_configs(tiny_bert: Path, tmp_path: Path) -> None:
    from slimline.compression.quantize.ort_int8_dynamic import Int8DynamicConfig

    profile = slimline.api.as_profile("cpu")
    assert slimline.api.as_profile(profile) is profile
    assert slimline.api.as_profile(REPO / "profiles" / "cpu.yaml") == profile
    by_name = slimline.api.as_recipe("cpu-int8-dynamic")
    by_dicts = slimline.api.as_recipe([{"pass": "optimize.ort-transformers"},
                                       {"pass": "quantize.ort-int8-dynamic", "with": {"per_channel": False}}])
    assert [s.config_dict() for s in by_name] == [s.config_dict() for s in by_dicts]
    [step] = slimline.api.as_recipe([Int8DynamicConfig(per_channel=True)])
    assert step.name == "quantize.ort-int8-dynamic" and step.config_dict()["per_channel"] is True
    with pytest.raises(slimline.RecipeError, match="unknown pass"):
        slimline.api.as_recipe([{"pass": "quantize.nope"}])
    with pytest.raises(slimline.CheckpointError):
        slimline.export(tmp_path / "missing", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
