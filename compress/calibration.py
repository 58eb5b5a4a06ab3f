"""Calibration data for static quantization: the user's own data by default, tokenised with the model's tokenizer.

By default (`source: eval-data`) a static pass calibrates on the run's --eval-data, on its `train` split
with the same seed: the seeded train/validation/test partition (core.data.split_indices) keeps it apart
from the validation split the accuracy fallback tunes on and the test split the verdict is judged on.
Only a checkpoint that names its own data (the demo's Rotten Tomatoes hint) calibrates on that. The
examples' source, split, count and hash go into the manifest and the report, so a quantized model can
be traced to its exact calibration set. Too few examples is refused in `check()`, before export or
any other work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.artifact import ModelDir
from slimline.core.batch_axes import batches, example_count
from slimline.core.data import DatasetSpec, check_dataset_available, load_texts
from slimline.core.errors import DataError, PassError
from slimline.core.image_data import load_images, preprocess_for
from slimline.formats.inputs import batch_axis

#: calibration.source value meaning "the run's --eval-data" (text, an image folder / .npz), its `split` (train) part.
EVAL_DATA_SOURCE = "eval-data"


class CalibrationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = EVAL_DATA_SOURCE  # the run's own data; or rotten-tomatoes, a .csv/.jsonl, an image folder, an .npz
    split: str = "train"  # never the test split: accuracy is reported there
    num_samples: int = Field(default=128, ge=1)
    min_samples: int = Field(default=16, ge=1)
    max_length: int = Field(default=128, ge=8)
    seed: int = 0
    text_field: str = "text"

    def resolved(self, run_data: Any) -> CalibrationSpec:
        """`source: eval-data` -> the run's --eval-data source, its `split` part (train by default) under the same
        seed as the eval split, so the two partitions of the same rows never overlap."""
        if self.source != EVAL_DATA_SOURCE:
            return self
        if run_data is None:
            raise PassError("calibration.source is eval-data, but this run has no --eval-data.",
                            fix="pass --eval-data (your text .csv/.jsonl, an image folder or .npz), or name "
                                "calibration.source.")
        return self.model_copy(update={"source": str(run_data.source), "seed": getattr(run_data, "seed", self.seed),
                                       "text_field": getattr(run_data, "text_field", self.text_field)})

    def dataset(self) -> DatasetSpec:
        return DatasetSpec(source=self.source, split=self.split, max_samples=self.num_samples,  # type: ignore[arg-type]
                           seed=self.seed, text_field=self.text_field)

    def facts(self, count: int, sha256: str) -> dict[str, Any]:
        """What the manifest and the report say about the calibration set."""
        return {**self.model_dump(), "examples": count, "sha256": sha256}


def check_calibration_set(spec: CalibrationSpec) -> int:
    """Count the examples available; raise DataError when empty or below `min_samples`."""
    check_dataset_available(spec.dataset())
    try:
        count = len(load_texts(spec.dataset())[0])
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
    rewound before each quantization so every fallback candidate sees the same set. `len` and `set_range`
    let ORT calibrate in strides (CalibStridedMinMax), so its histogram calibrators hold a few examples'
    activations at a time instead of all of them."""

    _examples: list[dict[str, np.ndarray]]
    _position: int = 0
    _stop: int | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        stop = len(self._examples) if self._stop is None else self._stop
        if self._position >= stop:
            return None
        self._position += 1
        return self._examples[self._position - 1]

    def rewind(self) -> None:
        self._position, self._stop = 0, None

    def __len__(self) -> int:
        return len(self._examples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._position, self._stop = start_index, end_index

    def padded(self) -> ExamplesReader:
        """The same examples at one common length (ORT's entropy/percentile calibrators stack every example's
        activations, so examples of different lengths fail there); image examples already share one shape."""
        return self


def stride_for(count: int, most: int = 16) -> int:
    """The largest divisor of `count` up to `most`: ORT's strided calibration needs strides that tile the set."""
    return max(d for d in range(1, min(most, count) + 1) if count % d == 0)


class _Prepared(ExamplesReader):
    def __init__(self, examples: list[dict[str, np.ndarray]]) -> None:
        self._examples = examples
        self._position = 0


class TextCalibrationReader(ExamplesReader):
    """onnxruntime.quantization.CalibrationDataReader over tokenised texts, one example per batch, unpadded
    (real activation ranges; `padded()` for the histogram calibrators). Labels are never read."""

    def __init__(self, spec: CalibrationSpec, tokenizer_dir: Path, input_names: set[str]) -> None:
        from slimline.core.tokenizers import load_tokenizer

        if not (tokenizer_dir / "tokenizer_config.json").is_file():
            raise DataError(f"{tokenizer_dir} has no tokenizer, so text cannot calibrate it.",
                            fix="save the tokenizer next to the model, or calibrate on arrays (an .npz).")
        texts, self.sha256 = load_texts(spec.dataset())
        tokenizer, _ = load_tokenizer(tokenizer_dir)
        encoded = tokenizer(texts, padding="longest", truncation=True, max_length=spec.max_length, return_tensors="np")
        arrays = {name: np.ascontiguousarray(values, dtype=np.int64) for name, values in encoded.items()}
        missing = input_names - set(arrays)
        if missing:
            raise DataError(f"the tokenizer does not produce model inputs {sorted(missing)}.",
                            fix="calibrate a text model whose inputs are the tokenizer's outputs.")
        self.count = len(texts)
        self.pad_token_id = int(tokenizer.pad_token_id or 0)
        lengths = arrays["attention_mask"].sum(axis=1) if "attention_mask" in arrays else None
        self._examples = []
        for row in range(self.count):
            stop = int(lengths[row]) if lengths is not None else None  # unpadded: real activation ranges
            self._examples.append({name: np.ascontiguousarray(arrays[name][row : row + 1, :stop])
                                   for name in input_names})
        self._position = 0

    def padded(self) -> ExamplesReader:
        width = max(next(iter(example.values())).shape[1] for example in self._examples)
        fill = {"input_ids": self.pad_token_id}
        examples = []
        for example in self._examples:
            grown = {}
            for name, values in example.items():
                pad = width - values.shape[1]
                grown[name] = np.pad(values, ((0, 0), (0, pad)), constant_values=fill.get(name, 0)) if pad else values
            examples.append(grown)
        return _Prepared(examples)


def is_array_source(source: str) -> bool:
    """An image folder or an .npz (images or model-ready arrays), as opposed to a text dataset."""
    return source.endswith(".npz") or Path(source).expanduser().is_dir()


class ArrayCalibrationReader(ExamplesReader):
    """CalibrationDataReader over images (preprocessed the model's way) or an .npz of model inputs, one example
    per batch; the examples' hash goes into the manifest like a text calibration set's."""

    def __init__(self, spec: CalibrationSpec, model: ModelDir, input_names: set[str]) -> None:
        floats = [s.name for s in model.manifest.inputs if s.dtype.startswith("float")]
        axes = {s.name: batch_axis(s) for s in model.manifest.inputs}  # a state input's batch need not be first
        images = load_images(spec.source, preprocess_for(model.path, model.manifest.metadata),
                             floats[0] if floats else "pixel_values", split=spec.split,  # type: ignore[arg-type]
                             max_samples=spec.num_samples, seed=spec.seed, batch_axes=axes)
        missing = input_names - set(images.arrays)
        if missing:
            raise DataError(f"calibration data {spec.source} lack model input(s) {sorted(missing)}.",
                            fix=f"name the .npz arrays after the model's inputs {sorted(input_names)}.")
        self.count = example_count(images.arrays, axes)
        if self.count < spec.min_samples:
            raise DataError(f"calibration set {spec.source}/{spec.split} has {self.count} examples; at least "
                            f"{spec.min_samples} are needed for stable activation ranges.",
                            fix="use more images, or lower calibration.min_samples knowingly.")
        self.sha256 = images.sha256
        wanted = {name: images.arrays[name] for name in input_names}
        self._examples = [{name: np.ascontiguousarray(values) for name, values in example.items()}
                          for example in batches(wanted, 1, axes)]
        self._position = 0
