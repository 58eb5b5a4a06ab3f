"""Recipes: every mistake is a RecipeError raised at load or plan time, before any pass runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slimline.compression import base
from slimline.compression.base import ModelInfo, Pass, PassConfig, PassResult
from slimline.compression.catalogue import registry
from slimline.compression.quantize.ort_int8_dynamic import Int8DynamicConfig, OrtInt8Dynamic
from slimline.compression.recipe import RecipeStep, load_recipe, order_problems, parse_recipe
from slimline.core.errors import EXIT_BAD_INPUT, RecipeError
from slimline.profiles.schema import Target

INT8 = "quantize.ort-int8-dynamic"
TEST_TORCH_PASS = "test.torch-noop"
CPU = Target(device="cpu", runtime="onnxruntime")
REPO = Path(__file__).resolve().parents[2]


class _NoopConfig(PassConfig):
    sparsity: float = 0.5


class _TorchNoop(Pass):
    """A torch-level pass used only here, to build recipes that order passes impossibly."""

    name = TEST_TORCH_PASS
    Config = _NoopConfig
    stage = "torch"
    accepts = frozenset({"hf"})
    produces = "hf"

    def apply(self, model, out_dir, context) -> PassResult:  # pragma: no cover - never run
        raise AssertionError("a pass must not run while a recipe is being checked")


@pytest.fixture
def torch_noop_registered(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the fake pass for one test; monkeypatch removes it again so it never leaks."""
    registry()  # discover the real passes first
    monkeypatch.setitem(base._REGISTRY, TEST_TORCH_PASS, _TorchNoop)
    return TEST_TORCH_PASS


def _step(index: int, pass_: Pass) -> RecipeStep:
    return RecipeStep(index, pass_)


def test_the_int8_dynamic_pass_is_registered() -> None:
    assert registry()[INT8] is OrtInt8Dynamic


def test_a_valid_recipe_parses_into_configured_steps() -> None:
    steps = parse_recipe([{"pass": INT8, "with": {"per_channel": True}}], "test")
    assert [s.name for s in steps] == [INT8]
    assert steps[0].config_dict() == Int8DynamicConfig(per_channel=True).model_dump(mode="json")
    assert steps[0].config_dict()["per_channel"] is True


@pytest.mark.parametrize("data", [None, []])
def test_an_empty_recipe_has_no_steps(data: object) -> None:
    assert parse_recipe(data, "test") == []


def test_a_recipe_may_be_a_mapping_with_passes() -> None:
    assert [s.name for s in parse_recipe({"passes": [{"pass": INT8}]}, "test")] == [INT8]


def test_an_unknown_pass_is_rejected_with_a_did_you_mean() -> None:
    with pytest.raises(RecipeError, match=r"unknown pass 'quantize\.ort-int8-dynamc'") as caught:
        parse_recipe([{"pass": "quantize.ort-int8-dynamc"}], "recipe.yaml")
    message = str(caught.value)
    assert f"did you mean '{INT8}'" in message
    assert "recipe.yaml step 1" in message
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_an_unknown_pass_unlike_any_known_one_lists_the_known_passes() -> None:
    with pytest.raises(RecipeError, match="known passes: ") as caught:
        parse_recipe([{"pass": "zzz"}], "test")
    assert "did you mean" not in str(caught.value)
    assert INT8 in str(caught.value)


def test_a_misspelled_option_is_rejected_naming_it_and_the_valid_options() -> None:
    with pytest.raises(RecipeError, match="'per_chanel': Extra inputs are not permitted") as caught:
        parse_recipe([{"pass": INT8}, {"pass": INT8, "with": {"per_chanel": True}}], "recipe.yaml")
    message = str(caught.value)
    assert "recipe.yaml step 2" in message
    assert all(field in message for field in Int8DynamicConfig.model_fields)


def test_an_option_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(RecipeError, match="'weight_type'"):
        parse_recipe([{"pass": INT8, "with": {"weight_type": "int4"}}], "test")


@pytest.mark.parametrize("raw", [
    INT8,
    [INT8],
    {"with": {"per_channel": True}},
    {"pass": INT8, "options": {}},
    {"passs": INT8},
])
def test_a_step_of_the_wrong_shape_is_rejected(raw: object) -> None:
    with pytest.raises(RecipeError, match="step 1"):
        parse_recipe([raw], "test")


@pytest.mark.parametrize("options", [[{"per_channel": True}], "per_channel", 3])
def test_with_must_be_a_mapping(options: object) -> None:
    with pytest.raises(RecipeError, match="'with' must be a mapping"):
        parse_recipe([{"pass": INT8, "with": options}], "test")


@pytest.mark.parametrize("data", ["quantize.ort-int8-dynamic", 42])
def test_a_recipe_that_is_not_a_list_is_rejected(data: object) -> None:
    with pytest.raises(RecipeError, match="must be a list of steps"):
        parse_recipe(data, "test")


@pytest.mark.parametrize("data", [{"steps": []}, {"passes": [], "pases": []}, {"description": "no passes"}])
def test_a_recipe_mapping_with_unknown_or_missing_top_level_keys_is_rejected(data: object) -> None:
    with pytest.raises(RecipeError, match="it takes 'passes'"):
        parse_recipe(data, "test")


def test_load_recipe_reads_yaml_and_rejects_missing_or_broken_files(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"- pass: {INT8}\n  with: {{reduce_range: true}}\n")
    assert load_recipe(good)[0].config_dict()["reduce_range"] is True
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("- pass: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(broken)


def test_a_torch_pass_after_an_onnx_pass_is_an_ordering_problem() -> None:
    int8 = OrtInt8Dynamic(Int8DynamicConfig())
    noop = _TorchNoop(_NoopConfig())
    problems = order_problems([_step(0, noop), _step(1, int8), _step(2, noop)])
    assert len(problems) == 1
    assert f"step 3 ({TEST_TORCH_PASS})" in problems[0] and f"step 2 ({INT8})" in problems[0]
    assert order_problems([_step(0, noop), _step(1, noop), _step(2, int8), _step(3, int8)]) == []


def test_a_registered_torch_pass_parses_and_its_misordering_is_found(torch_noop_registered: str) -> None:
    steps = parse_recipe([{"pass": INT8}, {"pass": torch_noop_registered, "with": {"sparsity": 0.3}}], "test")
    assert [s.pass_.stage for s in steps] == ["onnx", "torch"]
    assert order_problems(steps)


def test_the_test_only_pass_does_not_leak_into_the_registry() -> None:
    assert TEST_TORCH_PASS not in registry()


def test_registering_a_custom_pass_first_does_not_hide_the_built_in_passes(tmp_path: Path) -> None:
    """A user's own @register'd pass, imported before the registry is first read, must not stop discovery."""
    script = textwrap.dedent(f"""
        from slimline.compression.base import Pass, PassConfig, register
        from slimline.compression.catalogue import registry

        @register("user.custom")
        class Custom(Pass):
            Config = PassConfig
            stage = "torch"
            accepts = frozenset({{"hf"}})
            produces = "hf"
            def apply(self, model, out_dir, context):
                raise NotImplementedError

        names = registry()
        assert "user.custom" in names, names
        assert "{INT8}" in names, f"built-in passes hidden by a custom registration: {{sorted(names)}}"
    """)
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                               check=False, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_int8_dynamic_accepts_an_onnx_model_on_a_cpu_onnxruntime_target() -> None:
    problems = OrtInt8Dynamic(Int8DynamicConfig()).check(ModelInfo("onnx", "text-classification", "bert"), CPU)
    assert problems == []


def test_int8_dynamic_refuses_a_cuda_onnxruntime_target() -> None:
    target = Target(device="cuda", runtime="onnxruntime", precision="int8")
    problems = OrtInt8Dynamic(Int8DynamicConfig()).check(ModelInfo("onnx", "text-classification"), target)
    assert [p.severity for p in problems] == ["error"]
    assert "CUDA" in problems[0].message and "#12229" in problems[0].message
    assert problems[0].pass_name == INT8


def test_int8_dynamic_refuses_a_hugging_face_input() -> None:
    problems = OrtInt8Dynamic(Int8DynamicConfig()).check(ModelInfo("hf", "text-classification"), CPU)
    assert [p.severity for p in problems] == ["error"]
    assert "gets a hf model" in problems[0].message


def test_int8_dynamic_refuses_a_torch_runtime_target() -> None:
    problems = OrtInt8Dynamic(Int8DynamicConfig()).check(ModelInfo("onnx", "text-classification"),
                                                         Target(device="cpu", runtime="torch"))
    assert any("runtime is torch" in p.message for p in problems)
