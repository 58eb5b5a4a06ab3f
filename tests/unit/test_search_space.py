"""Search spaces: parsed and validated like recipes (exit-2 errors), sampled into plain recipes."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimline.compression.recipe import parse_recipe
from slimline.compression.search_space_files import list_spaces, load_search_space, parse_search_space
from slimline.core.errors import RecipeError

VNNI = ("avx2", "avx512_vnni")
AVX2 = ("avx2",)


class RandomSuggest:
    """Samples like a sampler would, from a seeded RNG, and records what it was asked."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.asked: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.asked[name] = choices
        return self.rng.choice(choices)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        self.asked[name] = (low, high, step)
        return low if step is None else low + step * self.rng.randint(0, round((high - low) / step))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.asked[name] = (low, high, step)
        return self.rng.randrange(low, high + 1, step)


def space(steps: list[Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": 1, "steps": steps, **extra}


@pytest.mark.parametrize("name", list_spaces(), ids=lambda name: f"space-{name}")  # a bare "gpu" id reads as the mark
def test_every_shipped_space_validates_and_samples_runnable_recipes(name: str) -> None:
    loaded = load_search_space(name)
    for seed in range(20):
        recipe = loaded.sample(RandomSuggest(seed), VNNI)
        parse_recipe(recipe, f"sample {seed}")  # plain values, valid for `slimline run --recipe`


def test_static_int8_is_offered_only_on_cpus_with_int8_dot_products() -> None:
    cpu = load_search_space("cpu")
    suggest = RandomSuggest(0)
    cpu.sample(suggest, AVX2)
    assert not any("static" in choice for choice in suggest.asked["quantization"])
    suggest = RandomSuggest(0)
    cpu.sample(suggest, VNNI)
    assert {"static-qdq", "static-qoperator"} <= set(suggest.asked["quantization"])


def test_the_cpu_space_starts_with_both_runtimes_int8_then_a_pruned_distilled_trial() -> None:
    cpu = load_search_space("cpu")
    assert [(trial["student"], trial["quantization"]) for trial in cpu.initial_trials] == [
        (False, "fused-dynamic"), (False, "openvino-int8"), (True, "fused-dynamic")]


def test_the_cpu_spaces_first_student_halves_the_depth_and_learns_the_teachers_hidden_states() -> None:
    """The student measured to keep accuracy best per millisecond saved (profiles/spaces/cpu.yaml says the numbers)."""
    from optuna.trial import FixedTrial

    cpu = load_search_space("cpu")
    first = next(trial for trial in cpu.initial_trials if trial["student"])
    recipe = cpu.sample(FixedTrial(cpu.encode_params(first)), VNNI)
    assert [step["pass"] for step in recipe[:2]] == ["prune.layers", "distill.kd"]
    assert recipe[0]["with"] == {"keep_every": 2}
    assert recipe[1]["with"]["alpha_hidden"] == 1.0 and recipe[1]["with"]["max_steps"] == 800


def test_ranges_choices_and_optional_blocks_become_plain_values() -> None:
    parsed = parse_search_space(space([
        {"optional": {"name": "student", "steps": [
            {"pass": "prune.structured", "with": {"heads_ratio": {"low": 0.25, "high": 0.5, "step": 0.25}}}]}},
        {"pass": "quantize.ort-int8-dynamic", "with": {"per_channel": {"choice": [False, True]},
                                                        "op_types": {"choice": [["MatMul"], ["MatMul", "Gemm"]]}}},
    ]), "test")
    seen_pruned = False
    for seed in range(30):
        recipe = parsed.sample(RandomSuggest(seed), AVX2)
        quantize = recipe[-1]["with"]
        assert quantize["per_channel"] in (False, True) and quantize["op_types"] in (["MatMul"], ["MatMul", "Gemm"])
        if recipe[0]["pass"] == "prune.structured":
            seen_pruned = True
            assert recipe[0]["with"]["heads_ratio"] in (0.25, 0.5)
    assert seen_pruned
    assert parsed.parameter_names() == {"student", "student/prune.structured:heads_ratio",
                                        "quantize.ort-int8-dynamic:per_channel", "quantize.ort-int8-dynamic:op_types"}


@pytest.mark.parametrize(("steps", "message"), [
    ([{"pass": "quantize.ort-int8-dynamic", "with": {"per_chanel": {"choice": [False, True]}}}], "per_chanel"),
    ([{"pass": "quantize.ort-int8-dynamic", "with": {"per_channel": {"choice": [False, "maybe"]}}}], "per_channel"),
    ([{"pass": "prune.structured", "with": {"heads_ratio": {"low": 0.5, "high": 0.25}}}], "impossible range"),
    ([{"pass": "prune.structured", "with": {"heads_ratio": {"low": 0.0, "high": 1.5, "step": 0.5}}}], "heads_ratio"),
    ([{"pass": "prune.structured", "with": {"heads_ratio": {"low": 0.1, "high": 0.5, "step": 0}}}], "step"),
    ([{"pass": "quantize.ort-int8-dynamic", "with": {"per_channel": {"choice": []}}}], "non-empty"),
    ([{"pass": "quantize.nope"}], "unknown pass"),
    ([{"one_of": {"name": "q", "options": {}}}], "options"),
    ([{"optional": {"name": "s", "steps": [], "extra": 1}}], "keys"),
    ([{"pass": "quantize.ort-int8-dynamic"}, {"pass": "prune.structured", "with": {"heads_ratio": 0.5}}],
     "cannot follow"),
    ([{"pass": "quantize.ort-int8-dynamic", "with": [1]}], "mapping"),
])
def test_an_invalid_space_is_refused_with_the_reason(steps: list[Any], message: str) -> None:
    with pytest.raises(RecipeError, match=message) as raised:
        parse_search_space(space(steps), "test")
    assert raised.value.exit_code == 2


def test_initial_trials_must_name_known_parameters() -> None:
    with pytest.raises(RecipeError, match="unknown parameter"):
        parse_search_space(space([{"pass": "quantize.ort-int8-dynamic"}], initial_trials=[{"stduent": True}]), "t")


def test_a_space_file_with_unknown_top_level_keys_is_refused(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"steps": [{"pass": "quantize.ort-int8-dynamic"}], "trials": 5}))
    with pytest.raises(RecipeError, match="mapping with `steps`"):
        load_search_space(path)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_hostile_space_files_fail_with_a_recipe_error_never_a_crash(data: Any) -> None:
    try:
        parse_search_space(data, "hostile")
    except RecipeError as err:
        assert err.exit_code == 2


def test_initial_trials_must_use_values_the_space_offers() -> None:
    steps = [{"pass": "quantize.ort-int8-dynamic", "with": {"per_channel": {"choice": [False, True]}}}]
    with pytest.raises(RecipeError, match="does not offer"):
        parse_search_space(space(steps, initial_trials=[{"quantize.ort-int8-dynamic:per_channel": "yes"}]), "t")


def test_a_trained_student_is_offered_under_every_other_scheme_of_this_cpu() -> None:
    space = load_search_space("cpu")
    assert space.student_key() == "student"
    params = {"student": True, "student/shrink": "depth", "student/distill.kd:max_steps": 800,
              "quantization": "fused-dynamic", "quantization=fused-dynamic/quantize.ort-int8-dynamic:per_channel": True}
    on_vnni = space.with_other_schemes(params, VNNI)
    kept = {"student": True, "student/shrink": "depth", "student/distill.kd:max_steps": 800}
    assert all({k: v for k, v in variant.items() if k != "quantization"} == kept for variant in on_vnni)
    assert {v["quantization"] for v in on_vnni} == {"static-qdq", "static-qoperator", "fused-int4", "openvino-int8"}
    assert {v["quantization"] for v in space.with_other_schemes(params, AVX2)} == {"fused-int4", "openvino-int8"}
    assert space.with_other_schemes({**params, "student": False}, VNNI) == []


def test_a_space_without_a_distilled_student_has_none_to_reuse() -> None:
    space = parse_search_space({"steps": [{"optional": {"name": "prune", "steps": [
        {"pass": "prune.structured", "with": {"heads_ratio": 0.5}}]}}, {"pass": "quantize.ort-int8-dynamic"}]}, "t")
    assert space.student_key() is None
    assert space.with_other_schemes({"prune": True}, VNNI) == []
