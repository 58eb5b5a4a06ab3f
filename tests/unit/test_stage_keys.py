"""Stage keys: a torch-level stage is shared by every runtime the export goes to; an ONNX-level one is not."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_tiny_bert

from slimline.compression.recipe import build_step
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.stages import run_stages, target_key
from slimline.profiles.schema import Profile, Shape, Target

RECIPE = [{"pass": "prune.structured", "with": {"heads_ratio": 0.5, "ffn_ratio": 0.5}},
          {"pass": "quantize.ort-int8-dynamic", "with": {"fallback": {"enabled": False}}}]


def profile(runtime: str, **options: str) -> Profile:
    return Profile(name=f"test-{runtime}", target=Target(runtime=runtime, threads=1, runtime_options=options),
                   shapes=[Shape(batch_size=1, sequence_length=16)])


def stage_dirs(checkpoint: Path, out: Path, target_profile: Profile) -> list[str]:
    steps = [build_step(i, raw, "test") for i, raw in enumerate(RECIPE)]
    request = RunRequest(checkpoint=checkpoint, profile=target_profile, out_dir=out, recipe=steps)
    return [Path(record.directory).name for record in run_stages(request, plan_run(request)).records]


def test_a_pruned_model_is_built_once_for_two_runtimes_and_their_options(tmp_path: Path) -> None:
    make_tiny_bert(tmp_path / "model")
    plain = stage_dirs(tmp_path / "model", tmp_path / "out", profile("onnxruntime"))
    tuned = stage_dirs(tmp_path / "model", tmp_path / "out", profile("onnxruntime", graph_optimization_level="basic"))
    assert plain[0] == tuned[0], "the torch-level stage does not depend on the runtime's options"
    assert plain[-1] != tuned[-1], "an ONNX-level stage does"


def test_the_torch_stage_key_keeps_what_a_torch_pass_reads_and_drops_the_runtime() -> None:
    pytest.importorskip("openvino")
    on_ort, on_openvino = Target(runtime="onnxruntime"), Target(runtime="openvino")
    assert target_key(on_ort, "torch") == target_key(on_openvino, "torch")  # both prune-time on ONNX Runtime
    assert target_key(on_ort, "torch") != target_key(Target(runtime="torch"), "torch")  # pruning timed in torch
    assert target_key(on_ort, "torch") != target_key(Target(runtime="onnxruntime", threads=4), "torch")
    assert target_key(on_ort, "onnx") != target_key(on_openvino, "onnx")
