"""Text classification accuracy on a labelled text split (tokenised once with the model's tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimline.bench.eval_data import accuracy_of, build_eval_npz
from slimline.bench.evaluators.base import EvalContext, EvalScore, Evaluator, Forward, model_inputs, register_evaluator
from slimline.core.data import DatasetSpec, trimmed_batches


@register_evaluator("text-classification")
class TextClassification(Evaluator):
    tasks = ("text-classification",)

    def prepare(self, data: DatasetSpec, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        if context.max_samples:
            data = data.model_copy(update={"max_samples": context.max_samples})
        return build_eval_npz(data, context.model.path, context.shape.sequence_length, out_npz)

    def score(self, forward: Forward, npz: Path, batch_size: int, outputs_path: Path | None) -> EvalScore:
        arrays, labels = model_inputs(npz)
        predicted = np.concatenate([forward(batch).argmax(-1) for batch in trimmed_batches(arrays, batch_size)])
        return EvalScore(metrics={"accuracy_pct": 100.0 * accuracy_of(predicted, labels)},
                         predictions=predicted.tolist())
