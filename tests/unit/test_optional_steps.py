"""Optional recipe steps: `optional: true` is validated like every key, and a pure speed-up that cannot apply
is skipped with a line that says why, while a required step still refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimline.compression.base import ModelInfo
from slimline.compression.optimize.ort_transformers import ORT_MODEL_TYPES
from slimline.compression.recipe import (
    SkippedStep,
    load_recipe,
    optional_skip,
    parse_recipe,
    recipe_as_data,
    recipe_with_skipped,
)
from slimline.compression.search_space import parse_steps, sample_blocks
from slimline.core.errors import RecipeError
from slimline.profiles.schema import RECIPES_DIR, Target

FUSION, INT8 = "optimize.ort-transformers", "quantize.ort-int8-dynamic"
CPU = Target(device="cpu", runtime="onnxruntime")


def test_a_step_may_be_marked_optional_and_keeps_the_mark_in_its_data() -> None:
    steps = parse_recipe([{"pass": FUSION, "optional": True}, {"pass": INT8}], "test")
    assert [s.optional for s in steps] == [True, False]
    data = recipe_as_data(steps)
    assert data[0]["optional"] is True and "optional" not in data[1]
    assert [s.optional for s in parse_recipe(data, "round trip")] == [True, False]


@given(st.one_of(st.text(max_size=5), st.integers(), st.none(), st.lists(st.booleans(), max_size=2)))
def test_optional_must_be_a_boolean(value: object) -> None:
    with pytest.raises(RecipeError, match="'optional' must be true or false"):
        parse_recipe([{"pass": FUSION, "optional": value}], "test")


def test_a_misspelled_optional_key_is_refused_naming_the_keys_a_step_takes() -> None:
    with pytest.raises(RecipeError, match="'pass' and optionally 'with' and 'optional'"):
        parse_recipe([{"pass": FUSION, "optionl": True}], "test")


@pytest.mark.parametrize("name", ["cpu-int8-dynamic", "cpu-fast", "gpu-fp16"])
def test_fusion_is_optional_in_every_shipped_recipe(name: str) -> None:
    fusion = [s for s in load_recipe(name) if s.name == FUSION]
    assert fusion and all(s.optional for s in fusion)


def test_no_shipped_recipe_has_a_required_fusion_step() -> None:
    for path in RECIPES_DIR.glob("*.yaml"):
        assert all(s.optional for s in load_recipe(path) if s.name == FUSION), path


@pytest.mark.parametrize("model_type", ["deberta-v2", "mpnet", "modernbert", None])
def test_optional_fusion_is_skipped_with_a_line_where_ort_has_no_rules(model_type: str | None) -> None:
    step = parse_recipe([{"pass": FUSION, "optional": True}], "test")[0]
    skip = optional_skip(step, step.pass_.check(ModelInfo("onnx", "text-classification", model_type), CPU))
    assert isinstance(skip, SkippedStep)
    assert skip.line.startswith(f"fusion: not available for {model_type or 'this model'}")
    assert "continuing unfused" in skip.line and "optional step 1" in skip.line


def test_a_required_fusion_step_still_refuses_where_ort_has_no_rules() -> None:
    step = parse_recipe([{"pass": FUSION}], "test")[0]
    problems = step.pass_.check(ModelInfo("onnx", "text-classification", "deberta-v2"), CPU)
    assert optional_skip(step, problems) is None
    assert any(p.severity == "error" and "optional: true" in (p.fix or "") for p in problems)


def test_an_optional_step_that_applies_is_not_skipped() -> None:
    step = parse_recipe([{"pass": FUSION, "optional": True}], "test")[0]
    assert optional_skip(step, step.pass_.check(ModelInfo("onnx", "text-classification", "bert"), CPU)) is None


def test_the_report_recipe_keeps_skipped_steps_in_their_place() -> None:
    steps = parse_recipe([{"pass": FUSION, "optional": True}, {"pass": INT8}], "test")
    skipped = [SkippedStep(steps[0], "not available")]
    assert [s.name for s in recipe_with_skipped(steps[1:], skipped)] == [FUSION, INT8]


@pytest.mark.parametrize("family", ["mpnet", "deberta", "deberta-v2", "modernbert"])
def test_families_whose_attention_ort_cannot_fuse_are_not_mapped(family: str) -> None:
    """MPNet was mapped to bert and failed after the export with 0 attention blocks fused (issue 20)."""
    assert family not in ORT_MODEL_TYPES


def test_every_mapped_type_is_one_of_ort_s_own_optimizer_types() -> None:
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    assert set(ORT_MODEL_TYPES.values()) <= set(MODEL_TYPES)


def test_a_search_space_pass_step_may_be_optional_and_samples_it_so() -> None:
    blocks = parse_steps([{"pass": FUSION, "optional": True}, {"pass": INT8}], "space", "")
    sampled = sample_blocks(blocks, None, [])  # type: ignore[arg-type]  # no parameters: nothing is suggested
    assert sampled[0]["optional"] is True and "optional" not in sampled[1]
    with pytest.raises(RecipeError, match="`optional` must be true or false"):
        parse_steps([{"pass": FUSION, "optional": "yes"}], "space", "")


@pytest.fixture(scope="module")
def vit_onnx(tiny_vit, tmp_path_factory: pytest.TempPathFactory):
    """ViT: ORT has a vit type, but fuses no attention of today's export (a run-time skip, not a plan-time one)."""
    from slimline.pipeline.single import export_to

    return export_to(tiny_vit, tmp_path_factory.mktemp("vit-onnx") / "model")


def _compress(model, out, steps):
    from slimline.pipeline.single import compress_to
    from slimline.profiles.schema import load_profile

    return compress_to(model.path, out, parse_recipe(steps, "test"), load_profile("cpu"))


def test_compress_skips_optional_fusion_that_fuses_nothing_and_records_it(vit_onnx, tmp_path) -> None:
    out = _compress(vit_onnx, tmp_path / "out", [{"pass": FUSION, "optional": True}, {"pass": INT8}])
    [skipped] = out.manifest.metadata["skipped_steps"]
    assert skipped["pass"] == FUSION and skipped["step"] == 1
    assert "0 attention blocks fused" in skipped["reason"]
    assert skipped["line"].startswith("fusion: not available for vit")
    assert [s.name for s in out.manifest.lineage if s.kind == "pass"] == [INT8]
    out.verify()  # the manifest rewritten with the note still hashes every file


def test_compress_fails_a_required_fusion_that_fuses_nothing(vit_onnx, tmp_path) -> None:
    from slimline.core.errors import EXIT_STAGE_FAILED, StepNotApplicable

    with pytest.raises(StepNotApplicable, match="0 attention blocks were fused") as caught:
        _compress(vit_onnx, tmp_path / "out", [{"pass": FUSION}, {"pass": INT8}])
    assert caught.value.exit_code == EXIT_STAGE_FAILED and "optional: true" in (caught.value.fix or "")
    assert not (tmp_path / "out").exists()


def test_compress_whose_only_step_is_skipped_writes_nothing(vit_onnx, tmp_path) -> None:
    from slimline.core.errors import PassError

    with pytest.raises(PassError, match="no step of the recipe applied"):
        _compress(vit_onnx, tmp_path / "out", [{"pass": FUSION, "optional": True}])
    assert not (tmp_path / "out").exists()
