"""`target.runtime: auto`: the candidates a profile lists, how the plan treats them, and how one is chosen."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from slimline.compression.recipe import parse_recipe
from slimline.core.errors import RecipeError
from slimline.pipeline import runtime_choice
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.runtime_choice import _choose
from slimline.profiles.schema import Profile, Target, load_profile

REPO = Path(__file__).resolve().parents[2]
AUTO = REPO / "tests" / "fixtures" / "fast-cpu-auto.yaml"


def _target(**fields) -> Target:
    return Target.model_validate({"device": "cpu", "runtime": "auto", **fields})


def test_auto_needs_candidates_and_resolves_to_the_first_ones_runtime() -> None:
    with pytest.raises(ValidationError, match=r"needs target\.candidates"):
        _target()
    target = _target(candidates=[{"runtime": "openvino", "recipe": "openvino-int8"},
                                 {"runtime": "onnxruntime", "recipe": "cpu-int8-dynamic"}])
    assert target.runtime == "openvino" and len(target.candidates) == 2
    assert Target.model_validate(target.model_dump(mode="json")) == target  # reports re-read their profile


@pytest.mark.parametrize(("candidates", "message"), [
    ([{"runtime": "tensorrt"}], "needs device 'cuda'"),
    ([{"runtime": "onnxruntime", "requires": {"avx9000": True}}], "unknown CPU capabilities"),
    ([{"runtime": "onnxruntime", "label": "a"}, {"runtime": "openvino", "label": "a"}], "distinct labels"),
    ([{"runtime": "nope"}], "unknown runtime"),
])
def test_bad_candidates_are_refused_with_the_reason(candidates: list, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _target(candidates=candidates)


@given(st.dictionaries(st.sampled_from(["vnni", "bf16", "amx", "amx_int8", "amx_bf16", "avx512_bf16"]),
                       st.booleans()))
def test_any_known_capability_requirement_validates_and_round_trips(requires: dict) -> None:
    target = _target(candidates=[{"runtime": "openvino", "requires": requires}])
    assert Target.model_validate(target.model_dump(mode="json")).candidates[0].requires == requires


def test_the_default_cpu_profile_chooses_among_onnx_runtime_and_openvino() -> None:
    profile = load_profile("cpu")
    runtimes = [c.runtime for c in profile.target.candidates]
    assert runtimes[0] == "onnxruntime" and "openvino" in runtimes
    assert profile.target.runtime == "onnxruntime"  # explicit recipes, `compress`, `bench` without a choice
    assert set(runtime_choice.candidate_recipes(profile)) == {c.name() for c in profile.target.candidates}


def _rows(*rows: tuple[str, float, float, float]) -> list[dict]:
    return [{"label": label, "runtime": "x", "p50_ms": p50, "p95_ms": p50 * 1.1, "size_mb": size, "drop_pt": drop}
            for label, p50, size, drop in rows]


def _profile(**budgets: dict) -> Profile:
    return Profile(name="t", budgets=budgets)


def test_the_fastest_candidate_within_every_budget_is_chosen() -> None:
    rows = _rows(("ort", 10.0, 20.0, 0.5), ("ov-int8", 5.0, 15.0, 0.8), ("ov-bf16", 4.0, 60.0, 0.1))
    index, reason = _choose(rows, _profile(size_mb={"max": 40}, accuracy_drop_pt={"max": 1.0}))
    assert rows[index]["label"] == "ov-int8" and "fastest" in reason  # ov-bf16 is faster but breaks size_mb
    assert rows[2]["budget_failures"] == ["size_mb 60 > 40"]


def test_without_a_candidate_in_every_budget_accuracy_comes_first() -> None:
    rows = _rows(("ort", 10.0, 50.0, 0.5), ("ov-int8", 5.0, 50.0, 3.0))
    index, reason = _choose(rows, _profile(size_mb={"max": 40}, accuracy_drop_pt={"max": 1.0}))
    assert rows[index]["label"] == "ort" and "within the accuracy budget" in reason
    rows = _rows(("ort", 10.0, 20.0, 2.5), ("ov-int8", 5.0, 20.0, 3.0))
    index, reason = _choose(rows, _profile(accuracy_drop_pt={"max": 1.0}))
    assert rows[index]["label"] == "ort" and "most accurate" in reason


def test_latency_budgets_are_judged_on_the_side_by_side_percentiles() -> None:
    rows = _rows(("ort", 10.0, 20.0, 0.0), ("ov", 30.0, 20.0, 0.0))
    _choose(rows, _profile(latency_p95_ms={"max": 20}))
    assert rows[0]["budget_failures"] == [] and rows[1]["budget_failures"][0].startswith("latency_p95_ms 33")


def test_an_explicit_recipe_goes_to_the_first_candidate_runtime_that_can_run_it(tiny_bert: Path,
                                                                                 labelled_csv: Path,
                                                                                 tmp_path: Path) -> None:
    profile = load_profile(AUTO)
    steps = parse_recipe([{"pass": "convert.openvino-precision"}], "test")
    request = RunRequest(checkpoint=tiny_bert, profile=profile, out_dir=tmp_path / "out", recipe=steps)
    plan = plan_run(request)
    assert request.profile.target.runtime == "openvino" and not request.profile.target.candidates
    assert plan.choice.explicit_recipe and len(plan.choice.viable) == 1
    assert "cannot load" in plan.choice.skipped[0]["why"]  # onnxruntime was tried first and refused it
    with pytest.raises(RecipeError, match=r"convert\.fp16"):  # no candidate can: the first refusal, as it is
        plan_run(RunRequest(checkpoint=tiny_bert, profile=profile, out_dir=tmp_path / "out2",
                            recipe=parse_recipe([{"pass": "convert.fp16"}], "test")))


def test_the_plan_drops_candidates_this_cpu_cannot_serve_and_keeps_the_rest(tiny_bert: Path, labelled_csv: Path,
                                                                             tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.core.data import DatasetSpec

    monkeypatch.setattr(runtime_choice, "cpu_capabilities", lambda: {"kind": "avx2", "amx": False, "bf16": False,
                                                                     "vnni": False})
    request = RunRequest(checkpoint=tiny_bert, profile=load_profile(AUTO), out_dir=tmp_path / "out",
                         eval_data=DatasetSpec(source=str(labelled_csv)))
    plan = plan_run(request)
    labels = [c.candidate.name() for c in plan.choice.viable]
    assert labels == ["onnxruntime dynamic int8", "openvino nncf int8", "openvino float"]
    assert plan.choice.skipped == [{"label": "openvino on amx only",
                                    "why": "needs a CPU with amx=True, bf16=True (avx2 here)"}]
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_onnx_level_steps_in_a_choosing_profiles_recipe_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(AUTO.read_text())
    data["recipe"] = [{"pass": "quantize.ort-int8-dynamic"}]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="ONNX-level steps"):
        plan_run(RunRequest(checkpoint=tiny_bert, profile=load_profile(path), out_dir=tmp_path / "out"))


def test_measuring_an_existing_model_takes_the_candidate_runtime_that_loads_it() -> None:
    from slimline.pipeline.runtime_choice import profile_for_format

    profile = load_profile("cpu")
    assert profile_for_format(profile, "onnx") is profile
    on_openvino = profile_for_format(profile, "openvino").target
    assert on_openvino.runtime == "openvino" and not on_openvino.candidates
    assert on_openvino.runtime_options == {"performance_hint": "latency"}
    assert profile_for_format(profile, "tensorrt") is profile  # nothing loads it: bench says so with the fix


def test_a_candidate_whose_artifact_does_not_load_is_dropped_before_the_timing(tmp_path: Path) -> None:
    """OpenVINO's CPU plugin refuses DeBERTa's export only when it compiles it (an If with a dynamic rank): a
    candidate that built must also load, or the whole choice failed at the side-by-side timing (exit 3)."""
    from types import SimpleNamespace

    import onnx
    from onnx import TensorProto, helper

    from slimline.core.errors import PassError

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = SimpleNamespace(model_path=path, manifest=SimpleNamespace(inputs=[]))
    def candidate(runtime: str) -> SimpleNamespace:
        target = Target(device="cpu", runtime=runtime, threads=1)
        return SimpleNamespace(candidate=SimpleNamespace(runtime=runtime, name=lambda: f"{runtime} candidate"),
                               request=SimpleNamespace(profile=SimpleNamespace(target=target)))

    for runtime in ("onnxruntime", "openvino"):
        runtime_choice._check_loads(candidate(runtime), model)  # loads: nothing raised
    runtime_choice._check_loads(candidate("torch"), SimpleNamespace())  # nothing built to load: not asked
    path.write_bytes(b"not an ONNX graph")
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(PassError, match=f"{runtime} candidate: its artifact does not load on {runtime}"):
            runtime_choice._check_loads(candidate(runtime), model)
