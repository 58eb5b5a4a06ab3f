"""Weights inside training checkpoints are unwrapped with a note; what holds no weights is refused naming its keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plain_modules import write_tiny_cnn

from slimline.core.errors import CheckpointError
from slimline.formats.state_dict import match_module_keys, unwrap_state_dict
from slimline.formats.torch_module import load_input_spec, load_module, module_dir_for, read_weights


def _tensors() -> dict:
    import torch

    return {"conv.weight": torch.ones(2, 2), "conv.bias": torch.zeros(2)}


def test_a_training_checkpoint_gives_its_model_state_with_a_note_naming_the_keys() -> None:
    import torch

    loaded = {"step": 1200, "model_state": _tensors(), "optimizer_state": {"state": {}, "param_groups": []},
              "lr": torch.tensor(0.1)}
    unwrapped = unwrap_state_dict(loaded, "ckpt.pt")
    assert set(unwrapped.tensors) == {"conv.weight", "conv.bias"}
    assert "`model_state` entry" in unwrapped.note and "step, model_state, optimizer_state, lr" in unwrapped.note


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict", "module"])
def test_common_wrapper_keys_are_unwrapped(wrapper: str) -> None:
    assert set(unwrap_state_dict({wrapper: _tensors(), "epoch": 3}, "x").tensors) == {"conv.weight", "conv.bias"}


def test_nested_wrappers_are_unwrapped() -> None:
    unwrapped = unwrap_state_dict({"model": {"state_dict": _tensors(), "config": {}}, "step": 1}, "x")
    assert set(unwrapped.tensors) == {"conv.weight", "conv.bias"} and len(unwrapped.steps) == 2


@pytest.mark.parametrize("prefix, origin", [("module.", "DataParallel"), ("_orig_mod.", "torch.compile")])
def test_a_prefix_every_key_carries_is_stripped_with_a_note(prefix: str, origin: str) -> None:
    unwrapped = unwrap_state_dict({f"{prefix}{k}": v for k, v in _tensors().items()}, "x")
    assert set(unwrapped.tensors) == {"conv.weight", "conv.bias"}
    assert f"`{prefix}` prefix" in unwrapped.note and origin in unwrapped.note


def test_a_plain_state_dict_is_taken_as_it_is_without_a_note() -> None:
    unwrapped = unwrap_state_dict(_tensors(), "x")
    assert unwrapped.note is None and set(unwrapped.tensors) == {"conv.weight", "conv.bias"}


def test_a_checkpoint_without_model_weights_is_refused_listing_the_keys_it_found() -> None:
    with pytest.raises(CheckpointError) as caught:
        unwrap_state_dict({"step": 10, "optimizer_state": {"state": {}}, "config": {"lr": 0.1}}, "ckpt.pt")
    message = str(caught.value)
    assert "ckpt.pt is not a state dict of tensors" in message
    assert "step, optimizer_state, config" in message and "model_state" in message  # what it looked for
    assert caught.value.fix and "state_dict()" in caught.value.fix


@settings(max_examples=50, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.floats(allow_nan=False)),
                    lambda inner: st.dictionaries(st.text(max_size=8), inner, max_size=4) | st.lists(inner, max_size=3),
                    max_leaves=12))
def test_anything_without_tensors_is_refused_with_a_checkpoint_error(loaded: object) -> None:
    with pytest.raises(CheckpointError, match="is not a state dict of tensors"):
        unwrap_state_dict(loaded, "hostile.pt")


def test_a_lightning_style_prefix_is_stripped_only_when_it_makes_the_keys_the_module_s_own() -> None:
    state = {f"model.{k}": v for k, v in _tensors().items()}
    stripped, note = match_module_keys(state, {"conv.weight", "conv.bias"})
    assert set(stripped) == {"conv.weight", "conv.bias"} and "`model.` prefix" in note
    kept, note = match_module_keys(state, {"other.weight", "other.bias"})
    assert kept is state and note is None


def test_a_module_directory_from_a_ddp_training_checkpoint_records_the_note_and_loads_the_same_weights(
        workdir: Path) -> None:
    import torch

    plain = write_tiny_cnn(workdir)
    state = torch.load(plain, weights_only=True)
    wrapped = workdir / "checkpoint.pt"
    torch.save({"step": 7, "model_state": {f"module.{k}": v for k, v in state.items()},
                "optimizer_state": torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1).state_dict()},
               wrapped)
    model = module_dir_for("tiny_cnn:build", wrapped, load_input_spec(workdir / "inputs.yaml"))
    note = model.manifest.metadata["weights_unwrapped"]
    assert "`model_state` entry" in note and "`module.` prefix" in note
    rebuilt = load_module(model)
    for key, value in state.items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    assert read_weights(wrapped).note == note


def test_a_hugging_face_directory_whose_bin_is_a_training_checkpoint_is_refused_saying_where_the_weights_are(
        tmp_path: Path) -> None:
    import json

    import torch

    from slimline.formats.checkpoint import open_checkpoint

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert",
                                                      "architectures": ["BertForSequenceClassification"]}))
    torch.save({"epoch": 2, "state_dict": _tensors(), "optimizer": {}}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="is a training checkpoint") as caught:
        open_checkpoint(tmp_path)
    assert "`state_dict` entry" in str(caught.value) and "epoch, state_dict, optimizer" in str(caught.value)
    torch.save({"epoch": 2, "optimizer": {}}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="holds keys epoch, optimizer"):
        open_checkpoint(tmp_path)
