"""Agreement with fp32 for any model: every output of the candidate against the baseline's on the same inputs.

Inputs come from an .npz (arrays named like the model's inputs; raw `images` are preprocessed the
model's way), an image folder, or a user callable `pkg.module:function` that returns a dict of arrays,
or a list of such dicts (concatenated). No labels are needed. Each output is judged by its kind
(slimline.core.output_kinds): class logits by top-1 / top-k agreement and the logits' error, vectors
(embeddings, boxes, keypoints, scores) by cosine similarity and relative error. `embedding` is the same
evaluator with every float output read as a vector.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from slimline.bench.evaluators.base import EvalContext, EvalSource, register_evaluator
from slimline.bench.evaluators.image_top1 import write_image_npz
from slimline.bench.evaluators.outputs import OutputsEvaluator, facts_of, write_arrays
from slimline.core.errors import DataError, shorten
from slimline.core.image_data import load_images, preprocess_for


def call_user_inputs(reference: str) -> dict[str, np.ndarray]:
    """Import `pkg.module:function` (the working directory is importable, as with `python -m`) and call it."""
    module_name, _, function_name = reference.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        produced = function()
    except Exception as err:
        raise DataError(f"eval inputs callable {shorten(reference)} failed: {type(err).__name__}: {err}.",
                        fix="make it importable (pkg.module:function) and return a dict of numpy arrays.") from err
    parts = produced if isinstance(produced, (list, tuple)) else [produced]
    if not parts or not all(isinstance(p, dict) and p for p in parts):
        raise DataError(f"eval inputs callable {shorten(reference)} returned {type(produced).__name__}.",
                        fix="return a dict {input_name: array} or a list of such dicts.")
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}


def _check_names(arrays: dict[str, np.ndarray], context: EvalContext, source: str) -> dict[str, np.ndarray]:
    wanted = [s.name for s in context.inputs]
    missing = [name for name in wanted if name not in arrays]
    if missing:
        raise DataError(f"eval inputs {shorten(source)} lack model input(s) {missing}; they hold {sorted(arrays)}.",
                        fix=f"name the arrays after the model's inputs: {wanted}.")
    counts = {len(arrays[name]) for name in wanted}
    if len(counts) != 1:
        raise DataError(f"eval inputs {shorten(source)} have different example counts per input ({sorted(counts)}).",
                        fix="give every input the same first (batch) dimension.")
    return {name: arrays[name] for name in wanted}


@register_evaluator("agreement")
class Agreement(OutputsEvaluator):
    """Every output against fp32's by its kind (see outputs.py); no labels needed (used when there are)."""

    def prepare(self, data: EvalSource, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        kind = data.kind()
        labels = None
        if kind == "callable":
            arrays = _check_names(call_user_inputs(data.source), context, data.source)
        elif kind == "folder":
            return {**write_image_npz(data, context, out_npz, require_labels=False), **facts_of(context)}
        elif kind == "npz" and Path(data.source).expanduser().is_file():
            with np.load(Path(data.source).expanduser(), allow_pickle=False) as stored:
                if "images" in stored.files:
                    return {**write_image_npz(data, context, out_npz, require_labels=False), **facts_of(context)}
            model = context.model  # model-ready arrays: the seeded split is taken as for images
            loaded = load_images(data.source, preprocess_for(model.path, model.manifest.metadata), split=data.split,
                                 max_samples=data.max_samples, seed=data.seed)
            arrays, labels = _check_names(loaded.arrays, context, data.source), loaded.labels
        else:
            raise DataError(f"eval inputs {shorten(data.source)} are not an .npz file, an image folder or "
                            "pkg.module:function.", fix="check the --eval-data path.")
        limit = context.max_samples or data.max_samples
        if limit:
            arrays = {k: v[:limit] for k, v in arrays.items()}
            labels = None if labels is None else labels[:limit]
        for spec in context.inputs:  # the dtypes the model declares (an npz of float64 would not run in ORT)
            arrays[spec.name] = np.ascontiguousarray(arrays[spec.name], dtype=np.dtype(spec.dtype))
        write_arrays(out_npz, arrays, context, labels)
        digest = hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays))).hexdigest()
        return {"dataset": data.model_dump(), "examples": len(next(iter(arrays.values()))),
                "examples_sha256": digest, **facts_of(context)}


@register_evaluator("embedding")
class Embedding(Agreement):
    """Agreement per output with every float output read as a vector: cosine and relative error, never argmax
    (for an embedding model whose task names nothing, or to overrule a declared kind)."""

    forces_kind = "vector"
