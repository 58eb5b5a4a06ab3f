"""What a student trains on, per kind of model: texts (with labels for classifiers), or images.

Text comes through slimline.core.data (the run's `--eval-data` source or the step's `data`), tokenised
with the student's tokenizer; images through slimline.core.image_data (an ImageFolder tree or an `.npz`),
preprocessed the model's way, which is how the rest of slimline reads them for calibration and top-1.
The train split is used unless another non-test split is named: the test split is where quality is
reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from slimline.compression.distill.training import TrainingSet, encode_training_set
from slimline.core.data import ROTTEN_TOMATOES, DatasetSpec, SplitName, label_names_of, load_texts
from slimline.core.errors import DataError

Objective = Literal["logits", "embedding"]
#: Task -> what the student learns from the teacher: its class logits, or its pooled embedding.
OBJECTIVES: dict[str, Objective] = {"text-classification": "logits", "image-classification": "logits",
                                    "feature-extraction": "embedding"}


class ImageSource(BaseModel):
    """Training images: an ImageFolder tree (root/<class>/<image>) or an .npz (`images` [+ `labels`])."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(description="an image folder or an .npz file")
    split: SplitName = "train"
    max_samples: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _images_not_text(self) -> ImageSource:
        if self.source == ROTTEN_TOMATOES or self.source.endswith((".csv", ".jsonl")):
            raise ValueError(f"{self.source} is a text dataset, not images")
        return self


def is_text_source(source: str) -> bool:
    return source == ROTTEN_TOMATOES or source.endswith((".csv", ".jsonl", ".txt"))


def training_set(task: str, data: DatasetSpec | ImageSource, model_dir: Path, metadata: dict[str, Any],
                 max_length: int, with_labels: bool) -> TrainingSet:
    """The examples of `data` as model-ready arrays for a `task` model stored at `model_dir`."""
    if task == "image-classification":
        if not isinstance(data, ImageSource):
            raise DataError(f"an image classifier learns from images, and {data.source} is text.",
                            fix="set data.source to an image folder (root/<class>/<image>) or an .npz, or run with "
                                "--eval-data IMAGES (its train split is used).")
        return image_training_set(data, model_dir, metadata, with_labels)
    if isinstance(data, ImageSource):
        raise DataError(f"a {task} model learns from text, and {data.source} is not a text dataset.",
                        fix="set data.source to rotten-tomatoes or a .csv/.jsonl file with a text column.")
    if OBJECTIVES.get(task) == "embedding":
        return unlabelled_text_set(data, model_dir, max_length)
    return encode_training_set(data, model_dir, max_length, with_labels=with_labels)


def unlabelled_text_set(spec: DatasetSpec, tokenizer_dir: Path, max_length: int) -> TrainingSet:
    """Texts only (no label column needed): an embedding student matches its teacher's vectors."""
    from slimline.core.tokenizers import load_tokenizer

    if not (tokenizer_dir / "tokenizer_config.json").is_file():
        raise DataError(f"{tokenizer_dir} has no tokenizer, so text examples cannot be fed to the model.",
                        fix="save the tokenizer next to the model (tokenizer.save_pretrained).")
    texts, sha256 = load_texts(spec)
    tokenizer, _ = load_tokenizer(tokenizer_dir)
    encoded = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    arrays = {name: np.ascontiguousarray(values, dtype=np.int64) for name, values in encoded.items()}
    width = arrays["input_ids"].shape[1]
    lengths = arrays["attention_mask"].sum(axis=1) if "attention_mask" in arrays else np.full(len(texts), width)
    return TrainingSet(arrays, lengths, None, sha256, tokenizer.padding_side)


def image_training_set(data: ImageSource, model_dir: Path, metadata: dict[str, Any],
                       with_labels: bool) -> TrainingSet:
    from slimline.core.image_data import load_images, preprocess_for

    images = load_images(data.source, preprocess_for(model_dir, metadata), "pixel_values", split=data.split,
                         max_samples=data.max_samples, seed=data.seed, model_label_names=label_names_of(model_dir))
    if with_labels and images.labels is None:
        raise DataError(f"{data.source} has no labels, and the step asks for a label loss (alpha_label > 0).",
                        fix="set alpha_label: 0 (learn from the teacher alone), or add `labels` to the .npz.")
    count = len(next(iter(images.arrays.values())))
    return TrainingSet(images.arrays, np.ones(count, dtype=np.int64), images.labels if with_labels else None,
                       images.sha256, None)
