"""Agreement with fp32 for any model: the candidate's outputs against the baseline's on the same inputs.

Inputs come from an .npz (arrays named like the model's inputs; raw `images` are preprocessed the
model's way) or from a user callable `pkg.module:function` that returns a dict of arrays, or a list
of such dicts (concatenated). No labels are needed: `agreement_pct` (top-1 over the last axis),
`top{k}_agreement_pct` (the baseline's top-1 is in the candidate's top-k) and `max_abs_error` /
`mean_abs_error` of the raw outputs say how far a compressed model strays from the model it replaces.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from slimline.bench.evaluators.base import (
    EvalContext,
    EvalScore,
    EvalSource,
    Evaluator,
    Forward,
    batches,
    model_inputs,
    register_evaluator,
)
from slimline.bench.evaluators.image_top1 import write_image_npz
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
class Agreement(Evaluator):
    keeps_outputs = True

    def prepare(self, data: EvalSource, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        kind = data.kind()
        if kind == "callable":
            arrays = _check_names(call_user_inputs(data.source), context, data.source)
        elif kind == "folder":
            return write_image_npz(data, context, out_npz, require_labels=False)
        elif kind == "npz" and Path(data.source).expanduser().is_file():
            with np.load(Path(data.source).expanduser(), allow_pickle=False) as stored:
                if "images" in stored.files:
                    return write_image_npz(data, context, out_npz, require_labels=False)
            model = context.model  # model-ready arrays: the seeded split is taken as for images
            loaded = load_images(data.source, preprocess_for(model.path, model.manifest.metadata), split=data.split,
                                 max_samples=data.max_samples, seed=data.seed)
            arrays = _check_names(loaded.arrays, context, data.source)
        else:
            raise DataError(f"eval inputs {shorten(data.source)} are not an .npz file, an image folder or "
                            "pkg.module:function.", fix="check the --eval-data path.")
        limit = context.max_samples or data.max_samples
        if limit:
            arrays = {k: v[:limit] for k, v in arrays.items()}
        for spec in context.inputs:  # the dtypes the model declares (an npz of float64 would not run in ORT)
            arrays[spec.name] = np.ascontiguousarray(arrays[spec.name], dtype=np.dtype(spec.dtype))
        np.savez(out_npz, **arrays)
        digest = hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays))).hexdigest()
        return {"dataset": data.model_dump(), "examples": len(next(iter(arrays.values()))),
                "examples_sha256": digest}

    def score(self, forward: Forward, npz: Path, batch_size: int, outputs_path: Path | None) -> EvalScore:
        arrays, _ = model_inputs(npz)
        outputs = np.concatenate([np.asarray(forward(batch), dtype=np.float32)
                                  for batch in batches(arrays, batch_size)])
        if outputs_path is not None:
            np.save(outputs_path, outputs)
        predictions = outputs.argmax(-1).reshape(-1) if outputs.ndim >= 2 else None
        return EvalScore(predictions=None if predictions is None else predictions.tolist(),
                         outputs_path=None if outputs_path is None else str(outputs_path))

    def compare(self, candidate: EvalScore, baseline: EvalScore, npz: Path) -> dict[str, float]:
        top_k = 5
        if candidate.outputs_path is None or baseline.outputs_path is None:
            return {}
        mine, theirs = np.load(candidate.outputs_path), np.load(baseline.outputs_path)
        if mine.shape != theirs.shape:
            raise DataError(f"candidate outputs {mine.shape} and baseline outputs {theirs.shape} differ in shape.",
                            fix="the candidate is not a drop-in replacement for the baseline model.")
        error = np.abs(mine.astype(np.float64) - theirs)
        compared = {"max_abs_error": float(error.max()), "mean_abs_error": float(error.mean())}
        if mine.ndim >= 2 and mine.shape[-1] > 1:
            reference = theirs.argmax(-1)
            compared["agreement_pct"] = 100.0 * float(np.mean(mine.argmax(-1) == reference))
            k = min(top_k, mine.shape[-1])
            top = np.argsort(-mine, axis=-1)[..., :k]
            compared[f"top{k}_agreement_pct"] = 100.0 * float(np.mean((top == reference[..., None]).any(-1)))
        return compared
