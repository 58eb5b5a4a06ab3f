"""What the OpenVINO passes share: the target check, calibration data as an nncf.Dataset, validation accuracy.

Calibration uses the same readers as ONNX Runtime's static INT8 (slimline.compression.calibration: the user's
text dataset tokenised with the model's tokenizer, unpadded; or images / an .npz), so the two INT8 paths see
the same examples and record the same hash. Accuracy is measured on the tuning data's validation split,
never the test split the report uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimline.compression.base import ModelInfo, Pass, PassContext, Problem
from slimline.compression.calibration import (
    EVAL_DATA_SOURCE,
    ArrayCalibrationReader,
    CalibrationSpec,
    TextCalibrationReader,
    check_calibration_set,
    is_array_source,
)
from slimline.core.artifact import ModelDir
from slimline.core.data import encode_labelled
from slimline.core.errors import BadInputError
from slimline.profiles.schema import Target
from slimline.runtimes import get_runtime

OPENVINO_FORMAT = "openvino"


def target_problems(pass_: Pass[Any], target: Target) -> list[Problem]:
    """An OpenVINO pass writes an IR: only a runtime that loads IRs can run what follows."""
    runtime = get_runtime(target.runtime)
    if OPENVINO_FORMAT in runtime.loads:
        return []
    return [pass_.error(f"writes an OpenVINO IR, which runtime {target.runtime} cannot load",
                        fix="use an openvino profile (cpu-openvino, llm-cpu-openvino), or an ONNX Runtime pass "
                            "(quantize.ort-int8-static / quantize.ort-int8-dynamic)")]


def calibration_problems(pass_: Pass[Any], model: ModelInfo, calibration: CalibrationSpec) -> list[Problem]:
    """The calibration set exists and is large enough (text), or its file/folder exists (images, arrays)."""
    if calibration.source == EVAL_DATA_SOURCE:
        return []  # the run's --eval-data (its train split): checked with the eval data
    if model.task == "image-classification" and not is_array_source(calibration.source):
        return [pass_.error(f"calibrates an image model on text ({calibration.source}); it needs images",
                            fix="set calibration.source to an image folder, an .npz, or eval-data")]
    if is_array_source(calibration.source):
        if Path(calibration.source).expanduser().exists():
            return []
        return [pass_.error(f"calibration source {calibration.source} does not exist",
                            fix="point calibration.source at an existing image folder or .npz file")]
    try:
        check_calibration_set(calibration)
    except BadInputError as err:
        return [pass_.refusal(err)]
    except ValueError:
        return [pass_.error(f"calibration source {calibration.source!r} is not a text dataset, an image folder or "
                            "an .npz", fix="point calibration.source at rotten-tomatoes, a .csv/.jsonl file, an "
                                           "image folder, an .npz, or eval-data")]
    return []


def calibration_reader(calibration: CalibrationSpec, model: ModelDir,
                       input_names: set[str]) -> TextCalibrationReader | ArrayCalibrationReader:
    if is_array_source(calibration.source):
        return ArrayCalibrationReader(calibration, model, input_names)
    return TextCalibrationReader(calibration, model.path, input_names)


def calibration_dataset(reader: TextCalibrationReader | ArrayCalibrationReader) -> Any:
    """The reader's examples (one unpadded example per item, inputs by name) as an nncf.Dataset."""
    import nncf

    reader.rewind()
    examples = []
    while (example := reader.get_next()) is not None:
        examples.append(example)
    return nncf.Dataset(examples)


class Validation:
    """Labelled validation examples (one per item, unpadded) and the accuracy of a compiled model on them."""

    def __init__(self, model: ModelDir, context: PassContext, input_names: set[str], max_samples: int | None) -> None:
        if context.tuning_data is None or model.manifest.task != "text-classification":
            raise ValueError("validation needs labelled text data and a text classifier")
        spec = context.tuning_data.model_copy(update={"split": "validation", "max_samples": max_samples})
        arrays, data = encode_labelled(spec, model.path, context.shape.sequence_length)
        lengths = arrays["attention_mask"].sum(axis=1) if "attention_mask" in arrays else None
        self.items = []
        for row in range(len(data)):
            stop = int(lengths[row]) if lengths is not None else None
            feeds = {name: np.ascontiguousarray(arrays[name][row : row + 1, :stop]) for name in input_names}
            self.items.append((feeds, int(data.labels[row])))

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def validate(compiled: Any, items: Any) -> tuple[float, list[float]]:
        """NNCF's validation_fn: accuracy (0..1) and each example's correctness."""
        request = compiled.create_infer_request()
        correct = []
        for feeds, label in items:
            request.infer(feeds)
            correct.append(float(int(np.argmax(request.get_output_tensor(0).data[0])) == label))
        return float(np.mean(correct)) if correct else 0.0, correct

    def accuracy_pct(self, ov_model: Any, properties: dict[str, str]) -> float:
        import openvino as ov

        compiled = ov.Core().compile_model(ov_model, "CPU", properties)
        return 100.0 * self.validate(compiled, self.items)[0]

    def dataset(self) -> Any:
        import nncf

        return nncf.Dataset(self.items, lambda item: item[0])
