"""Embedding models (task feature-extraction): each text's pooled vector against the baseline's, by cosine.

An encoder's first output is per-token hidden states; its users pool them into one vector per text
(slimline.core.pooling: the checkpoint's sentence-transformers pooling, else the mean over real tokens),
so that pooled vector is what is compared. Texts come from the user's data (rotten-tomatoes, a
.csv/.jsonl text column, or a .txt file with one text per line; labels are not needed), tokenised with
the model's tokenizer; an .npz of model-ready arrays (input_ids, attention_mask) works too.
`cosine_mean` and `cosine_p01` (the 1st percentile: the worst texts) say how far a compressed model's
embeddings moved; argmax agreement over embedding dimensions would say nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from slimline.benchmarking.evaluators.base import (
    EvalContext,
    EvalScore,
    EvalSource,
    Evaluator,
    Forward,
    model_inputs,
    register_evaluator,
)
from slimline.core.batch_axes import batches
from slimline.core.data import ROTTEN_TOMATOES, DatasetSpec, load_texts
from slimline.core.errors import DataError
from slimline.core.pooling import pool, pooling_of
from slimline.core.quality import vector_metrics

DEFAULT_TEXTS = 256
POOLING_KEY = "meta_pooling"


def texts_of(data: DatasetSpec | EvalSource | str, limit: int | None) -> tuple[list[str], dict[str, Any]]:
    """The texts to embed and a name for the report."""
    source = data.source if isinstance(data, (DatasetSpec, EvalSource)) else str(data)
    path = Path(source).expanduser()
    if path.suffix in (".txt", ".md") and path.is_file():
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        name: dict[str, Any] = {"source": str(path), "split": "all"}
    else:
        if not isinstance(data, DatasetSpec):
            if source != ROTTEN_TOMATOES and not source.endswith((".csv", ".jsonl")):
                raise DataError(f"embedding eval data {source} is not text (rotten-tomatoes, .csv/.jsonl with a text "
                                "column, or a .txt with one text per line).", fix="pass --eval-data TEXTS.csv")
            data = DatasetSpec(source=source, split=getattr(data, "split", "test"))  # type: ignore[arg-type]
        texts, _ = load_texts(data)
        name = {"source": data.source, "split": data.split}
    if not texts:
        raise DataError(f"embedding eval data {source} holds no texts.", fix="point at a file with texts.")
    return texts[: limit or DEFAULT_TEXTS], name


@register_evaluator("text-embedding")
class TextEmbedding(Evaluator):
    tasks = ("feature-extraction",)
    keeps_outputs = True
    forces_kind = "vector"

    def prepare(self, data: Any, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        from slimline.core.tokenizers import load_tokenizer

        pooling = pooling_of(context.model.path)
        if isinstance(data, EvalSource) and data.kind() == "npz":
            with np.load(Path(data.source).expanduser(), allow_pickle=False) as stored:
                arrays = {spec.name: stored[spec.name] for spec in context.inputs if spec.name in stored.files}
            name: dict[str, Any] = {"source": data.source}
        else:
            if not (context.model.path / "tokenizer_config.json").is_file():
                raise DataError(f"{context.model.path} has no tokenizer, so texts cannot be embedded.",
                                fix="save the tokenizer next to the model, or pass an .npz of input_ids.")
            texts, name = texts_of(data, context.max_samples)
            tokenizer, _ = load_tokenizer(context.model.path)
            encoded = tokenizer(texts, padding="longest", truncation=True,
                                max_length=context.shape.sequence_length, return_tensors="np")
            arrays = {spec.name: np.asarray(encoded[spec.name], dtype=np.dtype(spec.dtype))
                      for spec in context.inputs if spec.name in encoded}
        missing = [spec.name for spec in context.inputs if spec.name not in arrays]
        if missing:
            raise DataError(f"embedding eval data cannot feed the model's inputs {missing}.",
                            fix="pass texts the model's tokenizer can encode, or an .npz naming every input.")
        np.savez(out_npz, **arrays, **{POOLING_KEY: np.array(pooling)})
        digest = hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays))).hexdigest()
        return {"dataset": name, "examples": len(next(iter(arrays.values()))), "pooling": pooling,
                "examples_sha256": digest}

    def score(self, forward: Forward, npz: Path, batch_size: int, outputs_path: Path | None) -> EvalScore:
        arrays, _ = model_inputs(npz)
        with np.load(npz, allow_pickle=False) as stored:
            pooling = str(stored[POOLING_KEY]) if POOLING_KEY in stored.files else "mean"
        vectors = np.concatenate([pool(forward(batch), batch.get("attention_mask"), pooling)  # type: ignore[arg-type]
                                  for batch in batches(arrays, batch_size)])
        if outputs_path is not None:
            np.save(outputs_path, vectors)
        return EvalScore(metrics={"embedding_width": float(vectors.shape[1])},
                         outputs_path=None if outputs_path is None else str(outputs_path))

    def compare(self, candidate: EvalScore, baseline: EvalScore, npz: Path) -> dict[str, float]:
        if candidate.outputs_path is None or baseline.outputs_path is None:
            return {}
        mine, theirs = np.load(candidate.outputs_path), np.load(baseline.outputs_path)
        if mine.shape != theirs.shape:
            raise DataError(f"candidate embeddings {mine.shape} and baseline embeddings {theirs.shape} differ in "
                            "shape.", fix="the candidate is not a drop-in replacement for the baseline model.")
        return vector_metrics(mine, theirs)  # the same cosine and error figures as every other vector output
