"""Every refusal has a reason and a fix line: a sweep of every pass's check() over formats, tasks,
architectures, targets and the options that trigger their own refusals."""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

import pytest

from slimline.compression.base import ModelInfo, Problem
from slimline.compression.catalogue import catalogue, pass_class
from slimline.core.errors import DataError
from slimline.profiles.schema import Target

FORMATS = ("hf", "onnx", "torch-quantized", "torch-module")
ARCHITECTURES = (("text-classification", "bert"), ("text-generation", "llama"), ("text-generation", "gpt2"),
                 ("image-classification", "mobilenet_v2"), ("tensor", None))
TARGETS = (Target(device="cpu", runtime="onnxruntime", threads=1), Target(device="cpu", runtime="torch", threads=1),
           Target(device="cuda", runtime="onnxruntime", threads=1, precision="int8"),
           Target(device="cuda", runtime="tensorrt", threads=1, precision="fp16"),
           Target(device="cuda", runtime="torch", threads=1, precision="fp16"))
#: Per pass: the configs to sweep (the default, and options that have refusals of their own).
CONFIGS: dict[str, list[dict[str, Any]]] = {
    "prune.layers": [{"keep": [0]}],
    "prune.structured": [{"heads_ratio": 0.5}, {"heads_ratio": 0.05, "importance": "taylor", "round_to": 12},
                         {"heads_ratio": 0.5, "head_scope": "global"}],
    "distill.kd": [{}, {"teacher": "/nonexistent/teacher"}],
    "optimize.ort-transformers": [{}, {"model_type": "bert"}],
    # (its default, the rotten-tomatoes set, is read in full by check(): the small CSV keeps the sweep fast)
    "quantize.ort-int8-static": [{"calibration": {"source": "CSV"}},
                                 {"calibration": {"source": "/nonexistent/images"}}],
    "quantize.ort-int8-dynamic": [{}, {"op_types": ["MatMul", "Conv"]}],
}


def _problems(csv: Path) -> list[Problem]:
    found = []
    for name in catalogue():
        cls = pass_class(name)
        for options in CONFIGS.get(name, [{}]):
            if options.get("calibration", {}).get("source") == "CSV":
                options = {"calibration": {"source": str(csv)}}
            instance = cls(cls.Config(**options))  # a config the sweep cannot build is a bug in the sweep
            for fmt, (task, model_type), target in product(FORMATS, ARCHITECTURES, TARGETS):
                try:
                    found += instance.check(ModelInfo(fmt, task, model_type), target)
                except DataError:
                    continue  # a missing calibration file raised instead of reported: a refusal with a fix too
    return found


@pytest.fixture(scope="module")
def problems(labelled_csv: Path) -> list[Problem]:
    return _problems(labelled_csv)


def test_the_sweep_reaches_refusals_of_every_kind(problems: list[Problem]) -> None:
    refusing = {p.pass_name for p in problems if p.severity == "error"}
    assert len(refusing) >= 10, refusing  # formats, targets, architectures, options: nearly every pass refuses


def test_every_refusal_of_every_pass_has_a_reason_and_a_fix_line(problems: list[Problem]) -> None:
    missing = sorted({f"{p.pass_name}: {p.message}" for p in problems if p.severity == "error" and not p.fix})
    assert not missing, "refusals without a fix:\n" + "\n".join(missing)
    for problem in problems:
        if problem.severity == "error":
            assert problem.message.strip() and problem.fix.strip(), problem
            assert "\n    fix: " in str(problem)


def test_fusion_on_a_hand_made_model_says_what_is_missing_not_model_type_none() -> None:
    cls = pass_class("optimize.ort-transformers")
    [problem] = [p for p in cls(cls.Config()).check(ModelInfo("onnx", "tensor", None), TARGETS[0])
                 if p.severity == "error"]
    assert "None" not in problem.message and "no model_type" in problem.message
    assert problem.fix.startswith("mark the step `optional: true`")
