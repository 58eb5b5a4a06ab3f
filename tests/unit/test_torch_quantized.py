"""PyTorch-runtime quantization: the torch-quantized format round-trips exactly, and recipes that could
only fail later (bitsandbytes or torch int8 before an ONNX export) are refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from slimline.compression.base import ModelInfo, PassContext
from slimline.compression.quantize import bnb as bnb_module
from slimline.compression.quantize.bnb import BnbInt8, BnbInt8Config, BnbNf4, BnbNf4Config
from slimline.compression.quantize.torch_int8_dynamic import TorchInt8Dynamic, TorchInt8DynamicConfig
from slimline.compression.recipe import parse_recipe
from slimline.core.errors import PassError, RecipeError
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.hf import load_hf_model
from slimline.formats.torch_quantized import (
    QUANTIZATION_FILE,
    WEIGHTS_FILE,
    linear_module_names,
    load_torch_quantized,
    quantize_int8_dynamic,
    save_int8_dynamic,
)
from slimline.profiles.schema import Measurement, Profile, Shape, Target

REPO = Path(__file__).resolve().parents[2]
TORCH_INT8 = "quantize.torch-int8-dynamic"
TORCH_CPU = Target(device="cpu", runtime="torch", threads=1)
ORT_CPU = Target(device="cpu", runtime="onnxruntime", threads=1)
HF_TEXT = ModelInfo("hf", "text-classification", "bert")


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 30, (3, 12), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_saved_int8_dynamic_model_reloads_with_identical_outputs(tiny_bert: Path, tmp_path: Path,
                                                                   per_channel: bool) -> None:
    model = load_hf_model(tiny_bert, "text-classification")
    float_logits = _logits(model, _ids())
    quantized = quantize_int8_dynamic(model, linear_module_names(model), per_channel)
    expected = _logits(quantized, _ids())
    info = save_int8_dynamic(quantized, tmp_path, {"per_channel": per_channel, "exclude": []})

    reloaded, read_back = load_torch_quantized(tmp_path, "text-classification")
    assert torch.equal(_logits(reloaded, _ids()), expected)
    assert not torch.equal(expected, float_logits), "the model was not actually quantized"
    assert read_back["scheme"] == info["scheme"] == "torch-int8-dynamic"
    qscheme = "per_channel_affine" if per_channel else "per_tensor_affine"
    assert {m["qscheme"] for m in read_back["modules"].values()} == {qscheme}
    assert len(read_back["modules"]) == 14  # 2 layers x 6 Linear + pooler + classifier


def test_the_int8_weights_file_holds_plain_int8_tensors_and_no_pickle(tiny_bert: Path, tmp_path: Path) -> None:
    model = load_hf_model(tiny_bert, "text-classification")
    save_int8_dynamic(quantize_int8_dynamic(model, ["classifier"], True), tmp_path, {})
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as handle:
        dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}  # noqa: SIM118
    assert dtypes["classifier.weight_int8"] == "I8"
    assert dtypes["classifier.weight_scale"] == "F64" and dtypes["classifier.weight_zero_point"] == "I64"
    assert dtypes["bert.encoder.layer.0.output.dense.weight"] == "F32"  # not selected: stays float
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.json", QUANTIZATION_FILE, WEIGHTS_FILE])


def test_tied_weights_survive_a_round_trip(tiny_gpt2: Path, tmp_path: Path) -> None:
    model = load_hf_model(tiny_gpt2, "text-generation")
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(1))
    expected = _logits(model, ids)
    info = save_int8_dynamic(quantize_int8_dynamic(model, [], False), tmp_path, {})
    assert info["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    reloaded, _ = load_torch_quantized(tmp_path, "text-generation")
    assert torch.equal(_logits(reloaded, ids), expected)


def test_the_int8_pass_writes_a_deployable_directory_with_exclusions(tiny_bert: Path, tmp_path: Path) -> None:
    source = open_checkpoint(tiny_bert)
    step = parse_recipe([{"pass": TORCH_INT8, "with": {"exclude": ["classifier", "*.output.dense"]}}], "test")[0]
    result = step.pass_.apply(source, tmp_path, PassContext(target=TORCH_CPU))
    assert result.model_file == WEIGHTS_FILE
    # 14 Linear, minus the classifier and 2 layers x (attention.output.dense, output.dense)
    assert result.metadata["quantization"]["quantized_modules"] == 14 - 1 - 4
    assert {"vocab.txt", "tokenizer_config.json", "config.json", QUANTIZATION_FILE} <= {
        p.name for p in tmp_path.iterdir()}
    modules = json.loads((tmp_path / QUANTIZATION_FILE).read_text())["modules"]
    assert "classifier" not in modules and "bert.encoder.layer.0.attention.self.query" in modules


def test_the_int8_pass_refuses_an_exclusion_that_matches_nothing(tiny_bert: Path, tmp_path: Path) -> None:
    step = TorchInt8Dynamic(TorchInt8DynamicConfig(exclude=["clasifier"]))
    with pytest.raises(PassError, match="clasifier"):
        step.apply(open_checkpoint(tiny_bert), tmp_path, PassContext(target=TORCH_CPU))


def test_torch_int8_refuses_an_onnxruntime_target_and_a_cuda_target() -> None:
    step = TorchInt8Dynamic(TorchInt8DynamicConfig())
    assert step.check(HF_TEXT, TORCH_CPU) == []
    [ort] = step.check(HF_TEXT, ORT_CPU)
    assert ort.severity == "error" and "only the torch runtime" in ort.message
    [cuda] = step.check(HF_TEXT, Target(device="cuda", runtime="torch"))
    assert cuda.severity == "error" and "CPU only" in cuda.message


@pytest.mark.parametrize("step", [BnbInt8(BnbInt8Config()), BnbNf4(BnbNf4Config())], ids=["int8", "nf4"])
def test_bnb_refuses_an_onnxruntime_target_citing_optimum_1914(step, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bnb_module, "is_available", lambda module: True)
    assert step.check(HF_TEXT, TORCH_CPU) == []
    for target in (ORT_CPU, Target(device="cuda", runtime="tensorrt")):
        [problem] = step.check(HF_TEXT, target)
        assert problem.severity == "error" and "optimum #1914" in problem.message
        assert "ONNX or TensorRT" in problem.message


def test_bnb_without_bitsandbytes_is_refused_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bnb_module, "is_available", lambda module: module != "bitsandbytes")
    [problem] = BnbNf4(BnbNf4Config()).check(HF_TEXT, TORCH_CPU)
    assert problem.severity == "error" and "pip install 'slimline[bnb]'" in (problem.fix or "")


def test_bnb_options_are_validated_at_recipe_load() -> None:
    with pytest.raises(RecipeError, match="quant_type"):
        parse_recipe([{"pass": "quantize.bnb-nf4", "with": {"quant_type": "int3"}}], "test")


@pytest.mark.parametrize(("name", "options", "scheme"), [
    ("quantize.bnb-int8", {}, "bnb-int8"),
    ("quantize.bnb-nf4", {}, "bnb-nf4"),
    ("quantize.bnb-nf4", {"quant_type": "fp4", "double_quant": True, "compute_dtype": "bfloat16"}, "bnb-fp4"),
])
def test_bnb_quantizes_on_cpu_and_reloads_with_identical_outputs(tiny_bert: Path, tmp_path: Path, name: str,
                                                                 options: dict, scheme: str) -> None:
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("accelerate")
    step = parse_recipe([{"pass": name, "with": options}], "test")[0]
    step.pass_.apply(open_checkpoint(tiny_bert), tmp_path, PassContext(target=TORCH_CPU))
    first, info = load_torch_quantized(tmp_path, "text-classification")
    second, _ = load_torch_quantized(tmp_path, "text-classification")
    assert info["scheme"] == scheme
    expected_layer = "Linear8bitLt" if scheme == "bnb-int8" else "Linear4bit"
    assert type(first.bert.encoder.layer[0].output.dense).__name__ == expected_layer
    assert torch.equal(_logits(first, _ids()), _logits(second, _ids()))
    assert "quantization_config" in json.loads((tmp_path / "config.json").read_text())


def _request(checkpoint: Path, out: Path, target: Target, recipe: list[dict]):
    from slimline.pipeline.plan import RunRequest

    profile = Profile(name="t", target=target, shapes=[Shape(sequence_length=16)],
                      measurement=Measurement(min_iters=5, min_time_s=0, max_time_s=5))
    return RunRequest(checkpoint=checkpoint, profile=profile, out_dir=out, recipe=parse_recipe(recipe, "test"))


def test_a_torch_quantized_model_before_an_onnx_export_is_refused_before_any_work(tiny_bert: Path,
                                                                                 tmp_path: Path) -> None:
    from slimline.pipeline.plan import plan_run

    out = tmp_path / "out"
    for recipe in ([{"pass": TORCH_INT8}], [{"pass": TORCH_INT8}, {"pass": "quantize.ort-int8-dynamic"}]):
        with pytest.raises(RecipeError) as err:
            plan_run(_request(tiny_bert, out, ORT_CPU, recipe))
        assert "export.onnx: accepts only ['hf', 'torch-module'] models, but step 1 (quantize.torch-int8-dynamic) " \
               "produces a torch-quantized model" in str(err.value)
        assert not out.exists()


def test_a_torch_level_pass_alone_on_a_torch_target_plans_without_export(tiny_bert: Path, tmp_path: Path) -> None:
    from slimline.pipeline.plan import plan_run

    plan = plan_run(_request(tiny_bert, tmp_path / "out", TORCH_CPU, [{"pass": TORCH_INT8}]))
    assert not plan.needs_export and [s.name for s in plan.torch_steps] == [TORCH_INT8] and not plan.onnx_steps


def test_the_torch_runner_runs_a_torch_quantized_directory_and_names_its_scheme(tiny_bert: Path,
                                                                                tmp_path: Path) -> None:
    from slimline.benchmarking.runners.base import RunnerSpec
    from slimline.benchmarking.runners.torch_runner import TorchRunner
    from slimline.formats.inputs import default_input_specs, synthetic_feeds

    TorchInt8Dynamic(TorchInt8DynamicConfig()).apply(open_checkpoint(tiny_bert), tmp_path,
                                                     PassContext(target=TORCH_CPU))
    inputs, shape = default_input_specs("text-classification"), Shape(sequence_length=16)
    spec = RunnerSpec(label="t", runtime="torch", model_path=str(tmp_path / WEIGHTS_FILE), model_dir=str(tmp_path),
                      model_format="torch-quantized", task="text-classification", threads=1, inputs=inputs,
                      shapes=[shape], measurement=Measurement(min_iters=5))
    runner = TorchRunner(spec)
    feeds = synthetic_feeds(inputs, shape, json.loads((tmp_path / "config.json").read_text()))
    assert runner.run(feeds).shape == (1, 2)
    assert runner.describe()["quantization"] == "torch-int8-dynamic"


def test_discovering_the_passes_does_not_import_bitsandbytes() -> None:
    code = ("import sys; from slimline.compression.catalogue import registry; registry(); "
            "print('bitsandbytes' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert completed.stdout.strip() == "False"
