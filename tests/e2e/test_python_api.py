"""The README's Python example runs as written, on a tiny checkpoint saved as `my-checkpoint`."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO

import slimline

MARKER = "<!-- python-api-example -->"


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no ```python block after {MARKER}"
    return match.group(1)


def test_the_readme_python_example_runs(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(tiny_bert, tmp_path / "my-checkpoint")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md", "exec"), {})  # the project's own README
    output = printed.getvalue()
    assert re.search(r"^(pass|fail|incomplete) p50 \d", output, re.M), output
    assert "latency_p95_ms:" in output and "files verified" in output
    assert (tmp_path / "runs" / "bundle" / "manifest.json").is_file()
    assert os.path.isfile(tmp_path / "runs" / "int8" / "model.onnx")


def test_api_arguments_accept_names_paths_objects_and_configs(tiny_bert: Path, tmp_path: Path) -> None:
    from slimline.compress.quantize.ort_int8_dynamic import Int8DynamicConfig

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
