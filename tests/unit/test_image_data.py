"""Images from an ImageFolder tree or an .npz, preprocessed the model's way, in seeded disjoint splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from plain_modules import write_image_folder

from slimline.core.errors import DataError
from slimline.core.image_data import ImagePreprocess, load_images, preprocess_for

SPEC = ImagePreprocess(crop_size=8, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])


def test_an_image_folder_loads_as_nchw_floats_with_labels_mapped_to_the_model_classes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", per_class=4)
    images = load_images(root, SPEC, "pixels", model_label_names=["fish", "dog", "cat"])
    assert images.arrays["pixels"].shape == (12, 3, 8, 8) and images.arrays["pixels"].dtype == np.float32
    assert images.arrays["pixels"].min() >= -1.0 and images.arrays["pixels"].max() <= 1.0
    assert sorted(set(images.labels.tolist())) == [0, 1, 2] and images.label_names == ["fish", "dog", "cat"]


def test_train_and_test_splits_are_disjoint_and_reproducible(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", per_class=10)
    train = load_images(root, SPEC, split="train")
    test = load_images(root, SPEC, split="test")
    assert len(train.labels) == 24 and len(test.labels) == 3
    assert load_images(root, SPEC, split="test").sha256 == test.sha256
    flat_train = {row.tobytes() for row in train.arrays["pixel_values"]}
    assert not any(row.tobytes() in flat_train for row in test.arrays["pixel_values"])


def test_a_folder_that_is_not_an_imagefolder_tree_is_refused_with_the_layout(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="root/<class>/<image>"):
        load_images(tmp_path / "flat", SPEC)


def test_an_npz_of_raw_images_is_preprocessed_and_labels_kept(tmp_path: Path) -> None:
    path = tmp_path / "digits.npz"
    np.savez(path, images=np.zeros((5, 6, 6), dtype=np.uint8), labels=np.arange(5))
    images = load_images(path, SPEC.model_copy(update={"channels": 1, "mean": [0.0], "std": [1.0]}), "x")
    assert images.arrays["x"].shape == (5, 1, 8, 8) and images.labels.tolist() == [0, 1, 2, 3, 4]


def test_preprocessing_comes_from_the_hf_preprocessor_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 32, "num_channels": 3}))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32}, "image_mean": [0.1, 0.2, 0.3],
         "image_std": [1, 1, 1], "rescale_factor": 0.00392156862745098}))
    spec = preprocess_for(tmp_path)
    assert spec.crop_size == 32 and spec.resize_shortest_edge == 40 and spec.mean == [0.1, 0.2, 0.3]
    plain = preprocess_for(tmp_path, {"image_preprocess": {"crop_size": 16}})
    assert plain.crop_size == 16 and plain.source == "the model's input spec"
