"""Profiles: the shipped YAMLs load, budgets take exactly one limit, every mistake is a ProfileError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from slimline.core.errors import EXIT_BAD_INPUT, ProfileError
from slimline.profiles.schema import BUDGET_METRICS, Budget, Profile, list_profiles, load_profile, parse_profile

KINDS = ("max", "min", "max_drop")
FIXTURE_PROFILE = Path(__file__).resolve().parents[1] / "fixtures" / "fast-cpu.yaml"
non_negative = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e9)


def _minimal(**overrides: object) -> dict:
    return {"schema_version": 1, "name": "t", "budgets": {"latency_p95_ms": {"max": 60}}, **overrides}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_profiles_include_the_documented_targets() -> None:
    assert {"cpu", "cpu-throughput", "gpu-t4"} <= set(list_profiles())


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_loads_and_its_recipe_parses(name: str) -> None:
    from slimline.compression.recipe import profile_recipe

    profile = load_profile(name)
    assert profile.name == name
    assert profile.budgets, "a shipped profile without budgets would always pass"
    profile_recipe(profile)


def test_the_test_fixture_profile_loads_by_path() -> None:
    profile = load_profile(FIXTURE_PROFILE)
    assert profile.name == "fast-cpu"
    assert profile.measurement.min_time_s == 0.0


@given(kinds=st.sets(st.sampled_from(KINDS)), value=non_negative)
def test_a_budget_is_valid_exactly_when_it_has_one_limit(kinds: set[str], value: float) -> None:
    data = {kind: value for kind in kinds}
    if len(kinds) == 1:
        budget = Budget.model_validate(data)
        assert budget.kind == next(iter(kinds))
        assert budget.limit == value
    else:
        with pytest.raises(ValidationError, match="exactly one of max / min / max_drop"):
            Budget.model_validate(data)


@given(kind=st.sampled_from(("max", "min")), value=non_negative)
def test_max_and_min_budgets_round_trip_any_finite_non_negative_limit(kind: str, value: float) -> None:
    budget = Budget.model_validate({kind: value})
    assert (budget.kind, budget.limit) == (kind, value)
    assert Budget.model_validate(budget.model_dump(exclude_none=True)) == budget


@given(kind=st.sampled_from(KINDS), value=st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
def test_a_negative_limit_is_rejected(kind: str, value: float) -> None:
    with pytest.raises(ValidationError):
        Budget.model_validate({kind: value})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", ".nan"])
def test_a_nan_or_infinite_limit_is_rejected_at_validation(kind: str, value: object, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"schema_version: 1\nname: t\nbudgets:\n  size_mb: {{{kind}: {value}}}\n"
                    if isinstance(value, str) else yaml.safe_dump(_minimal(budgets={"size_mb": {kind: value}})))
    with pytest.raises(ProfileError):
        load_profile(path)


@pytest.mark.parametrize("budgets", [None, {}])
def test_a_profile_without_budgets_is_rejected(budgets: object, tmp_path: Path) -> None:
    data = {"schema_version": 1, "name": "t"} | ({} if budgets is None else {"budgets": budgets})
    with pytest.raises(ProfileError, match="no budgets") as caught:
        load_profile(_write(tmp_path, data))
    assert caught.value.exit_code == EXIT_BAD_INPUT


@given(key=st.text(min_size=1, max_size=12).filter(lambda k: k not in KINDS))
def test_a_budget_with_an_unknown_key_is_rejected(key: str) -> None:
    with pytest.raises(ValidationError):
        Budget.model_validate({"max": 1.0, key: 2.0})


@pytest.mark.parametrize(("metric", "kind"), [(m, k) for m, kinds in BUDGET_METRICS.items() for k in kinds])
def test_every_metric_accepts_its_documented_limit_kinds(metric: str, kind: str) -> None:
    profile = parse_profile(_minimal(budgets={metric: {kind: 1.0}}), "test")
    assert profile.budgets[metric].kind == kind


@pytest.mark.parametrize(("metric", "kind"), [
    ("latency_p95_ms", "min"), ("throughput_sps", "max"), ("size_mb", "max_drop"), ("accuracy_drop_pt", "min"),
])
def test_a_limit_kind_that_makes_no_sense_for_the_metric_is_rejected(metric: str, kind: str) -> None:
    with pytest.raises(ProfileError, match=f"budget {metric} takes"):
        parse_profile(_minimal(budgets={metric: {kind: 1.0}}), "test")


@pytest.mark.parametrize("metric", ["latency_p95", "latency_p95_s", "accuracy", "size_MB"])
def test_an_unknown_budget_metric_is_rejected_with_the_known_ones(metric: str) -> None:
    with pytest.raises(ProfileError, match=f"unknown budget metric '{metric}'") as caught:
        parse_profile(_minimal(budgets={metric: {"max": 1.0}}), "test")
    assert "latency_p95_ms" in str(caught.value)


@pytest.mark.parametrize("data", [
    _minimal(budget={"size_mb": {"max": 1}}),
    _minimal(target={"device": "cpu", "thread": 2}),
    _minimal(shapes=[{"batch_size": 1, "seq_len": 128}]),
    _minimal(measurement={"warmup": 3}),
])
def test_an_unknown_key_anywhere_in_a_profile_is_rejected(data: dict) -> None:
    with pytest.raises(ProfileError, match="Extra inputs are not permitted"):
        parse_profile(data, "test")


@pytest.mark.parametrize(("data", "where"), [
    (_minimal(target={"threads": 0}), "target.threads"),
    (_minimal(target={"device": "tpu"}), "target.device"),
    (_minimal(target={"device": "cpu", "runtime": "tensorrt"}), "target"),
    (_minimal(shapes=[]), "shapes"),
    (_minimal(measurement={"min_iters": 1}), "measurement.min_iters"),
    (_minimal(measurement={"min_time_s": 10, "max_time_s": 5}), "measurement"),
    (_minimal(name="Has Spaces"), "name"),
    (_minimal(schema_version=2), "schema_version"),
])
def test_an_invalid_value_is_rejected_naming_the_field(data: dict, where: str) -> None:
    with pytest.raises(ProfileError, match="is invalid") as caught:
        parse_profile(data, "my.yaml")
    assert f"- {where}" in str(caught.value)
    assert "my.yaml" in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_a_profile_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="must be a YAML mapping"):
        load_profile(_write(tmp_path, ["cpu"]))


def test_loading_an_unknown_profile_name_lists_the_known_names() -> None:
    with pytest.raises(ProfileError, match="no profile named 'cpu-edgy'") as caught:
        load_profile("cpu-edgy")
    for name in list_profiles():
        assert name in str(caught.value)


def test_loading_a_missing_profile_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.yaml")


def test_a_profile_file_with_invalid_yaml_is_a_profile_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: cpu\ntarget: {device: cpu, threads: [2\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(path)


def test_a_profile_round_trips_through_its_serialised_form() -> None:
    profile = load_profile("cpu")
    assert Profile.model_validate(yaml.safe_load(yaml.safe_dump(profile.model_dump(mode="json")))) == profile
