"""Synthetic model inputs: the shapes and dtypes each runner and the parity check feed a model."""

from __future__ import annotations

import numpy as np
import pytest

from slimline.core.artifact import TensorSpec
from slimline.core.errors import BenchError
from slimline.formats.inputs import default_input_specs, synthetic_feeds
from slimline.profiles.schema import Shape

TEXT_SPECS = [TensorSpec(name=name, dtype="int64", shape=["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids", "position_ids")]
IMAGE_SPECS = [TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, "height", "width"])]


def test_text_feeds_have_the_shape_and_dtype_of_the_specs() -> None:
    feeds = synthetic_feeds(TEXT_SPECS, Shape(batch_size=3, sequence_length=17), {"vocab_size": 50})
    assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
    for array in feeds.values():
        assert array.shape == (3, 17) and array.dtype == np.int64
    assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < 50
    assert np.all(feeds["attention_mask"] == 1) and np.all(feeds["token_type_ids"] == 0)
    assert feeds["position_ids"][2].tolist() == list(range(17))


def test_token_ids_on_a_real_vocabulary_skip_the_special_tokens() -> None:
    feeds = synthetic_feeds(TEXT_SPECS[:1], Shape(batch_size=8, sequence_length=64), {"vocab_size": 30522})
    assert feeds["input_ids"].min() >= 1000 and feeds["input_ids"].max() < 30522


def test_int32_specs_give_int32_arrays() -> None:
    specs = [TensorSpec(name="input_ids", dtype="int32", shape=["batch", "sequence"])]
    assert synthetic_feeds(specs, Shape(), {"vocab_size": 10})["input_ids"].dtype == np.int32


def test_image_feeds_take_their_size_from_the_config() -> None:
    feeds = synthetic_feeds(IMAGE_SPECS, Shape(batch_size=2), {"image_size": 32, "num_channels": 3})
    assert feeds["pixel_values"].shape == (2, 3, 32, 32)
    assert feeds["pixel_values"].dtype == np.float32


@pytest.mark.parametrize(("config", "shape", "size"), [
    ({"image_size": 32}, Shape(image_size=64), 64),
    ({"image_size": [48, 48]}, Shape(), 48),
    ({}, Shape(), 224),
])
def test_the_image_size_comes_from_the_shape_then_the_config_then_224(config: dict, shape: Shape, size: int) -> None:
    assert synthetic_feeds(IMAGE_SPECS, shape, config)["pixel_values"].shape[-2:] == (size, size)


def test_feeds_are_the_same_for_the_same_seed_and_differ_across_seeds() -> None:
    shape, config = Shape(batch_size=2, sequence_length=8), {"vocab_size": 1000}
    first = synthetic_feeds(TEXT_SPECS, shape, config, seed=5)
    again = synthetic_feeds(TEXT_SPECS, shape, config, seed=5)
    other = synthetic_feeds(TEXT_SPECS, shape, config, seed=6)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["input_ids"], other["input_ids"])


def test_an_unknown_input_name_is_a_bench_error_naming_it() -> None:
    specs = [*TEXT_SPECS[:1], TensorSpec(name="encoder_hidden_states", dtype="float32", shape=["batch", 0, 16])]
    with pytest.raises(BenchError, match=r"'encoder_hidden_states'"):
        synthetic_feeds(specs, Shape(), {"vocab_size": 10})


def test_a_kv_cache_input_gets_an_empty_past_so_the_call_is_a_prefill() -> None:
    specs = [*TEXT_SPECS[:1], TensorSpec(name="past_key_values.0.key", dtype="float32", shape=["batch", 2, "p", 16])]
    feeds = synthetic_feeds(specs, Shape(batch_size=3, sequence_length=5), {"vocab_size": 10})
    assert feeds["past_key_values.0.key"].shape == (3, 2, 0, 16)


@pytest.mark.parametrize(("task", "names"), [
    ("text-classification", ["input_ids", "attention_mask"]),
    ("text-generation", ["input_ids", "attention_mask"]),
    ("image-classification", ["pixel_values"]),
])
def test_default_input_specs_per_task(task: str, names: list[str]) -> None:
    assert [spec.name for spec in default_input_specs(task)] == names
