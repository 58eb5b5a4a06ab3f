"""What the output-comparing evaluators share: every output kept, each compared with fp32 by its kind.

`score` (in the benchmark worker) runs the model over the prepared inputs, keeps every output (an .npz
of raw outputs in the model's order) and, when the inputs carry labels, scores the first class-logits
output against them. `compare` (main process) compares each output with the baseline's by the kind the
plan gave it (slimline.core.quality): agreement and logit error for class logits, cosine and relative
error for vectors; with labels the top-1 drop and its paired standard error, without them the drop's
upper bound (the disagreement with fp32).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from slimline.benchmarking.evaluators.base import (
    EvalContext,
    EvalScore,
    Evaluator,
    Forward,
    as_output_list,
    batch_axes,
    model_inputs,
    prediction_agreement,
)
from slimline.core.batch_axes import batches
from slimline.core.errors import DataError
from slimline.core.output_kinds import ModelOutput, resolve_outputs
from slimline.core.quality import TOP_K, compare_outputs, drop_bound
from slimline.core.stats import paired_drop_pt

OUTPUT_NAMES_KEY, OUTPUT_KINDS_KEY = "meta_output_names", "meta_output_kinds"


def context_outputs(context: EvalContext) -> list[ModelOutput]:
    """The plan's outputs, or (an EvalContext built by hand) the model's own, kinds by its task and declaration."""
    if context.outputs:
        return context.outputs
    manifest = context.model.manifest
    return resolve_outputs(manifest.task, manifest.outputs, manifest.metadata.get("output_kinds"))


def output_meta(context: EvalContext) -> dict[str, np.ndarray]:
    """The outputs and their kinds, stored beside the inputs so that `compare` knows how to judge each."""
    outputs = context_outputs(context)
    return {OUTPUT_NAMES_KEY: np.array([o.name for o in outputs]),
            OUTPUT_KINDS_KEY: np.array([o.kind for o in outputs])}


def outputs_of(npz: Path) -> list[ModelOutput]:
    with np.load(npz, allow_pickle=False) as data:
        if OUTPUT_NAMES_KEY not in data.files:
            return [ModelOutput("output", "class-logits")]  # prepared before outputs had kinds: the old default
        return [ModelOutput(str(name), str(kind))  # type: ignore[arg-type]
                for name, kind in zip(data[OUTPUT_NAMES_KEY], data[OUTPUT_KINDS_KEY], strict=True)]


def class_output_index(outputs: list[ModelOutput]) -> int | None:
    return next((i for i, o in enumerate(outputs) if o.kind == "class-logits"), None)


def run_over(forward: Forward, batched: Iterable[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Every output over every batch, concatenated along the batch axis, in the model's output order."""
    parts: list[list[np.ndarray]] = []
    for batch in batched:
        for index, array in enumerate(as_output_list(forward(batch))):
            if index == len(parts):
                parts.append([])
            parts[index].append(np.asarray(array, dtype=np.float32) if np.issubdtype(np.asarray(array).dtype,
                                                                                      np.floating) else array)
    return [np.concatenate(chunks) for chunks in parts]


def save_outputs(path: Path, outputs: list[np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a handle: np.savez would append .npz to a path
        np.savez(handle, **{f"output_{i}": array for i, array in enumerate(outputs)})


def load_outputs(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"output_{i}"] for i in range(len(data.files))]


class OutputsEvaluator(Evaluator):
    """Base of the evaluators that compare outputs with fp32 (see the module docstring)."""

    keeps_outputs = True
    multi_output = True
    #: Names of the labelled top-1 metric this evaluator reports (image: top1_pct; text: accuracy_pct).
    top1_metric: ClassVar[str] = "top1_pct"

    def batched(self, arrays: dict[str, np.ndarray], batch_size: int,
                axes: dict[str, int | None]) -> Iterable[dict[str, np.ndarray]]:
        return batches(arrays, batch_size, axes)

    def score(self, forward: Forward, npz: Path, batch_size: int, outputs_path: Path | None) -> EvalScore:
        arrays, labels = model_inputs(npz)
        outputs = run_over(forward, self.batched(arrays, batch_size, batch_axes(npz)))
        if outputs_path is not None:
            save_outputs(outputs_path, outputs)
        index = class_output_index(outputs_of(npz))
        if index is None or index >= len(outputs):
            return EvalScore(outputs_path=None if outputs_path is None else str(outputs_path))
        logits = outputs[index]
        top1 = logits.argmax(-1)
        metrics: dict[str, float] = {}
        if labels is not None:
            metrics[self.top1_metric] = 100.0 * float(np.mean(top1 == labels))
            metrics["accuracy_pct"] = metrics[self.top1_metric]  # the generic accuracy columns read this
            if logits.shape[-1] >= TOP_K:
                top = np.argsort(-logits, axis=-1)[:, :TOP_K]
                metrics["top5_pct"] = 100.0 * float(np.mean((top == labels[:, None]).any(axis=1)))
        return EvalScore(metrics=metrics, predictions=top1.reshape(-1).tolist(),
                         outputs_path=None if outputs_path is None else str(outputs_path))

    def compare(self, candidate: EvalScore, baseline: EvalScore, npz: Path) -> dict[str, float]:
        compared = prediction_agreement(candidate, baseline)  # without raw outputs: top-1 agreement at least
        if candidate.outputs_path is not None and baseline.outputs_path is not None:
            compared.update(self._compare_outputs(outputs_of(npz), load_outputs(candidate.outputs_path),
                                                  load_outputs(baseline.outputs_path)))
        _, labels = model_inputs(npz)
        if labels is not None and self.top1_metric in candidate.metrics and self.top1_metric in baseline.metrics:
            drop = baseline.metrics[self.top1_metric] - candidate.metrics[self.top1_metric]
            compared["top1_drop_pt"] = drop
            if candidate.predictions is not None and baseline.predictions is not None:
                compared["top1_drop_se_pt"] = paired_drop_pt(np.asarray(baseline.predictions) == labels,
                                                             np.asarray(candidate.predictions) == labels)[1]
        else:
            compared.update(drop_bound(compared))
        return compared

    @staticmethod
    def _compare_outputs(outputs: list[ModelOutput], mine: list[np.ndarray],
                         theirs: list[np.ndarray]) -> dict[str, float]:
        if len(mine) != len(theirs):
            raise DataError(f"the candidate has {len(mine)} outputs and the baseline {len(theirs)}.",
                            fix="the candidate is not a drop-in replacement for the baseline model.")
        for output, a, b in zip(outputs, mine, theirs, strict=False):
            if a.shape != b.shape:
                raise DataError(f"output {output.name}: candidate {a.shape} and baseline {b.shape} differ in shape.",
                                fix="the candidate is not a drop-in replacement for the baseline model.")
        return compare_outputs(outputs, mine, theirs)


def write_arrays(out_npz: Path, arrays: dict[str, np.ndarray], context: EvalContext,
                 labels: np.ndarray | None = None) -> None:
    np.savez(out_npz, **arrays, **({} if labels is None else {"labels": labels}), **output_meta(context))


def facts_of(context: EvalContext) -> dict[str, Any]:
    return {"outputs": [{"name": o.name, "kind": o.kind} for o in context_outputs(context)]}
