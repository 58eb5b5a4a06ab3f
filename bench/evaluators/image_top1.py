"""Image classification top-1 (and top-5) accuracy on labelled images: an ImageFolder tree or an .npz.

Images are preprocessed once, the way the source model expects (slimline.core.image_data), so the
baseline and every candidate see identical pixels. `top1_drop_pt` is the baseline's top-1 minus the
candidate's on the same images; `agreement_pct` how often their top-1 classes agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimline.benchmarking.evaluators.base import EvalContext, EvalSource, register_evaluator
from slimline.benchmarking.evaluators.outputs import OutputsEvaluator, facts_of, write_arrays
from slimline.core.errors import DataError
from slimline.core.image_data import load_images, preprocess_for


def image_input_name(context: EvalContext) -> str:
    floats = [s.name for s in context.inputs if s.dtype.startswith("float")]
    return floats[0] if floats else "pixel_values"


def model_label_names(model_dir: Path, metadata: dict[str, Any]) -> list[str] | None:
    if metadata.get("label_names"):
        return list(metadata["label_names"])
    config = model_dir / "config.json"
    id2label = json.loads(config.read_text()).get("id2label") if config.is_file() else None
    return [id2label[k] for k in sorted(id2label, key=int)] if id2label else None


def write_image_npz(data: EvalSource, context: EvalContext, out_npz: Path, require_labels: bool) -> dict[str, Any]:
    model = context.model
    preprocess = preprocess_for(model.path, model.manifest.metadata)
    images = load_images(data.source, preprocess, image_input_name(context), split=data.split,
                         max_samples=context.max_samples or data.max_samples, seed=data.seed,
                         model_label_names=model_label_names(model.path, model.manifest.metadata))
    if require_labels and images.labels is None:
        raise DataError(f"{data.source} has no labels, so top-1 accuracy cannot be measured.",
                        fix="add a `labels` array to the .npz, or use evaluator `agreement` (agreement with fp32).")
    write_arrays(out_npz, images.arrays, context, images.labels)
    return {"dataset": data.model_dump(), "examples": len(next(iter(images.arrays.values()))),
            "examples_sha256": images.sha256, "label_names": images.label_names,
            "preprocess": preprocess.model_dump()}


@register_evaluator("image-top1")
class ImageTop1(OutputsEvaluator):
    """Top-1 / top-5 on labelled images, plus every output against fp32 (outputs.py)."""

    tasks = ("image-classification",)

    def prepare(self, data: EvalSource, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        return {**write_image_npz(data, context, out_npz, require_labels=True), **facts_of(context)}
