"""The TensorRT decisions that need no GPU: optimisation profiles, precision flags, engine compatibility,
config validation, and the refusal to build where TensorRT or CUDA is missing."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from slimline.core.artifact import Manifest, ModelDir, TensorSpec, new_provenance
from slimline.core.errors import (
    EXIT_BAD_INPUT,
    CheckpointError,
    ExportError,
    MissingDependency,
    ProfileError,
    RecipeError,
)
from slimline.exporters.tensorrt import (
    EngineFacts,
    TensorRTExportConfig,
    check_engine_compatible,
    export_tensorrt,
    optimization_profile_shapes,
    select_builder_flags,
)
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.profiles.schema import Profile, Shape, Target

TORCH_EXPORT = [TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in ("input_ids", "attention_mask")]
OPTIMUM_EXPORT = [TensorSpec(name=n, dtype="int64", shape=["batch_size", "sequence_length"])
                  for n in ("input_ids", "attention_mask", "token_type_ids")]
BUILT_ON_A100 = {"engine": {"tensorrt_version": "10.3.0.26", "compute_capability": "8.0", "gpu_name": "NVIDIA A100",
                            "cuda_version": "12.4", "driver_version": "550.54"}}


def shapes(*pairs: tuple[int, int]) -> list[Shape]:
    return [Shape(batch_size=b, sequence_length=s) for b, s in pairs]


def test_profile_covers_every_shape_with_opt_at_the_first_and_batch_and_sequence_down_to_one() -> None:
    profile = optimization_profile_shapes(TORCH_EXPORT, shapes((8, 128), (1, 128)))
    assert profile == {name: ((1, 1), (8, 128), (8, 128)) for name in ("input_ids", "attention_mask")}


def test_profile_reads_optimum_axis_names_and_spans_several_sequence_lengths() -> None:
    profile = optimization_profile_shapes(OPTIMUM_EXPORT, shapes((1, 64), (4, 128), (2, 32)))
    assert set(profile) == {"input_ids", "attention_mask", "token_type_ids"}
    assert profile["token_type_ids"] == ((1, 1), (1, 64), (4, 128))


def test_profile_sizes_image_axes_from_the_shape_or_the_model_config() -> None:
    pixels = [TensorSpec(name="pixel_values", dtype="float32", shape=["batch_size", 3, "height", "width"])]
    from_config = optimization_profile_shapes(pixels, shapes((2, 1)), {"image_size": 32})
    assert from_config["pixel_values"] == ((1, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32))
    explicit = optimization_profile_shapes(pixels, [Shape(batch_size=1, image_size=64), Shape(batch_size=1,
                                                                                              image_size=96)])
    assert explicit["pixel_values"] == ((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 96, 96))


def test_profile_keeps_fixed_axes_and_refuses_one_that_contradicts_the_profile() -> None:
    fixed_seq = [TensorSpec(name="input_ids", dtype="int64", shape=["batch", 128])]
    assert optimization_profile_shapes(fixed_seq, shapes((4, 128)))["input_ids"] == ((1, 128), (4, 128), (4, 128))
    with pytest.raises(ExportError, match="fixed sequence size 16") as caught:
        optimization_profile_shapes([TensorSpec(name="input_ids", dtype="int64", shape=["batch", 16])],
                                    shapes((1, 128)))
    assert caught.value.fix and "dynamic" in caught.value.fix


def test_profile_refuses_a_dynamic_axis_it_cannot_size_and_an_empty_shape_list() -> None:
    with pytest.raises(ExportError, match="cannot size"):
        optimization_profile_shapes([TensorSpec(name="past_key", dtype="float32", shape=["batch", "heads"])],
                                    shapes((1, 8)))
    with pytest.raises(ProfileError, match="no shapes"):
        optimization_profile_shapes(TORCH_EXPORT, [])


@given(pairs=st.lists(st.tuples(st.integers(1, 64), st.integers(1, 512)), min_size=1, max_size=6))
def test_every_profile_shape_lies_within_min_and_max(pairs: list[tuple[int, int]]) -> None:
    (low, opt, high), = {v for v in optimization_profile_shapes(TORCH_EXPORT, shapes(*pairs)).values()}
    assert opt == pairs[0]
    for shape in pairs:
        assert all(lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True))


def test_fp16_is_weakly_typed_with_the_fp16_flag() -> None:
    plan = select_builder_flags("fp16", onnx_has_qdq=False, gpu_compute_capability="8.0")
    assert (plan.strongly_typed, plan.set_flags, plan.notes) == (False, ("FP16",), ())
    assert select_builder_flags("fp16", False, (6, 1)).notes  # slow fp16 on Pascal consumer parts is said


def test_fp32_clears_tf32_so_fp32_means_ieee_fp32() -> None:
    plan = select_builder_flags("fp32", onnx_has_qdq=False, gpu_compute_capability=(8, 6))
    assert plan.set_flags == () and plan.clear_flags == ("TF32",)


def test_int8_from_qdq_is_strongly_typed_and_sets_no_precision_flag() -> None:
    plan = select_builder_flags("int8-qdq", onnx_has_qdq=True, gpu_compute_capability="8.6")
    assert (plan.strongly_typed, plan.set_flags, plan.clear_flags) == (True, (), ())


def test_int8_without_qdq_nodes_is_refused_with_the_pass_that_adds_them() -> None:
    with pytest.raises(RecipeError, match="QuantizeLinear") as caught:
        select_builder_flags("int8-qdq", onnx_has_qdq=False, gpu_compute_capability="8.0")
    assert "quantize.ort-int8-static" in str(caught.value) and caught.value.exit_code == EXIT_BAD_INPUT


def test_a_qdq_model_is_refused_under_fp16_or_fp32() -> None:
    for precision in ("fp16", "fp32"):
        with pytest.raises(RecipeError, match="QuantizeLinear/DequantizeLinear nodes, but"):
            select_builder_flags(precision, onnx_has_qdq=True, gpu_compute_capability="8.0")


@pytest.mark.parametrize(("precision", "cc", "needed"), [("fp16", "5.2", "5.3"), ("int8-qdq", "6.0", "6.1")])
def test_a_precision_the_gpu_cannot_compute_is_refused(precision: str, cc: str, needed: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(needed)):
        select_builder_flags(precision, onnx_has_qdq=precision == "int8-qdq", gpu_compute_capability=cc)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cc", "qdq", "flags"), [
    ("8.0", True, ("FP16", "INT8")), ("7.5", False, ("FP16",)), ("6.1", False, ()), ("6.1", True, ("INT8",)),
    ("6.0", True, ("FP16",)),
])
def test_best_turns_on_what_the_gpu_runs_fast_and_int8_only_with_qdq(cc: str, qdq: bool, flags: tuple) -> None:
    plan = select_builder_flags("best", onnx_has_qdq=qdq, gpu_compute_capability=cc)
    assert plan.set_flags == flags and not plan.strongly_typed


def test_a_matching_engine_loads_and_a_patch_build_number_difference_is_fine() -> None:
    same = EngineFacts(tensorrt_version="10.3.0.30", compute_capability="8.0", gpu_name="NVIDIA A100")
    assert check_engine_compatible(BUILT_ON_A100, same) == []


@pytest.mark.parametrize("runtime_version", ["10.4.0.1", "10.3.1.2", "8.6.1"])
def test_an_engine_from_another_tensorrt_release_is_refused_with_rebuild(runtime_version: str) -> None:
    with pytest.raises(CheckpointError, match=re.escape(f"TensorRT {runtime_version}")) as caught:
        check_engine_compatible(BUILT_ON_A100, {"tensorrt_version": runtime_version, "compute_capability": "8.0"})
    assert "rebuild" in str(caught.value) and "#2195" in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_an_engine_for_another_compute_capability_is_refused_with_rebuild() -> None:
    with pytest.raises(CheckpointError, match=r"compute capability 8\.0") as caught:
        check_engine_compatible(BUILT_ON_A100, EngineFacts(tensorrt_version="10.3.0", compute_capability="8.6",
                                                           gpu_name="NVIDIA A10"))
    assert "rebuild" in str(caught.value) and "NVIDIA A10" in str(caught.value)


def test_another_gpu_model_of_the_same_architecture_loads_with_a_warning() -> None:
    warnings = check_engine_compatible(BUILT_ON_A100, {"tensorrt_version": "10.3.0", "compute_capability": "8.0",
                                                       "gpu_name": "NVIDIA A30"})
    assert len(warnings) == 1 and "A30" in warnings[0] and "rebuild" in warnings[0]


def test_an_engine_without_recorded_build_facts_is_refused() -> None:
    with pytest.raises(CheckpointError, match="records no build facts"):
        check_engine_compatible({}, {"tensorrt_version": "10.3.0", "compute_capability": "8.0"})


def test_config_forbids_unknown_keys_and_impossible_values_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TensorRTExportConfig(precison="fp16")  # type: ignore[call-arg]
    for bad in ({"precision": "int4"}, {"workspace_mb": 0}, {"builder_optimization_level": 6}):
        with pytest.raises(ValidationError):
            TensorRTExportConfig(**bad)  # type: ignore[arg-type]
    config = TensorRTExportConfig()
    with pytest.raises(ValidationError):
        config.precision = "fp32"  # type: ignore[misc]
    assert (config.precision, config.timing_cache, config.use_timing_cache) == ("fp16", None, True)


def test_profile_precision_maps_to_a_tensorrt_build_and_int4_is_refused() -> None:
    assert TensorRTExportConfig.for_target_precision("int8").precision == "int8-qdq"
    assert TensorRTExportConfig.for_target_precision("mixed").precision == "best"
    with pytest.raises(ProfileError, match="int4"):
        TensorRTExportConfig.for_target_precision("int4")


def _onnx_dir(path: Path, model_format: str = "onnx") -> ModelDir:
    path.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(format=model_format, task="text-classification", model_file="model.onnx",  # type: ignore[arg-type]
                        inputs=TORCH_EXPORT, outputs=["logits"], provenance=new_provenance())
    return ModelDir(path, manifest)


def test_export_without_tensorrt_names_the_install_line_and_the_gpu(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError, GPU or not
    with pytest.raises(MissingDependency) as caught:
        export_tensorrt(_onnx_dir(tmp_path / "onnx"), tmp_path / "out", TensorRTExportConfig(), shapes((1, 16)))
    message = str(caught.value)
    assert "pip install 'slimline[tensorrt]'" in message and "NVIDIA GPU" in message and "'tensorrt'" in message
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_export_refuses_a_model_that_is_not_onnx_before_looking_for_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="takes an ONNX model directory"):
        export_tensorrt(_onnx_dir(tmp_path / "hf", "hf"), tmp_path / "out", TensorRTExportConfig(), shapes((1, 16)))


def _trt_request(checkpoint: Path, out: Path, precision: str) -> RunRequest:
    target = Target(device="cuda", runtime="tensorrt", precision=precision)  # type: ignore[arg-type]
    return RunRequest(checkpoint=checkpoint, profile=Profile(name="trt", target=target), out_dir=out)


def test_planning_a_tensorrt_run_refuses_a_precision_without_a_tensorrt_build(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="int4"):
        plan_run(_trt_request(tiny_bert, tmp_path / "out", "int4"))
    assert not (tmp_path / "out").exists()


def test_planning_a_tensorrt_run_without_tensorrt_refuses_before_writing_anything(
        tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependency, match="profile trt needs TensorRT") as caught:
        plan_run(_trt_request(tiny_bert, tmp_path / "out", "fp16"))
    assert "pip install 'slimline[tensorrt]'" in str(caught.value)
    assert not (tmp_path / "out").exists()
