"""The ONNX-level compression passes on a tiny exported BERT: each runs, and each refuses what it must."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from slimline.compression.base import ModelInfo
from slimline.compression.catalogue import registry
from slimline.compression.quantize.ort_int8_dynamic import gemm_aware_exclusions
from slimline.compression.recipe import parse_recipe
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.core.errors import RecipeError, StepNotApplicable
from slimline.pipeline.single import compress_to, export_to
from slimline.profiles.schema import Target, load_profile

CPU = Target(device="cpu", runtime="onnxruntime", threads=1)
CUDA = Target(device="cuda", runtime="onnxruntime", threads=1)
ONNX_BERT = ModelInfo("onnx", "text-classification", "bert")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return export_to(tiny_bert, tmp_path_factory.mktemp("onnx") / "model")


def make(name: str, **options):
    return registry()[name](registry()[name].Config(**options))


def compress(model: ModelDir, out: Path, steps: list[dict], profile: str = "cpu", **kwargs) -> ModelDir:
    return compress_to(model.path, out, parse_recipe(steps, "test"), load_profile(profile), **kwargs)


def run_onnx(model: ModelDir) -> np.ndarray:
    session = ort.InferenceSession(str(model.model_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = {"input_ids": np.arange(5, 21, dtype=np.int64).reshape(2, 8), "attention_mask": np.ones((2, 8), np.int64),
             "token_type_ids": np.zeros((2, 8), np.int64)}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def op_counts(model: ModelDir) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(model.model_path)).graph.node)


def test_static_int8_refuses_empty_calibration_set(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    problems = make("quantize.ort-int8-static", calibration={"source": str(empty)}).check(ONNX_BERT, CPU)
    assert any(p.severity == "error" and "has 0 examples" in p.message for p in problems)


def test_static_int8_refuses_too_small_calibration_set(labelled_csv: Path) -> None:
    quantizer = make("quantize.ort-int8-static", calibration={"source": str(labelled_csv), "split": "validation",
                                                             "min_samples": 50})
    errors = [p for p in quantizer.check(ONNX_BERT, CPU) if p.severity == "error"]
    assert errors and "at least 50" in errors[0].message


def test_static_int8_warns_without_vnni(labelled_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimline.compression.quantize.ort_int8_static as static

    monkeypatch.setattr(static, "has_vnni", lambda: False)
    quantizer = make("quantize.ort-int8-static", calibration={"source": str(labelled_csv), "split": "all"})
    warnings = [p for p in quantizer.check(ONNX_BERT, CPU) if p.severity == "warning"]
    assert any("VNNI" in p.message for p in warnings)


@pytest.mark.parametrize("name", ["quantize.ort-int8-dynamic", "quantize.ort-int8-static"])
def test_int8_passes_refuse_ort_cuda_target(name: str) -> None:
    problems = make(name).check(ONNX_BERT, CUDA)
    assert any(p.severity == "error" and "12229" in p.message for p in problems)


def test_fp16_refuses_cpu_target_and_accepts_cuda() -> None:
    assert any(p.severity == "error" and "slower" in p.message for p in make("convert.fp16").check(ONNX_BERT, CPU))
    assert not [p for p in make("convert.fp16").check(ONNX_BERT, CUDA) if p.severity == "error"]


def test_int4_refuses_tensorrt_runtime() -> None:
    trt = Target(device="cuda", runtime="tensorrt")
    assert any(p.severity == "error" for p in make("quantize.ort-int4-weight-only").check(ONNX_BERT, trt))


def test_int4_block_size_must_be_power_of_two() -> None:
    with pytest.raises(RecipeError, match="power of two"):
        parse_recipe([{"pass": "quantize.ort-int4-weight-only", "with": {"block_size": 48}}], "test")


def test_dynamic_int8_writes_integer_ops_and_records_options(tiny_onnx: ModelDir, tmp_path: Path) -> None:
    out = compress(tiny_onnx, tmp_path / "q", [{"pass": "quantize.ort-int8-dynamic",
                                                "with": {"per_channel": True, "reduce_range": True}}])
    assert op_counts(out)["MatMulInteger"] > 0
    assert out.manifest.metadata["quantization"]["per_channel"] is True
    assert out.manifest.metadata["accuracy_fallback"] == {"skipped": "no eval data in this run (pass --eval-data)"}
    assert run_onnx(out).shape == (2, 2)


def test_dynamic_int8_excluded_nodes_stay_float(tiny_onnx: ModelDir, tmp_path: Path) -> None:
    # ORT turns every Gemm into a MatMul before quantizing, so Gemm nodes must be excluded too.
    names = [n.name for n in onnx.load(str(tiny_onnx.model_path)).graph.node if n.op_type in ("MatMul", "Gemm")]
    one_left = compress(tiny_onnx, tmp_path / "q", [{"pass": "quantize.ort-int8-dynamic",
                                                     "with": {"exclude_nodes": names[1:], "op_types": ["MatMul"]}}])
    assert op_counts(one_left)["MatMulInteger"] == 1
    # excluding every node quantizes nothing: that is a failed pass, not a result (issue 20)
    with pytest.raises(StepNotApplicable, match=r"quantized 0 of \d+ weight ops"):
        compress(tiny_onnx, tmp_path / "q0", [{"pass": "quantize.ort-int8-dynamic",
                                               "with": {"exclude_nodes": names, "op_types": ["MatMul"]}}])


def test_gemm_exclusion_also_names_the_rewritten_matmul() -> None:
    assert gemm_aware_exclusions(["/classifier/Gemm"]) == ["/classifier/Gemm", "/classifier/Gemm_MatMul"]


def test_static_int8_qdq_calibrates_and_records_the_calibration_hash(tiny_onnx: ModelDir, labelled_csv: Path,
                                                                     tmp_path: Path) -> None:
    out = compress(tiny_onnx, tmp_path / "q", [{"pass": "quantize.ort-int8-static", "with": {
        "calibration": {"source": str(labelled_csv), "split": "all", "num_samples": 20}}}])
    assert op_counts(out)["QuantizeLinear"] > 0
    assert len(out.manifest.provenance.data_sha256["calibration"]) == 64
    assert out.manifest.metadata["quantization"]["calibration"]["examples"] == 20
    assert np.isfinite(run_onnx(out)).all()


def test_int4_weight_only_uses_matmulnbits_and_shrinks_weights(tiny_onnx: ModelDir, tmp_path: Path) -> None:
    out = compress(tiny_onnx, tmp_path / "q", [{"pass": "quantize.ort-int4-weight-only", "with": {"block_size": 16}}])
    assert op_counts(out)["MatMulNBits"] > 0
    assert out.model_path.stat().st_size < tiny_onnx.model_path.stat().st_size
    assert run_onnx(out).shape == (2, 2)


def test_ort_transformers_optimizer_fuses_attention(tiny_onnx: ModelDir, tmp_path: Path) -> None:
    out = compress(tiny_onnx, tmp_path / "o", [{"pass": "optimize.ort-transformers"}])
    assert out.manifest.metadata["optimization"]["fused_ops"].get("Attention", 0) == 2
    np.testing.assert_allclose(run_onnx(out), run_onnx(tiny_onnx), atol=1e-4)


def test_fp16_conversion_keeps_float32_io(tiny_onnx: ModelDir, tmp_path: Path) -> None:
    out = compress(tiny_onnx, tmp_path / "h", [{"pass": "convert.fp16"}], profile="gpu-t4")
    graph = onnx.load(str(out.model_path)).graph
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    np.testing.assert_allclose(run_onnx(out), run_onnx(tiny_onnx), atol=5e-2)


def test_static_int8_refuses_to_calibrate_an_image_model_on_text_and_names_image_sources() -> None:
    from slimline.compression.base import ModelInfo
    from slimline.compression.quantize.ort_int8_static import Int8StaticConfig, OrtInt8Static
    from slimline.profiles.schema import Target

    config = Int8StaticConfig(calibration={"source": "rotten-tomatoes"})  # the default, eval-data, fits any model
    problems = OrtInt8Static(config).check(ModelInfo("onnx", "image-classification"), Target())
    assert any(p.severity == "error" and "image folder" in p.message for p in problems)


def test_dynamic_int8_on_conv_warns_that_it_is_slow_and_points_at_static() -> None:
    from slimline.compression.base import ModelInfo
    from slimline.compression.quantize.ort_int8_dynamic import Int8DynamicConfig, OrtInt8Dynamic
    from slimline.profiles.schema import Target

    config = Int8DynamicConfig(op_types=["Conv", "MatMul"])
    problems = OrtInt8Dynamic(config).check(ModelInfo("onnx", "image-classification"), Target())
    assert any(p.severity == "warning" and "quantize.ort-int8-static" in p.message for p in problems)


def test_static_int8_calibrates_on_the_runs_own_text_and_entropy_works_on_unequal_lengths(
        tiny_onnx: ModelDir, tmp_path: Path) -> None:
    """By default static INT8 calibrates on the train split of the run's --eval-data, not on the demo's Rotten
    Tomatoes; examples are padded to one length for the histogram calibrators, which fail on examples of
    different lengths otherwise."""
    texts = tmp_path / "mine.csv"
    texts.write_text("text,label\n" + "".join(f"{'word ' * (3 + i % 9)}number {i},{i % 2}\n" for i in range(60)))
    out = compress(tiny_onnx, tmp_path / "q", [{"pass": "quantize.ort-int8-static", "with": {
        "calibration_method": "entropy", "calibration": {"num_samples": 24, "min_samples": 8}}}],
        tuning_data=DatasetSpec(source=str(texts), split="test", seed=3))
    calibration = out.manifest.metadata["quantization"]["calibration"]
    assert calibration["source"] == str(texts) and calibration["split"] == "train" and calibration["seed"] == 3
    assert calibration["examples"] == 24 and calibration["sha256"] == out.manifest.provenance.data_sha256["calibration"]
    assert out.manifest.metadata["quantization"]["calibration_method"] == "entropy"
    assert np.isfinite(run_onnx(out)).all()


@pytest.mark.parametrize("source", ["eval-data", "rotten-tomatoes"])
def test_static_int8_on_a_causal_lm_is_refused_in_the_check_naming_the_llm_recipes(source: str) -> None:
    """Was refused only after the export, calibrating ("the tokenizer does not produce model inputs
    ['past_key_values.0.key', ...]", fix: "calibrate a text model ..."); found by the coverage matrix."""
    problems = make("quantize.ort-int8-static", calibration={"source": source}).check(
        ModelInfo("onnx", "text-generation", "llama"), CPU)
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) == 1 and "causal LM" in errors[0].message
    assert "llm-int8-weight-only" in (errors[0].fix or "") and "llm-int8-per-channel" in (errors[0].fix or "")
    assert not [p for p in make("quantize.ort-int4-weight-only", bits=8, op_types=["MatMul"]).check(
        ModelInfo("onnx", "text-generation", "llama"), CPU) if p.severity == "error"]  # the fix's recipe applies
