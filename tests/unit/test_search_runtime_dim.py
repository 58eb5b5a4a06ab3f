"""The runtime as a search dimension, and trials refused before anything is built."""

from __future__ import annotations

import pytest

from slimline.compression.search_space_files import load_search_space
from slimline.core.errors import MissingDependency
from slimline.pipeline.search import runtime_dim
from slimline.pipeline.search.runtime_dim import estimate_size_mb, pre_build_problem, profile_for_recipe, recipe_format
from slimline.profiles.schema import Profile, load_profile

#: all-MiniLM-L6's shape: the demo checkpoint (its fp32 ONNX export is 90.9 MB; dynamic INT8 with the
#: embeddings ~23 MB; static INT8 without them 58.8 MB, with them 23.1 MB, measured on a random-init copy).
MINILM = {"hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536, "vocab_size": 30522,
          "max_position_embeddings": 512, "type_vocab_size": 2, "id2label": {"0": "neg", "1": "pos"}}
FUSED_DYNAMIC = [{"pass": "optimize.ort-transformers"}, {"pass": "quantize.ort-int8-dynamic"}]
STATIC = [{"pass": "quantize.ort-int8-static", "with": {"op_types": ["MatMul", "Gemm"]}}]
STATIC_GATHER = [{"pass": "quantize.ort-int8-static", "with": {"op_types": ["MatMul", "Gemm", "Gather"]}}]
NNCF = [{"pass": "quantize.nncf-int8"}, {"pass": "convert.openvino-precision"}]
STUDENT = [{"pass": "prune.structured", "with": {"heads_ratio": 0.5, "ffn_ratio": 0.5}},
           {"pass": "distill.kd", "with": {"max_steps": 800}}]


@pytest.mark.parametrize(("recipe", "measured_mb"), [
    ([], 90.9), (FUSED_DYNAMIC, 23.0), (STATIC, 58.8), (STATIC_GATHER, 23.1), (NNCF, 23.0),
])
def test_the_size_estimate_is_within_ten_percent_of_measured_artifacts(recipe: list, measured_mb: float) -> None:
    estimate = estimate_size_mb(recipe, MINILM)
    assert estimate is not None and abs(estimate - measured_mb) / measured_mb < 0.10, (estimate, measured_mb)


def test_pruning_shrinks_the_estimate_but_not_the_embedding_table() -> None:
    full, student = estimate_size_mb(STATIC, MINILM), estimate_size_mb([*STUDENT, *STATIC], MINILM)
    assert student < full
    embeddings_mb = (30522 + 512 + 2) * 384 * 4 / 1e6
    assert student > embeddings_mb  # static INT8 without Gather keeps the fp32 table: no student fits 40 MB


def test_unknown_schemes_and_architectures_are_not_estimated() -> None:
    assert estimate_size_mb([{"pass": "quantize.bnb-nf4"}], MINILM) is None
    assert estimate_size_mb(STATIC, {"model_type": "resnet"}) is None


def test_a_trial_that_cannot_fit_size_mb_is_refused_before_building() -> None:
    profile = Profile.model_validate({**load_profile("cpu").model_dump(mode="json"),
                                      "budgets": {"size_mb": {"max": 40}}})
    problem = pre_build_problem([*STUDENT, *STATIC], profile, MINILM)
    assert problem and "estimated size" in problem and "size_mb budget 40" in problem
    assert pre_build_problem([*STUDENT, *STATIC_GATHER], profile, MINILM) is None
    assert pre_build_problem(STATIC, profile, {}) is None  # no architecture: nothing is known to fail


def test_a_trial_whose_runtime_is_missing_is_refused_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.runtimes import get_runtime

    def missing(target, purpose):
        raise MissingDependency("openvino cannot be imported", fix="pip install 'slimline[openvino]'")

    monkeypatch.setattr(get_runtime("openvino"), "check_available", missing)
    problem = pre_build_problem(NNCF, load_profile("cpu"), MINILM)
    assert problem and "openvino" in problem and "slimline[openvino]" in problem
    assert pre_build_problem(FUSED_DYNAMIC, load_profile("cpu"), MINILM) is None


def test_a_trial_runs_on_the_runtime_that_loads_what_its_recipe_makes() -> None:
    profile = load_profile("cpu")
    assert recipe_format(FUSED_DYNAMIC) == "onnx" and recipe_format(NNCF) == "openvino"
    assert profile_for_recipe(profile, FUSED_DYNAMIC).target.runtime == "onnxruntime"
    on_openvino = profile_for_recipe(profile, NNCF).target
    assert on_openvino.runtime == "openvino" and on_openvino.runtime_options == {"performance_hint": "latency"}
    assert runtime_dim.get_runtime(on_openvino.runtime).loads >= {"openvino"}


def test_the_cpu_space_offers_openvino_and_quantizes_embeddings_in_static_int8() -> None:
    space = load_search_space("cpu")
    quantization = next(b for b in space.steps if getattr(b, "name", "") == "quantization")
    assert {"openvino-int8", "openvino-bf16"} <= set(quantization.options)
    assert "openvino-bf16" not in quantization.offered(["avx2", "avx512_vnni"])
    static = quantization.options["static-qdq"].steps[0]
    assert "Gather" in static.options["op_types"]
