"""Calibration data for static quantization: a dataset spec, tokenised with the model's tokenizer.

The examples' hash goes into the manifest so a quantized model can be traced to its exact
calibration set. Too few examples is refused in `check()`, before export or any other work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.artifact import ModelDir
from slimline.core.data import ROTTEN_TOMATOES, DatasetSpec, check_dataset_available, encode_labelled, load_dataset
from slimline.core.errors import DataError, PassError
from slimline.core.image_data import load_images, preprocess_for


class CalibrationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = ROTTEN_TOMATOES
    split: str = "train"  # never the test split: accuracy is reported there
    num_samples: int = Field(default=128, ge=1)
    min_samples: int = Field(default=16, ge=1)
    max_length: int = Field(default=128, ge=8)
    seed: int = 0

    def resolved(self, run_data: Any) -> CalibrationSpec:
        """`source: eval-data` -> the run's --eval-data source (its `split` part, train by default)."""
        if self.source != EVAL_DATA_SOURCE:
            return self
        if run_data is None:
            raise PassError("calibration.source is eval-data, but this run has no --eval-data.",
                            fix="pass --eval-data (an image folder or .npz), or name calibration.source.")
        return self.model_copy(update={"source": str(run_data.source)})

    def dataset(self) -> DatasetSpec:
        return DatasetSpec(source=self.source, split=self.split, max_samples=self.num_samples,  # type: ignore[arg-type]
                           seed=self.seed)


def check_calibration_set(spec: CalibrationSpec) -> int:
    """Count the examples available; raise DataError when empty or below `min_samples`."""
    check_dataset_available(spec.dataset())
    try:
        count = len(load_dataset(spec.dataset()))
    except DataError as err:
        if "is empty" in str(err) or "has no examples" in str(err):
            count = 0
        else:
            raise
    if count < spec.min_samples:
        raise DataError(f"calibration set {spec.source}/{spec.split} has {count} examples; at least "
                        f"{spec.min_samples} are needed for stable activation ranges.",
                        fix="point calibration at a larger split, or lower calibration.min_samples knowingly.")
    return count


class ExamplesReader:
    """onnxruntime.quantization.CalibrationDataReader over prepared examples (`_examples`, one per batch),
    rewound before each quantization so every fallback candidate sees the same set."""

    _examples: list[dict[str, np.ndarray]]
    _position: int = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._examples):
            return None
        self._position += 1
        return self._examples[self._position - 1]

    def rewind(self) -> None:
        self._position = 0


class TextCalibrationReader(ExamplesReader):
    """onnxruntime.quantization.CalibrationDataReader over tokenised examples, one example per batch."""

    def __init__(self, spec: CalibrationSpec, tokenizer_dir: Path, input_names: set[str]) -> None:
        arrays, data = encode_labelled(spec.dataset(), tokenizer_dir, spec.max_length)
        missing = input_names - set(arrays)
        if missing:
            raise DataError(f"the tokenizer does not produce model inputs {sorted(missing)}.",
                            fix="calibrate a text model whose inputs are the tokenizer's outputs.")
        self.sha256 = data.sha256
        self.count = len(data)
        lengths = arrays["attention_mask"].sum(axis=1) if "attention_mask" in arrays else None
        self._examples = []
        for row in range(len(data)):
            stop = int(lengths[row]) if lengths is not None else None  # unpadded: real activation ranges
            self._examples.append({name: np.ascontiguousarray(arrays[name][row : row + 1, :stop])
                                   for name in input_names})
        self._position = 0


#: calibration.source value meaning "the run's --eval-data" (an image folder / .npz), its `split` (train) part.
EVAL_DATA_SOURCE = "eval-data"


def is_array_source(source: str) -> bool:
    """An image folder or an .npz (images or model-ready arrays), as opposed to a text dataset."""
    return source.endswith(".npz") or Path(source).expanduser().is_dir()


class ArrayCalibrationReader(ExamplesReader):
    """CalibrationDataReader over images (preprocessed the model's way) or an .npz of model inputs, one example
    per batch; the examples' hash goes into the manifest like a text calibration set's."""

    def __init__(self, spec: CalibrationSpec, model: ModelDir, input_names: set[str]) -> None:
        floats = [s.name for s in model.manifest.inputs if s.dtype.startswith("float")]
        images = load_images(spec.source, preprocess_for(model.path, model.manifest.metadata),
                             floats[0] if floats else "pixel_values", split=spec.split,  # type: ignore[arg-type]
                             max_samples=spec.num_samples, seed=spec.seed)
        missing = input_names - set(images.arrays)
        if missing:
            raise DataError(f"calibration data {spec.source} lack model input(s) {sorted(missing)}.",
                            fix=f"name the .npz arrays after the model's inputs {sorted(input_names)}.")
        self.count = len(next(iter(images.arrays.values())))
        if self.count < spec.min_samples:
            raise DataError(f"calibration set {spec.source}/{spec.split} has {self.count} examples; at least "
                            f"{spec.min_samples} are needed for stable activation ranges.",
                            fix="use more images, or lower calibration.min_samples knowingly.")
        self.sha256 = images.sha256
        self._examples = [{name: np.ascontiguousarray(images.arrays[name][row : row + 1]) for name in input_names}
                          for row in range(self.count)]
        self._position = 0
