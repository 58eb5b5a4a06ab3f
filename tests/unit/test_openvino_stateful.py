"""Stateful OpenVINO decoders on tiny random Llama and GPT-2 models: the IR keeps its KV cache inside the infer
request, decodes the torch model's greedy tokens, resets between generations, and bundles, verifies and serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimline.benchmarking.decode import decode_results, decoder_for
from slimline.compression.recipe import parse_recipe
from slimline.core.artifact import ModelDir
from slimline.formats.causal_lm import TorchDecoder, greedy_generate
from slimline.formats.hf import load_hf_model
from slimline.pipeline.single import compress_to, export_to
from slimline.pipeline.stages import engine_producer, run_stage
from slimline.profiles.schema import Measurement, Profile, Shape, Target
from slimline.runtimes import get_runtime, make_runner
from slimline.runtimes.base import RunnerSpec

pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'slimline[openvino]'")
pytest.importorskip("nncf", reason="the openvino extra is not installed: pip install 'slimline[openvino]'")

OPENVINO = Target(device="cpu", runtime="openvino", threads=1)
QUICK = Measurement(warmup_iters=1, min_iters=5, min_time_s=0.0, max_time_s=5.0, decode_tokens=6)
PROFILE = Profile(name="test-openvino-llm", target=OPENVINO, shapes=[Shape(batch_size=1, sequence_length=10)],
                  measurement=QUICK, budgets={"size_mb": {"max": 100}})
PROMPT = np.array([[1, 5, 9, 12, 7, 3]], dtype=np.int64)


def ir_of(onnx: ModelDir, out: Path) -> ModelDir:
    """export.openvino (the engine step of an openvino run) on the ONNX stage."""
    exporter = get_runtime("openvino").exporter()
    config = exporter.config(OPENVINO)
    model, _ = run_stage(out, 1, "exporter", exporter.step, config.model_dump(), onnx,
                         engine_producer(onnx, exporter, config, [Shape()], "openvino"))
    return model


def runner(model: ModelDir, runtime: str = "openvino", **options: str):
    return make_runner(RunnerSpec(label=runtime, runtime=runtime, model_path=str(model.model_path),
                                  model_dir=str(model.path), model_format=model.manifest.format,
                                  task="text-generation", threads=1, inputs=model.manifest.inputs,
                                  shapes=PROFILE.shapes, measurement=QUICK, runtime_options=options))


@pytest.fixture(scope="module")
def llama(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelDir, ModelDir]:
    onnx = export_to(tiny_llama, tmp_path_factory.mktemp("llama") / "onnx")
    return onnx, ir_of(onnx, tmp_path_factory.mktemp("llama-ir"))


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelDir, ModelDir]:
    onnx = export_to(tiny_gpt2, tmp_path_factory.mktemp("gpt2") / "onnx")
    return onnx, ir_of(onnx, tmp_path_factory.mktemp("gpt2-ir"))


def test_a_kv_cache_decoder_ir_is_stateful_with_fused_attention_and_no_past_inputs(
        llama: tuple[ModelDir, ModelDir]) -> None:
    onnx, ir = llama
    facts = ir.manifest.metadata["openvino"]
    assert facts["stateful"] is True and facts["state_variables"] == 8  # 4 layers x key, value
    assert facts["sdpa_fused"] == 4  # one attention per layer, for the CPU plugin's in-place cache
    assert [s.name for s in ir.manifest.inputs] == ["input_ids", "attention_mask", "position_ids"]
    assert ir.manifest.outputs == ["logits"]
    assert any(s.name.startswith("past_key_values.") for s in onnx.manifest.inputs)  # the ONNX stage keeps them
    described = runner(ir).describe()
    assert described["stateful"] is True and described["kv_cache_precision"]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_stateful_greedy_tokens_equal_torch_and_onnx_runtime(family: str, request: pytest.FixtureRequest) -> None:
    onnx, ir = request.getfixturevalue(family)
    checkpoint = request.getfixturevalue(f"tiny_{family}")
    config = json.loads((checkpoint / "config.json").read_text())
    # f32 compute and cache: random-init tiny models have near-ties that bf16 (this CPU's default) may flip
    stateful = decoder_for(runner(ir, inference_precision="f32", kv_cache_precision="f32"), config)
    assert type(stateful).__name__ == "StatefulDecoder"
    ours = greedy_generate(stateful, PROMPT, None, 12)
    torch_tokens = greedy_generate(TorchDecoder(load_hf_model(checkpoint, "text-generation")), PROMPT, None, 12)
    ort_tokens = greedy_generate(decoder_for(runner(onnx, "onnxruntime"), config), PROMPT, None, 12)
    assert ours.tokens.tolist() == torch_tokens.tokens.tolist() == ort_tokens.tokens.tolist()
    assert len(ours.step_ms) == 11


def test_the_state_is_reset_between_generations_and_full_forwards(llama: tuple[ModelDir, ModelDir],
                                                                   tiny_llama: Path) -> None:
    _, ir = llama
    config = json.loads((tiny_llama / "config.json").read_text())
    loaded = runner(ir)
    decoder = decoder_for(loaded, config)
    first = greedy_generate(decoder, PROMPT, None, 8).tokens
    other = greedy_generate(decoder, np.array([[4, 4, 8]]), None, 5).tokens  # a different cache in between
    again = greedy_generate(decoder, PROMPT, None, 8).tokens
    assert first.tolist() == again.tolist() and other.shape == (1, 5)
    feeds = {"input_ids": np.tile(PROMPT, (2, 1)), "attention_mask": np.ones((2, PROMPT.shape[1]), np.int64)}
    logits = loaded.run(feeds)  # a full forward (perplexity, verify) after decoding: no leftover cache
    assert logits.shape == (2, PROMPT.shape[1], config["vocab_size"])
    np.testing.assert_allclose(loaded.run(feeds), logits, rtol=0, atol=0)
    assert int(logits[0, -1].argmax()) == int(first[0, 0])


def test_int8_weight_compression_writes_a_stateful_ir_that_the_decode_benchmark_times(
        llama: tuple[ModelDir, ModelDir], tiny_llama: Path, tmp_path: Path) -> None:
    onnx, _ = llama
    compressed = compress_to(onnx.path, tmp_path / "int8", parse_recipe(
        [{"pass": "quantize.nncf-weight-compression", "with": {"mode": "int8_asym"}},
         {"pass": "convert.openvino-precision", "with": {"precision": "f32"}}], "test"), PROFILE)
    facts = compressed.manifest.metadata["openvino"]
    assert facts["stateful"] is True and facts["sdpa_fused"] == 4 and facts["inference_precision"] == "f32"
    assert not any(s.name.startswith("past_key_values.") for s in compressed.manifest.inputs)
    config = json.loads((tiny_llama / "config.json").read_text())
    decode = decode_results(runner(compressed), config, [Shape(batch_size=1, sequence_length=10)], QUICK, seed=0)
    assert decode["b1_s10"]["new_tokens"] == 6 and decode["b1_s10"]["decode_tokens_per_s"] > 0


def test_a_stateful_bundle_verifies_and_serves_generation(llama: tuple[ModelDir, ModelDir], tmp_path: Path) -> None:
    from slimline.deploy.bundle import package
    from slimline.deploy.manifest import read_manifest, verify_bundle
    from slimline.serve.generator import Generator

    _, ir = llama
    root = Path(package(ir.path, tmp_path / "bundle", name="tiny-llama-ov", profile=PROFILE).path)
    assert verify_bundle(root).runtime == "openvino"
    generator = Generator(root, read_manifest(root), threads=1)
    first = generator.generate("the film was", 5)
    assert first.prompt_tokens == 3 and 1 <= first.new_tokens <= 5
    assert generator.generate("a long and very dull film", 4).new_tokens >= 1
    assert generator.generate("the film was", 5).text == first.text  # the state was reset in between


def test_a_stateful_bundle_says_triton_would_leak_its_state(llama: tuple[ModelDir, ModelDir], tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Triton's OpenVINO backend does not reset an IR's state per request: the card and the log say so."""
    from slimline.deploy.bundle import package

    onnx, ir = llama
    with caplog.at_level("WARNING", logger="slimline.deploy.bundle"):
        root = Path(package(ir.path, tmp_path / "stateful", name="tiny-llama-ov", profile=PROFILE).path)
    card = (root / "README.md").read_text()
    assert "Not for Triton as it stands" in card and "tritonserver" not in card
    assert any("does not reset that state" in record.getMessage() for record in caplog.records)
    plain = Path(package(onnx.path, tmp_path / "plain", name="tiny-llama-ort").path)
    assert "tritonserver --model-repository" in (plain / "README.md").read_text()
