""""Did you mean": a misspelt profile, recipe, pass, space, budget metric or config key names the likely one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimline import api
from slimline.compression.search_space_files import load_search_space
from slimline.core.errors import SlimlineError
from slimline.core.suggest import close_match, did_you_mean
from slimline.profiles.schema import load_profile, parse_profile


def _message(call: Callable[[], object]) -> str:
    with pytest.raises(SlimlineError) as raised:
        call()
    return str(raised.value)


def test_an_unknown_profile_name_suggests_the_closest_shipped_one() -> None:
    assert "did you mean 'cpu'?" in _message(lambda: load_profile("cpuu"))
    assert "did you mean 'llm-cpu'?" in _message(lambda: load_profile("lm-cpu"))


def test_an_unknown_recipe_space_and_pass_suggest_the_closest_known_one() -> None:
    assert "did you mean 'cpu-fast'?" in _message(lambda: api.as_recipe("cpu-fastt"))
    assert "did you mean 'cpu'?" in _message(lambda: load_search_space("cpuu"))
    assert "did you mean 'quantize.ort-int8-dynamic'?" in _message(
        lambda: api.as_recipe([{"pass": "quantize.ort-int8-dynamik"}]))


def test_a_misspelt_recipe_option_names_the_option() -> None:
    message = _message(lambda: api.as_recipe([{"pass": "quantize.ort-int8-dynamic", "with": {"per_chanel": True}}]))
    assert "'per_chanel'" in message and "did you mean 'per_channel'?" in message


def test_a_misspelt_profile_key_or_budget_metric_names_the_field_at_that_place() -> None:
    base = {"name": "x", "target": {"device": "cpu"}, "shapes": [{"batch_size": 1}],
            "budgets": {"latency_p95_ms": {"max": 3}}}
    assert "did you mean 'runtime'?" in _message(
        lambda: parse_profile({**base, "target": {"device": "cpu", "runtim": "onnxruntime"}}, "x"))
    assert "did you mean 'max'?" in _message(lambda: parse_profile({**base, "budgets": {"size_mb": {"maxx": 3}}}, "x"))
    assert "did you mean 'latency_p95_ms'?" in _message(
        lambda: parse_profile({**base, "budgets": {"latency_p95": {"max": 3}}}, "x"))
    assert "did you mean 'sequence_length'?" in _message(
        lambda: parse_profile({**base, "shapes": [{"sequence_lenght": 8}]}, "x"))


def test_nothing_is_suggested_when_no_name_is_close() -> None:
    assert did_you_mean("zzzzzz", ["cpu", "gpu-t4"]) == ""
    assert "did you mean" not in _message(lambda: load_profile("completely-different"))


@given(st.one_of(st.text(max_size=300), st.integers(), st.none(), st.lists(st.text(max_size=5))))
def test_close_match_never_fails_on_any_value(word: object) -> None:
    found = close_match(word, ["cpu", "cpu-fast", "gpu-t4"])
    assert found is None or found in ("cpu", "cpu-fast", "gpu-t4")
