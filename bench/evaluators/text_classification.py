"""Text classification accuracy on a labelled text split (tokenised once with the model's tokenizer), plus the
logits against fp32's: agreement and logit error (outputs.py), so damage shows even where accuracy does not
move (a random-init classifier, a small eval set)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from slimline.benchmarking.eval_data import build_eval_npz
from slimline.benchmarking.evaluators.base import EvalContext, register_evaluator
from slimline.benchmarking.evaluators.outputs import OutputsEvaluator, facts_of, output_meta
from slimline.core.data import DatasetSpec, trimmed_batches


@register_evaluator("text-classification")
class TextClassification(OutputsEvaluator):
    tasks = ("text-classification",)
    top1_metric = "accuracy_pct"

    def prepare(self, data: DatasetSpec, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        if context.max_samples:
            data = data.model_copy(update={"max_samples": context.max_samples})
        return {**build_eval_npz(data, context.model.path, context.shape.sequence_length, out_npz,
                                 extra=output_meta(context)), **facts_of(context)}

    def batched(self, arrays: dict[str, np.ndarray], batch_size: int,
                axes: dict[str, int | None]) -> Iterable[dict[str, np.ndarray]]:
        return trimmed_batches(arrays, batch_size)  # padding cut per batch: the logits are per example
