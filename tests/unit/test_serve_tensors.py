"""POST /v1/infer's request checks: raw tensors for a bundle without a text front end (a model that came in as an
ONNX file). Whatever a client sends is either run or refused with a TensorInputError (a 422), never a 500."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streaming_model import write_streaming_onnx

from slimline.serve.tensors import TensorInputError, TensorModel


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TensorModel]:
    from slimline.deploy.bundle import package
    from slimline.deploy.manifest import read_manifest

    root = tmp_path_factory.mktemp("tensor-bundle")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIMLINE_CACHE_DIR", str(root / "cache"))  # the module's cache, not the user's
        bundle = Path(package(write_streaming_onnx(root / "stream.onnx"), root / "bundle").path)
    yield TensorModel(bundle, read_manifest(bundle), threads=1)


def _good() -> dict:
    return {"chunk": np.zeros((1, 3, 40)).tolist(), "state": np.zeros((2, 1, 64)).tolist(), "gain": 1.0}


def test_a_well_formed_request_runs_and_answers_every_output(model: TensorModel) -> None:
    outputs = model.infer(model.feeds({"inputs": _good()}))
    assert np.asarray(outputs["logits"]).shape == (1, 3, 12) and np.asarray(outputs["next_state"]).shape == (2, 1, 64)
    assert model.feeds({"inputs": _good()})["gain"].shape == ()  # a scalar stays a scalar


@pytest.mark.parametrize("inputs, message", [
    ({"chunk": [[[0.0] * 40]], "state": np.zeros((2, 1, 64)).tolist()}, r"missing \['gain'\]"),
    ({**_good(), "extra": 1}, r"unknown \['extra'\]"),
    ({**_good(), "gain": [1.0]}, r"inputs\.gain has 1 axes \[1\]; the model takes 0 \[\]"),
    ({**_good(), "chunk": np.zeros((1, 3, 41)).tolist()}, r"axis 2 is 41, not 40"),
    ({**_good(), "state": np.zeros((2, 2, 64)).tolist()}, r"axis 'batch' is 2 in inputs\.state but 1 in inputs\.chunk"),
    ({**_good(), "chunk": [[[0.0] * 40], [[0.0] * 39]]}, r"inputs\.chunk (is not a rectangular|must hold numbers)"),
    ({**_good(), "gain": "loud"}, r"inputs\.gain must hold numbers, not text"),
    ({**_good(), "state": np.zeros((2, 1, 64, 1)).tolist()}, r"inputs\.state has 4 axes"),
])
def test_requests_that_do_not_fit_the_inputs_are_refused_saying_which_and_why(model: TensorModel, inputs: dict,
                                                                              message: str) -> None:
    with pytest.raises(TensorInputError, match=message):
        model.infer(model.feeds({"inputs": inputs}))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=20)
TENSORISH = st.fixed_dictionaries({"inputs": st.fixed_dictionaries(
    {"chunk": JSON | st.lists(st.lists(st.lists(st.floats(width=32), min_size=40, max_size=40), max_size=3),
                              max_size=2),
     "state": JSON | st.lists(st.lists(st.lists(st.floats(width=32), min_size=64, max_size=64), max_size=2),
                              min_size=2, max_size=2),
     "gain": JSON})})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(JSON, TENSORISH))
def test_no_request_body_makes_the_model_raise_anything_but_an_input_error(model: TensorModel, payload: object) -> None:
    with contextlib.suppress(TensorInputError):
        model.infer(model.feeds(payload))
