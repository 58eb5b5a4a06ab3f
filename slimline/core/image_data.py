"""Labelled images from local files only: an ImageFolder tree (`root/<class>/<image>`) or an `.npz`.

Both the evaluators (bench) and image calibration (compress) read images through here, so the
examples a model is calibrated on and scored on are preprocessed the same way the model expects
(`ImagePreprocess`: resize, centre crop, scale, normalise, NCHW float32). An `.npz` holds either
raw `images` (N,H,W[,C] uint8, preprocessed here) or model-ready arrays named like the model's
inputs, plus optional `labels` (int class ids) and `label_names`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.batch_axes import BatchAxes, example_count, take_rows
from slimline.core.data import SplitName, split_indices
from slimline.core.deps import require
from slimline.core.errors import DataError, shorten

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class ImagePreprocess(BaseModel):
    """How raw pixels become the model's input: resize the short side, centre crop, x*rescale, (x-mean)/std."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    crop_size: int = Field(default=224, ge=1)
    resize_shortest_edge: int | None = Field(default=None, ge=1)  # None: resize straight to crop_size
    channels: int = Field(default=3, ge=1, le=4)
    rescale: float = 1 / 255
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD))
    source: str = "default (ImageNet mean/std)"


def _edge(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return value.get("shortest_edge") or value.get("height")
    return None


def preprocess_for(model_dir: Path, metadata: dict[str, Any] | None = None) -> ImagePreprocess:
    """The model's own preprocessing: a plain module's input spec (`image_preprocess` in its manifest), an HF
    `preprocessor_config.json`, or config.json's image_size with ImageNet statistics (said in `source`)."""
    if metadata and metadata.get("image_preprocess"):
        return ImagePreprocess.model_validate({**metadata["image_preprocess"], "source": "the model's input spec"})
    processor = model_dir / "preprocessor_config.json"
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    channels = int(config.get("num_channels", 3))
    if processor.is_file():
        data = json.loads(processor.read_text())
        crop = _edge(data.get("crop_size")) or _edge(data.get("size")) or 224
        resize = _edge(data.get("size")) if data.get("do_resize", True) else None
        normalise = data.get("do_normalize", True)
        return ImagePreprocess(crop_size=crop, resize_shortest_edge=resize if resize != crop else None,
                               channels=channels, rescale=float(data.get("rescale_factor", 1 / 255)),
                               mean=data.get("image_mean", IMAGENET_MEAN) if normalise else [0.0] * channels,
                               std=data.get("image_std", IMAGENET_STD) if normalise else [1.0] * channels,
                               source=str(processor.name))
    size = config.get("image_size", 224)
    size = int(size if isinstance(size, int) else size[0])
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ([0.5] * channels, [0.5] * channels)
    return ImagePreprocess(crop_size=size, channels=channels, mean=mean, std=std,
                           source="config.json image_size; ImageNet mean/std (no preprocessor_config.json)")


def preprocess_images(images: list[Any] | np.ndarray, spec: ImagePreprocess) -> np.ndarray:
    """PIL images or uint8 arrays (N,H,W[,C]) -> float32 NCHW as the model expects."""
    Image = require("PIL.Image", purpose="reading images")

    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(spec.channels, "RGB")
    out = np.empty((len(images), spec.channels, spec.crop_size, spec.crop_size), dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    for index, image in enumerate(images):
        picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        picture = picture.convert(mode)
        if spec.resize_shortest_edge:
            scale = spec.resize_shortest_edge / min(picture.size)
            picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                     Image.Resampling.BILINEAR)
            left, top = (picture.width - spec.crop_size) // 2, (picture.height - spec.crop_size) // 2
            picture = picture.crop((left, top, left + spec.crop_size, top + spec.crop_size))
        else:
            picture = picture.resize((spec.crop_size, spec.crop_size), Image.Resampling.BILINEAR)
        pixels = np.asarray(picture, dtype=np.float32).reshape(spec.crop_size, spec.crop_size, spec.channels)
        out[index] = (pixels.transpose(2, 0, 1) * spec.rescale - mean) / std
    return out


@dataclass(frozen=True)
class LabelledImages:
    arrays: dict[str, np.ndarray]  # model inputs (NCHW float32 under the input's name)
    labels: np.ndarray | None  # int64 class ids, None when the source has no labels
    label_names: list[str]
    sha256: str  # of the examples as fed to the model


def _rows(count: int, split: SplitName, max_samples: int | None, seed: int, source: str) -> np.ndarray:
    if count == 0:
        raise DataError(f"image source {source} holds no images.", fix="point at a folder or .npz with images.")
    rows = split_indices(count, split, seed)
    if max_samples is not None:
        rows = rows[:max_samples]
    if len(rows) == 0:
        raise DataError(f"split {split!r} of {source} is empty ({count} images in all).",
                        fix="use more images, or split 'all'.")
    return rows


def image_folder_files(root: Path) -> tuple[list[Path], list[str]]:
    """ImageFolder layout: one sub-directory per class (sorted names are the class ids)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(path, name) for name in classes for path in sorted((root / name).rglob("*"))
             if path.suffix.lower() in IMAGE_SUFFIXES]
    if not classes or not files:
        raise DataError(f"{root} is not an ImageFolder tree (root/<class>/<image>.png|jpg); it has "
                        f"{len(classes)} class folder(s) and {len(files)} image(s).",
                        fix="put each class's images in a folder named for the class, or pass an .npz.")
    return [f for f, _ in files], [c for _, c in files]


def _digest(arrays: dict[str, np.ndarray], labels: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    if labels is not None:
        digest.update(labels.astype(np.int64).tobytes())
    return digest.hexdigest()


def map_labels(names: list[str], model_names: list[str] | None, source: str) -> tuple[np.ndarray, list[str]]:
    """Class folder names -> the model's class ids (config id2label) when it names them, else sorted order."""
    if model_names and set(names) <= set(model_names):
        index = {name: i for i, name in enumerate(model_names)}
        return np.array([index[n] for n in names], dtype=np.int64), list(model_names)
    classes = sorted(set(names))
    if model_names and not set(names) <= set(model_names) and len(classes) > len(model_names):
        raise DataError(f"{source} has {len(classes)} classes but the model predicts {len(model_names)}.",
                        fix=f"name the class folders after the model's classes {shorten(model_names)}.")
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes


def load_images(source: str | Path, preprocess: ImagePreprocess, input_name: str = "pixel_values", *,
                split: SplitName = "all", max_samples: int | None = None, seed: int = 0,
                model_label_names: list[str] | None = None, batch_axes: BatchAxes | None = None) -> LabelledImages:
    """An ImageFolder tree or an .npz as model-ready arrays, one seeded split of it (model-ready arrays split
    along each input's batch axis, `batch_axes`: slimline.core.batch_axes)."""
    path = Path(source).expanduser()
    if path.is_dir():
        Image = require("PIL.Image", purpose="reading an image folder")
        files, names = image_folder_files(path)
        ids, label_names = map_labels(names, model_label_names, str(path))
        rows = _rows(len(files), split, max_samples, seed, str(path))
        images = []
        for row in rows:
            with Image.open(files[row]) as handle:
                images.append(handle.copy())
        arrays = {input_name: preprocess_images(images, preprocess)}
        labels = ids[rows]
        return LabelledImages(arrays, labels, label_names, _digest(arrays, labels))
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
        labels_all = stored.pop("labels", None)
        label_names = [str(n) for n in stored.pop("label_names", [])]
        if "images" in stored:
            rows = _rows(len(stored["images"]), split, max_samples, seed, str(path))
            arrays = {input_name: preprocess_images(stored["images"][rows], preprocess)}
        else:
            rows = _rows(example_count(stored, batch_axes) if stored else 0, split, max_samples, seed, str(path))
            arrays = take_rows(stored, batch_axes, rows)
        labels = None if labels_all is None else np.asarray(labels_all, dtype=np.int64)[rows]
        return LabelledImages(arrays, labels, label_names, _digest(arrays, labels))
    raise DataError(f"image source {path} is neither a directory (ImageFolder layout) nor an existing .npz file.",
                    fix="pass a folder with one sub-folder per class, or an .npz holding `images` and `labels`.")
