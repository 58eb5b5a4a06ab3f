"""Every number in a profile (and in a pass config) is bounded at validation: no OverflowError stages later.

`max_time_s: 1e308` validated, and the run crashed after two stages when the benchmark worker's timeout
(max_time_s per shape, plus a grace) reached `Popen.communicate`. The property test draws any numbers,
hostile ones included, and holds every profile that validates to the code that consumes those numbers.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.test_history import make_report

from slimline.core.errors import ProfileError, RecipeError
from slimline.profiles.schema import BUDGET_METRICS, MAX_SHAPES, Profile, parse_profile

HOSTILE_FLOATS = st.floats() | st.sampled_from([1e308, -1e308, 1e30, 1e15, 1e12, 86_400.0, 86_401.0, 0.0, -0.0])
HOSTILE_INTS = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 1, 5, 4096, 10**7, 10**8])
NUMBER = HOSTILE_FLOATS | HOSTILE_INTS
MEASUREMENT_FIELDS = ("warmup_iters", "min_iters", "min_time_s", "max_time_s", "max_cv", "eval_max_samples",
                      "decode_tokens")
SHAPE_FIELDS = ("batch_size", "sequence_length", "image_size")


def _minimal(**overrides: Any) -> dict:
    return {"schema_version": 1, "name": "t", "budgets": {"latency_p95_ms": {"max": 60}}, **overrides}


def usable_as_timeout(seconds: float) -> None:
    """What Popen.communicate and threading do with a timeout: add it to the clock and wait (not at all here)."""
    assert 0 < seconds <= threading.TIMEOUT_MAX
    assert threading.Lock().acquire(timeout=seconds)  # an unheld lock: returns at once, or OverflowError


def consume(profile: Profile) -> None:
    """The consumers of a profile's numbers, each as the run calls it (without running a model)."""
    from slimline.benchmarking.benchmark import _worker_timeout_s
    from slimline.benchmarking.budgets import evaluate_budgets
    from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming
    from slimline.benchmarking.report import render_markdown
    from slimline.benchmarking.reporting.html_report import render_html
    from slimline.pipeline.search.trial import quick_timing

    usable_as_timeout(_worker_timeout_s(profile))
    measurement = profile.measurement
    timings = [InterleavedTiming.of(measurement), quick_timing(measurement),
               InterleavedTiming.of(measurement).model_copy(update={  # the search's final re-timing doubles both
                   "min_time_s": measurement.min_time_s * 2, "max_time_s": measurement.max_time_s * 2})]
    for timing in timings:
        # the spec travels to the worker as JSON and is validated there
        spec = InterleavedSpec.model_validate_json(
            f'{{"runners": [], "shape": {profile.shapes[0].model_dump_json()}, "timing": {timing.model_dump_json()}}}'
            .replace('"runners": []', '"runners": [' + _runner_json(profile) + "]"))
        usable_as_timeout(spec.timing.max_time_s + 300.0 + 30.0 * 8)
    report = make_report()
    budgets, verdict = evaluate_budgets(profile.budgets, report.measurements, report.baseline)
    report = report.model_copy(update={"budgets": budgets, "verdict": verdict,
                                       "profile": profile.model_dump(mode="json")})
    assert render_markdown(report) and render_html(report)


def _runner_json(profile: Profile) -> str:
    from slimline.benchmarking.runners.base import RunnerSpec

    return RunnerSpec(label="m", runtime="onnxruntime", model_path="/m/model.onnx", model_dir="/m",
                      model_format="onnx", task="text-classification", device="cpu", precision="fp32",
                      threads=profile.target.threads, inputs=[], shapes=profile.shapes,
                      measurement=profile.measurement).model_dump_json()


@st.composite
def hostile_profiles(draw: st.DrawFn) -> dict:
    measurement = {name: draw(NUMBER) for name in draw(st.sets(st.sampled_from(MEASUREMENT_FIELDS)))}
    shapes = [{name: draw(NUMBER) for name in draw(st.sets(st.sampled_from(SHAPE_FIELDS)))}
              for _ in range(draw(st.integers(1, 3)))]
    metrics = draw(st.sets(st.sampled_from(sorted(BUDGET_METRICS)), min_size=1, max_size=4))
    budgets = {metric: {BUDGET_METRICS[metric][0]: draw(NUMBER)} for metric in metrics}
    data = _minimal(measurement=measurement, shapes=shapes, budgets=budgets,
                    target={"threads": draw(st.integers(1, 600) | HOSTILE_INTS)})
    if draw(st.booleans()):
        data["regression_vs_shipped"] = {"latency_p50_pct": {"max": draw(NUMBER)}}
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_profiles())
def test_any_profile_that_validates_can_be_consumed_without_overflow(data: dict) -> None:
    try:
        profile = parse_profile(data, "hostile.yaml")
    except ProfileError:
        return
    consume(profile)


@pytest.mark.parametrize("value", [1e308, float("inf"), float("nan"), 1e20])
@pytest.mark.parametrize("field", ["max_time_s", "min_time_s", "max_cv", "warmup_iters", "min_iters",
                                   "eval_max_samples"])
def test_an_absurd_measurement_number_is_refused_naming_the_field(field: str, value: float) -> None:
    data = _minimal(measurement={field: value} if field != "min_time_s" else {field: value, "max_time_s": 60})
    with pytest.raises(ProfileError) as caught:
        parse_profile(data, "p.yaml")
    assert f"- measurement.{field}" in str(caught.value)


@pytest.mark.parametrize("value", [1e308, 1e13])
@pytest.mark.parametrize("kind", ["max", "min"])
def test_an_absurd_budget_limit_is_refused_naming_the_budget(kind: str, value: float) -> None:
    metric = next(m for m, kinds in BUDGET_METRICS.items() if kind in kinds)
    with pytest.raises(ProfileError) as caught:
        parse_profile(_minimal(budgets={metric: {kind: value}}), "p.yaml")
    assert f"- budgets.{metric}.{kind}" in str(caught.value)


def test_more_shapes_than_any_profile_needs_are_refused() -> None:
    with pytest.raises(ProfileError, match="- shapes"):
        parse_profile(_minimal(shapes=[{"batch_size": 1}] * (MAX_SHAPES + 1)), "p.yaml")


def test_the_largest_valid_profile_still_fits_every_timeout() -> None:
    """The bounds themselves, at once: the longest time on the most shapes."""
    profile = parse_profile(_minimal(measurement={"max_time_s": 86_400, "min_time_s": 86_400, "min_iters": 10**7,
                                                  "warmup_iters": 100_000, "max_cv": 100},
                                     shapes=[{"batch_size": 4096, "sequence_length": 32768}] * MAX_SHAPES,
                                     budgets={metric: {kinds[0]: 1e12} for metric, kinds in BUDGET_METRICS.items()}),
                            "p.yaml")
    consume(profile)


@pytest.mark.parametrize(("options", "field"), [
    ({"fallback": {"time_limit_s": 1e308}}, "fallback.time_limit_s"),
    ({"fallback": {"time_limit_s": float("inf")}}, "fallback.time_limit_s"),
    ({"fallback": {"max_excluded": 10**20}}, "fallback.max_excluded"),
    ({"percentile": float("nan")}, "percentile"),
])
def test_an_absurd_number_in_a_pass_config_is_refused_naming_the_option(options: dict, field: str) -> None:
    from slimline.compression.recipe import build_step

    with pytest.raises(RecipeError) as caught:
        build_step(0, {"pass": "quantize.ort-int8-static", "with": options}, "recipe")
    assert field.split(".")[0] in str(caught.value) and field.split(".")[-1] in str(caught.value)


@given(value=NUMBER)
@settings(max_examples=100, deadline=None)
def test_a_pass_time_limit_that_validates_is_usable_as_a_timeout(value: float) -> None:
    from slimline.compression.recipe import build_step

    try:
        step = build_step(0, {"pass": "quantize.ort-int8-static", "with": {"fallback": {"time_limit_s": value}}},
                          "recipe")
    except RecipeError:
        return
    usable_as_timeout(step.pass_.config.fallback.time_limit_s)
