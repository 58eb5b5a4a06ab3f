"""Calibration data for static quantization: a dataset spec, tokenised with the model's tokenizer.

The examples' hash goes into the manifest so a quantized model can be traced to its exact
calibration set. Too few examples is refused in `check()`, before export or any other work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.data import ROTTEN_TOMATOES, DatasetSpec, check_dataset_available, encode_labelled, load_dataset
from slimline.core.errors import DataError


class CalibrationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = ROTTEN_TOMATOES
    split: str = "train"  # never the test split: accuracy is reported there
    num_samples: int = Field(default=128, ge=1)
    min_samples: int = Field(default=16, ge=1)
    max_length: int = Field(default=128, ge=8)
    seed: int = 0

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


class TextCalibrationReader:
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

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._examples):
            return None
        self._position += 1
        return self._examples[self._position - 1]

    def rewind(self) -> None:
        self._position = 0
