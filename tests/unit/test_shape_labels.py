"""Labels name what a model is fed, from its declared inputs: not `b1_s128` for an image or an audio model."""

from __future__ import annotations

import pytest

from slimline.core.artifact import TensorSpec
from slimline.formats.inputs import default_input_specs, shape_label
from slimline.profiles.schema import Shape


def spec(name: str, shape: list, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=shape)


@pytest.mark.parametrize(("specs", "shape", "config", "label"), [
    (default_input_specs("text-classification"), Shape(batch_size=1, sequence_length=128), {}, "b1_s128"),
    ([spec("input_ids", ["batch", "sequence"], "int64"), spec("past_key_values.0.key", ["batch", 2, "past", 8])],
     Shape(batch_size=2, sequence_length=64), {}, "b2_s64"),
    (default_input_specs("image-classification"), Shape(batch_size=1), {}, "b1_3x224x224"),
    (default_input_specs("image-classification"), Shape(batch_size=4), {"image_size": 32, "num_channels": 1},
     "b4_1x32x32"),
    ([spec("pixels", ["batch", 3, 16, 16])], Shape(batch_size=1), {}, "b1_3x16x16"),
    ([spec("pixels", ["batch", 3, "height", "width"])], Shape(batch_size=1, image_size=96), {}, "b1_3x96x96"),
    ([spec("frames", ["batch", "time", 40])], Shape(batch_size=1, sequence_length=160), {}, "b1_t160x40"),
    ([spec("frames", ["batch", 1024])], Shape(batch_size=64), {}, "b64_t1024"),
    ([spec("x", [1, 16])], Shape(batch_size=1), {}, "b1_t16"),
])
def test_a_label_names_the_shape_of_the_models_first_input(specs: list[TensorSpec], shape: Shape, config: dict,
                                                            label: str) -> None:
    assert shape_label(specs, shape, config) == label
