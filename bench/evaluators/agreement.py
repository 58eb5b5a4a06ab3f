"""Agreement with fp32 for any model: every output of the candidate against the baseline's on the same inputs.

Inputs come from an .npz (arrays named like the model's inputs; raw `images` are preprocessed the
model's way), an image folder, or a user callable `pkg.module:function` that returns a dict of arrays,
or a list of such dicts (concatenated). Each array has the layout of its input: the examples lie along the
input's batch axis, which need not be the first (a recurrent state `[layers, batch, hidden]`), and an input
without a batch axis (a scalar) is one value every example shares. No labels are needed. Each output is
judged by its kind (slimline.core.output_kinds): class logits by top-1 / top-k agreement and the logits'
error, vectors (embeddings, boxes, keypoints, scores) by cosine similarity and relative error. `embedding`
is the same evaluator with every float output read as a vector.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from slimline.benchmarking.evaluators.base import BATCH_AXES_KEY, EvalContext, EvalSource, register_evaluator
from slimline.benchmarking.evaluators.image_top1 import write_image_npz
from slimline.benchmarking.evaluators.outputs import OutputsEvaluator, facts_of, write_arrays
from slimline.core.artifact import TensorSpec
from slimline.core.batch_axes import take_rows
from slimline.core.data import split_indices
from slimline.core.errors import DataError, shorten
from slimline.formats.inputs import batch_axis


def call_user_inputs(reference: str, axes: dict[str, int | None] | None = None) -> dict[str, np.ndarray]:
    """Import `pkg.module:function` (the working directory is importable, as with `python -m`) and call it; a list
    of dicts is joined along each input's batch axis (`axes`, default the first; None: the first dict's value)."""
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
    axes = axes or {}
    return {name: np.asarray(parts[0][name]) if name in axes and axes[name] is None
            else np.concatenate([np.asarray(p[name]) for p in parts], axis=axes.get(name) or 0) for name in parts[0]}


def _layout_problem(spec: TensorSpec, values: np.ndarray) -> str | None:
    if values.ndim != len(spec.shape):
        return f"has {values.ndim} axes {values.shape}, the input takes {len(spec.shape)} {spec.shape}"
    fixed = [(i, axis) for i, axis in enumerate(spec.shape) if isinstance(axis, int) and axis > 0]
    wrong = [f"axis {i} is {values.shape[i]}, not {axis}" for i, axis in fixed if values.shape[i] != axis]
    return f"has shape {values.shape} for {spec.shape}: {'; '.join(wrong)}" if wrong else None


def _check_names(arrays: dict[str, np.ndarray], context: EvalContext, source: str) -> tuple[dict[str, np.ndarray],
                                                                                             int]:
    """The model's inputs from `arrays`, each in the input's own layout; returns them and the example count (the
    size of every batch axis; 1 when no input has one)."""
    wanted = [s.name for s in context.inputs]
    missing = [name for name in wanted if name not in arrays]
    if missing:
        raise DataError(f"eval inputs {shorten(source)} lack model input(s) {missing}; they hold {sorted(arrays)}.",
                        fix=f"name the arrays after the model's inputs: {wanted}.")
    counts = {}
    for spec in context.inputs:
        values = np.asarray(arrays[spec.name])
        problem = _layout_problem(spec, values)
        if problem:
            raise DataError(f"eval input {spec.name} in {shorten(source)} {problem}.",
                            fix="store each input in the model's layout: the examples along its `batch` axis "
                                "(wherever it is), one shared value for an input without one (shape [] for a "
                                "scalar).")
        axis = batch_axis(spec)
        if axis is not None:
            counts[spec.name] = values.shape[axis]
    if len(set(counts.values())) > 1:
        raise DataError(f"eval inputs {shorten(source)} have different example counts per input ({counts}).",
                        fix="give every input the same number of examples along its batch axis.")
    return {name: np.asarray(arrays[name]) for name in wanted}, next(iter(counts.values()), 1)


@register_evaluator("agreement")
class Agreement(OutputsEvaluator):
    """Every output against fp32's by its kind (see outputs.py); no labels needed (used when there are)."""

    def prepare(self, data: EvalSource, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        kind = data.kind()
        axes = {spec.name: batch_axis(spec) for spec in context.inputs}
        labels = None
        if kind == "callable":
            arrays, count = _check_names(call_user_inputs(data.source, axes), context, data.source)
            rows = np.arange(count)
        elif kind == "folder":
            return {**write_image_npz(data, context, out_npz, require_labels=False), **facts_of(context)}
        elif kind == "npz" and Path(data.source).expanduser().is_file():
            with np.load(Path(data.source).expanduser(), allow_pickle=False) as stored:
                if "images" in stored.files:
                    return {**write_image_npz(data, context, out_npz, require_labels=False), **facts_of(context)}
                arrays, count = _check_names({k: stored[k] for k in stored.files if k != "labels"}, context,
                                             data.source)
                labels = stored["labels"] if "labels" in stored.files else None
            rows = split_indices(count, data.split, data.seed)  # the seeded split, taken as for images
            if len(rows) == 0:
                raise DataError(f"split {data.split!r} of {shorten(data.source)} is empty ({count} examples in all).",
                                fix="use more examples, or split 'all'.")
            arrays = take_rows(arrays, axes, rows)
            labels = None if labels is None else labels[rows]
        else:
            raise DataError(f"eval inputs {shorten(data.source)} are not an .npz file, an image folder or "
                            "pkg.module:function.", fix="check the --eval-data path.")
        limit = context.max_samples or data.max_samples
        examples = len(rows)
        if limit and limit < examples:
            arrays, examples = take_rows(arrays, axes, np.arange(limit)), limit
            labels = None if labels is None else labels[:limit]
        for spec in context.inputs:  # the dtypes the model declares (an npz of float64 would not run in ORT)
            arrays[spec.name] = np.array(arrays[spec.name], dtype=np.dtype(spec.dtype), order="C")  # a scalar stays 0-d
        digest = hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays))).hexdigest()
        write_arrays(out_npz, {**arrays, BATCH_AXES_KEY: np.array(json.dumps(axes))}, context, labels)
        return {"dataset": data.model_dump(), "examples": examples, "examples_sha256": digest, **facts_of(context)}


@register_evaluator("embedding")
class Embedding(Agreement):
    """Agreement per output with every float output read as a vector: cosine and relative error, never argmax
    (for an embedding model whose task names nothing, or to overrule a declared kind)."""

    forces_kind = "vector"
