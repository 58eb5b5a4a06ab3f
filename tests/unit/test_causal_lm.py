"""Decoder LLMs on a tiny random Llama (GQA, tied embeddings, no pad token): export with the KV cache,
prefill/decode through ONNX Runtime and torch, perplexity, 4-bit with the tied head, and pruning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS

import slimline
from slimline.benchmarking.budgets import metric_value
from slimline.benchmarking.decode import decode_results
from slimline.benchmarking.evaluators.base import EvalContext, get_evaluator
from slimline.benchmarking.latency import summarize
from slimline.benchmarking.results_model import CandidateResult
from slimline.benchmarking.runners import RunnerSpec, make_runner
from slimline.compression.base import ModelInfo
from slimline.compression.catalogue import registry
from slimline.core.artifact import ModelDir
from slimline.core.tokenizers import load_tokenizer
from slimline.formats.causal_lm import OrtDecoder, TorchDecoder, greedy_generate
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Measurement, Shape, Target, load_profile

QUICK = Measurement(warmup_iters=1, min_iters=5, min_time_s=0.0, max_time_s=5.0, decode_tokens=6)


@pytest.fixture(scope="module")
def llama_onnx(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return slimline.export(tiny_llama, out=tmp_path_factory.mktemp("llama-onnx") / "onnx")


def runner(model: ModelDir, runtime: str, inputs: list) -> object:
    return make_runner(RunnerSpec(label=runtime, runtime=runtime, model_path=str(model.model_path),
                                  model_dir=str(model.path), model_format=model.manifest.format,
                                  task="text-generation", threads=1, inputs=inputs,
                                  shapes=[Shape(batch_size=1, sequence_length=10)], measurement=QUICK))


def test_padless_tokenizer_pads_with_eos_and_says_so(tiny_llama: Path) -> None:
    tokenizer, note = load_tokenizer(tiny_llama)
    encoded = tokenizer(["the film", "the film was not good"], padding=True, return_tensors="np")
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert "EOS" in note and encoded["attention_mask"].sum() == 2 + 5


def test_llama_export_has_kv_cache_one_embedding_matrix_and_decode_parity(llama_onnx: ModelDir) -> None:
    metadata = llama_onnx.manifest.metadata
    names = {spec.name for spec in llama_onnx.manifest.inputs}
    assert {"input_ids", "attention_mask", "position_ids", "past_key_values.0.key"} <= names
    assert metadata["kv_cache"] is True
    assert metadata["tied_embeddings"] == {"tie_word_embeddings": True, "embedding_matrices": 1, "kept_tied": True}
    parity = metadata["parity"]
    assert "EOS" in parity["padding"]  # the real-sentence batch was padded, not skipped
    assert parity["decode"]["token_agreement"] == 1.0 and parity["decode"]["max_abs_diff"] < 1e-3


def test_ort_decoder_generates_the_torch_tokens_from_the_cache(tiny_llama: Path, llama_onnx: ModelDir) -> None:
    import onnxruntime as ort

    config = json.loads((tiny_llama / "config.json").read_text())
    prompt = np.array([[1, 5, 9, 12, 7, 3], [1, 8, 8, 20, 4, 6]])
    session = ort.InferenceSession(str(llama_onnx.model_path), providers=["CPUExecutionProvider"])
    ours = greedy_generate(OrtDecoder(session, config), prompt, None, 10)
    theirs = greedy_generate(TorchDecoder(load_hf_model(tiny_llama, "text-generation")), prompt, None, 10)
    assert ours.tokens.shape == (2, 10) and len(ours.step_ms) == 9
    np.testing.assert_array_equal(ours.tokens, theirs.tokens)
    assert ours.decode_tokens_per_s() > 0


def test_bench_reports_prefill_and_decode_for_both_runtimes(tiny_llama: Path, llama_onnx: ModelDir) -> None:
    config = json.loads((tiny_llama / "config.json").read_text())
    shapes = [Shape(batch_size=1, sequence_length=10)]
    inputs = llama_onnx.manifest.inputs
    for model, runtime in ((llama_onnx, "onnxruntime"), (open_checkpoint(tiny_llama), "torch")):
        decode = decode_results(runner(model, runtime, inputs), config, shapes, QUICK, seed=0)
        stats = decode["b1_s10"]
        assert stats["new_tokens"] == 6 and stats["prompt_tokens"] == 10 and stats["runs"] >= 3
        assert stats["prefill_p50_ms"] > 0 and stats["decode_tokens_per_s"] > 0
    result = CandidateResult(label="x", runtime="onnxruntime", format="onnx", model_dir=".",
                             latency={"b1_s10": summarize([1.0, 2.0], 1)},
                             size_mb=1, peak_rss_mb=1, load_s=0, decode=decode, decode_speedup_vs_baseline=2.5)
    assert metric_value("decode_tokens_per_s", result)[0] == stats["decode_tokens_per_s"]
    assert metric_value("prefill_p50_ms", result)[0] == stats["prefill_p50_ms"]
    assert metric_value("decode_speedup_vs_baseline", result)[0] == 2.5


def test_perplexity_is_runtime_independent_and_damage_raises_it(tiny_llama: Path, llama_onnx: ModelDir,
                                                                 tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(rng.choice(WORDS, size=400)))
    evaluator = get_evaluator("perplexity")
    npz = tmp_path / "ppl.npz"
    context = EvalContext(model=open_checkpoint(tiny_llama), inputs=llama_onnx.manifest.inputs,
                          shape=Shape(sequence_length=32), max_samples=6)
    facts = evaluator.prepare(str(text), context, npz)
    assert facts["windows"] == 6 and facts["window_tokens"] == 32
    onnx_run = runner(llama_onnx, "onnxruntime", llama_onnx.manifest.inputs).run
    torch_run = runner(open_checkpoint(tiny_llama), "torch", llama_onnx.manifest.inputs).run
    ours, theirs = evaluator.score(onnx_run, npz, 4, None), evaluator.score(torch_run, npz, 4, None)
    assert ours.metrics["perplexity"] == pytest.approx(theirs.metrics["perplexity"], rel=1e-4)
    same = evaluator.compare(ours, theirs, npz)
    assert abs(same["perplexity_increase_pct"]) < 0.01 and same["continuation_agreement_pct"] == 100.0

    def damaged(feeds: dict[str, np.ndarray]) -> np.ndarray:
        logits = torch_run(feeds)
        return logits + np.random.default_rng(1).normal(0, 3.0, size=logits.shape).astype(np.float32)

    worse = evaluator.compare(evaluator.score(damaged, npz, 4, None), theirs, npz)
    assert worse["perplexity_increase_pct"] > 10 and worse["continuation_agreement_pct"] < 100


def test_int4_quantizes_the_tied_lm_head_and_still_decodes(tiny_llama: Path, llama_onnx: ModelDir,
                                                            tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    int4 = slimline.compress(llama_onnx.path, recipe="llm-int4", profile="llm-cpu", out=tmp_path / "int4")
    quantization = int4.manifest.metadata["quantization"]
    assert quantization["accuracy_level"] == 4
    assert quantization["materialized_transposed_weights"] == ["/lm_head/MatMul"]
    nodes = onnx.load(str(int4.model_path)).graph.node
    assert not [n for n in nodes if n.op_type == "MatMul" and "lm_head" in n.name]  # it became MatMulNBits
    assert {"MatMulNBits", "GatherBlockQuantized"} <= {n.op_type for n in nodes}
    config = json.loads((tiny_llama / "config.json").read_text())
    session = ort.InferenceSession(str(int4.model_path), providers=["CPUExecutionProvider"])
    generation = greedy_generate(OrtDecoder(session, config), np.array([[1, 5, 9, 12]]), None, 5)
    assert generation.tokens.shape == (1, 5)


def test_the_llm_profile_default_stores_8_bit_matmul_blocks(llama_onnx: ModelDir, tmp_path: Path) -> None:
    import onnx

    int8 = slimline.compress(llama_onnx.path, recipe=load_profile("llm-cpu").recipe, profile="llm-cpu",
                             out=tmp_path / "int8")
    assert int8.manifest.metadata["quantization"]["scheme"] == "int8-weight-only"
    nodes = [n for n in onnx.load(str(int8.model_path)).graph.node if n.op_type == "MatMulNBits"]
    assert nodes and {a.i for n in nodes for a in n.attribute if a.name == "bits"} == {8}
    assert {a.i for n in nodes for a in n.attribute if a.name == "accuracy_level"} == {4}


def test_8_bit_blocks_refuse_the_4_bit_only_gather() -> None:
    from pydantic import ValidationError

    config_class = registry()["quantize.ort-int4-weight-only"].Config
    with pytest.raises(ValidationError, match="op_types: \\[MatMul\\]"):
        config_class(bits=8)


def test_structured_pruning_removes_whole_kv_groups_and_mlp_channels(tiny_llama: Path, tmp_path: Path) -> None:
    pruned = slimline.compress(tiny_llama, recipe=[{"pass": "prune.structured",
                                                   "with": {"heads_ratio": 0.5, "ffn_ratio": 0.5}}],
                               profile="llm-cpu", out=tmp_path / "pruned")
    config = json.loads((pruned.path / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (2, 1, 12)
    assert config["intermediate_size"] == 48
    facts = pruned.manifest.metadata["pruning"]
    assert facts["queries_per_kv_head"] == 2 and len(facts["kv_groups_kept"]) == 4
    model = load_hf_model(pruned.path, "text-generation")  # reloads from safetensors alone
    generation = greedy_generate(TorchDecoder(model), np.array([[1, 5, 9]]), None, 4)
    assert generation.tokens.shape == (1, 4)


def test_structured_pruning_refuses_per_layer_options_on_a_decoder() -> None:
    pass_class = registry()["prune.structured"]
    pass_ = pass_class(pass_class.Config(heads_ratio=0.5, heads_ratio_per_layer={0: 0.5}))
    problems = pass_.check(ModelInfo("hf", "text-generation", "llama"), Target())
    assert [p for p in problems if p.severity == "error" and "KV groups" in p.message]


def test_layer_dropping_on_llama_reloads_and_decodes(tiny_llama: Path, tmp_path: Path) -> None:
    shallow = slimline.compress(tiny_llama, recipe=[{"pass": "prune.layers", "with": {"keep": [0, 3]}}],
                                profile="llm-cpu", out=tmp_path / "shallow")
    model = load_hf_model(shallow.path, "text-generation")
    assert model.config.num_hidden_layers == 2
    generation = greedy_generate(TorchDecoder(model), np.array([[1, 5, 9]]), None, 4)
    assert generation.tokens.shape == (1, 4)


def test_llm_profile_budgets_fit_a_4bit_1b_model() -> None:
    profile = load_profile("llm-cpu")
    assert profile.budgets["size_mb"].limit >= 600  # 1B parameters at 4 bits with scales
    assert profile.budgets["perplexity_increase_pct"].limit == 10
    assert profile.budgets["decode_speedup_vs_baseline"].limit == 2.0


def test_serve_generates_from_a_causal_lm_bundle_and_predict_points_there(llama_onnx: ModelDir,
                                                                          tmp_path: Path) -> None:
    import asyncio

    import httpx

    from slimline.deploy.bundle import package
    from slimline.deploy.manifest import read_manifest
    from slimline.serve.app import create_app
    from slimline.serve.generator import Generator

    root = Path(package(llama_onnx.path, tmp_path / "bundle", name="tiny-llama").path)
    generator = Generator(root, read_manifest(root), threads=1)
    app = create_app(generator)

    async def exchange() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://local") as client:
            return [await client.post("/v1/generate", json={"prompt": "the film was", "max_new_tokens": 5}),
                    await client.post("/v1/predict", json={"texts": ["the film"]}),
                    await client.post("/v1/generate", json={"prompt": 3})]

    generated, predicted, invalid = asyncio.run(exchange())
    assert generated.status_code == 200
    body = generated.json()
    assert body["prompt_tokens"] == 3 and 1 <= body["new_tokens"] <= 5 and body["decode_tokens_per_s"] >= 0
    assert body["text"] == generator.generate("the film was", 5).text  # deterministic greedy decoding
    assert predicted.status_code == 404 and "/v1/generate" in predicted.json()["error"]["message"]
    assert invalid.status_code == 422 and "prompt" in invalid.json()["error"]["message"]
