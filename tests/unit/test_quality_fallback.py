"""The quantization fallback on any quality budget and any data: images judged on agreement, arrays on cosine."""

from __future__ import annotations

from pathlib import Path

from plain_modules import (
    EMBEDDER_SPEC,
    FRAGILE_CNN_SPEC,
    write_frames_npz,
    write_image_folder,
    write_quality_model,
)

from slimline.benchmarking.evaluators.base import EvalSource
from slimline.compression.base import PassContext
from slimline.compression.recipe import parse_recipe
from slimline.core.artifact import ModelDir
from slimline.core.output_kinds import ModelOutput
from slimline.formats.torch_module import load_input_spec, module_dir_for
from slimline.pipeline.single import export_to
from slimline.profiles.schema import Budget, Shape, Target

ONE_THREAD = Target(threads=1)


def _exported(workdir: Path, factory: str, spec: str) -> ModelDir:
    weights = write_quality_model(workdir, factory, spec)
    module = module_dir_for(f"quality_models:{factory}", weights, load_input_spec(workdir / f"{factory}.yaml"))
    return export_to(module.path, workdir / "onnx")


def _apply(model: ModelDir, out: Path, step: dict, context: PassContext) -> dict:
    [parsed] = parse_recipe([step], "test")
    out.mkdir()
    return parsed.pass_.apply(model, out, context).metadata


def test_static_int8_on_images_tries_every_int8_setting_before_float_nodes_and_meets_agreement(workdir: Path) -> None:
    """A CNN whose classifier per-tensor and per-channel INT8 both zero (one dead input with a huge weight): the
    fallback walks per-channel, each calibration method and symmetric activations, then keeps the first and last
    layers in float, which meets the 99% agreement budget on the validation images without ranking nodes."""
    onnx = _exported(workdir, "build_fragile_cnn", FRAGILE_CNN_SPEC)
    images = write_image_folder(workdir / "images", per_class=30, size=16)
    context = PassContext(target=ONE_THREAD, shape=Shape(batch_size=1), tuning_data=EvalSource(source=str(images)),
                          quality_budgets={"agreement_pct": Budget(min=99.0)},
                          quality_outputs=[ModelOutput("logits", "class-logits")])
    metadata = _apply(onnx, workdir / "q", {"pass": "quantize.ort-int8-static", "with": {
        "op_types": ["Conv", "MatMul", "Gemm"], "calibration": {"num_samples": 32, "min_samples": 8},
        "fallback": {"latency_iters": 5}}}, context)
    fallback = metadata["accuracy_fallback"]
    tried = [c["variant"] for c in fallback["candidates"]]
    assert fallback["candidates"][0]["metrics"]["agreement_pct"] < 90, "INT8 must break it, or this proves nothing"
    assert tried[:5] == ["as configured", "per-tensor weights", "percentile calibration", "entropy calibration",
                         "symmetric activations"]
    chosen = fallback["candidates"][fallback["chosen"]]
    assert "first/last layers in float" in chosen["variant"] and chosen["excluded"] == []
    assert fallback["met_budget"] and chosen["metrics"]["agreement_pct"] >= 99.0 and not fallback["sensitivity"]
    assert metadata["quantization"]["exclude_first_last"] is True
    calibration = metadata["quantization"]["calibration"]
    assert calibration["source"] == str(images) and calibration["split"] == "train" and len(calibration["sha256"]) == 64


def test_dynamic_int8_fallback_repairs_an_embedding_on_its_cosine_budget(workdir: Path) -> None:
    """An embedding whose INT8 damage argmax cannot see: the fallback judges cosine on the validation arrays and
    leaves the broken projection in float."""
    onnx = _exported(workdir, "build_embedder", EMBEDDER_SPEC)
    frames = write_frames_npz(workdir / "frames.npz")
    context = PassContext(target=ONE_THREAD, shape=Shape(batch_size=1), tuning_data=EvalSource(source=str(frames)),
                          quality_budgets={"cosine_mean": Budget(min=0.99)})
    metadata = _apply(onnx, workdir / "q", {"pass": "quantize.ort-int8-dynamic",
                                            "with": {"fallback": {"latency_iters": 5}}}, context)
    fallback = metadata["accuracy_fallback"]
    first, chosen = fallback["candidates"][0], fallback["candidates"][fallback["chosen"]]
    assert first["metrics"]["cosine_mean"] < 0.97 and first["metrics"].get("agreement_pct") is None
    assert fallback["met_budget"] and chosen["metrics"]["cosine_mean"] >= 0.99 and chosen["excluded"]
    assert fallback["budgets"] == {"cosine_mean": "min 0.99"} and fallback["examples"] == 20
