"""Quality of a compressed model's outputs against fp32's on the same inputs: the arithmetic, per output kind.

Shared by the benchmark's evaluators (the verdict) and the accuracy fallback (which candidate to keep),
so both judge a model by the same numbers. Every output is compared with the metric that fits its kind
(slimline.core.output_kinds); the report names each output (`metric@output`) and also gives each metric
unsuffixed as the worst over the outputs that measure it, which is what a plain budget is judged on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimline.core.errors import DataError
from slimline.core.output_kinds import HIGHER_IS_BETTER, OUTPUT_SEPARATOR, ModelOutput

TOP_K = 5


def error_metrics(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """max / mean |candidate - reference| and the relative error ||candidate - reference|| / ||reference||
    over the whole output (stable where single values are near zero)."""
    difference = candidate.astype(np.float64) - reference.astype(np.float64)
    if difference.size == 0:
        return {}
    norm = float(np.linalg.norm(reference.astype(np.float64)))
    error = float(np.linalg.norm(difference))
    return {"max_abs_error": float(np.abs(difference).max()), "mean_abs_error": float(np.abs(difference).mean()),
            "rel_error": error / norm if norm > 0 else (0.0 if error == 0 else float("inf"))}


def class_logit_metrics(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Top-1 and top-k agreement with fp32 (over the last axis), the logits' error, and the top-1 drop's bound:
    without labels, a candidate can lose at most the predictions on which it disagrees with fp32."""
    metrics = error_metrics(candidate, reference)
    if candidate.ndim < 2 or candidate.shape[-1] < 2:
        return metrics
    expected = reference.argmax(-1)
    agreement = 100.0 * float(np.mean(candidate.argmax(-1) == expected))
    metrics["agreement_pct"] = agreement
    k = min(TOP_K, candidate.shape[-1])
    top = np.argsort(-candidate, axis=-1)[..., :k]
    metrics[f"top{k}_agreement_pct"] = 100.0 * float(np.mean((top == expected[..., None]).any(-1)))
    return metrics


def vector_metrics(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Cosine similarity of each example's output with fp32's (all its values as one vector): mean and 1st
    percentile (the worst examples, which a mean hides), and the error. An output of one value per
    example has no direction: only its error is reported."""
    metrics = error_metrics(candidate, reference)
    rows = len(candidate)
    mine = candidate.reshape(rows, -1).astype(np.float64)
    theirs = reference.reshape(rows, -1).astype(np.float64)
    if rows == 0 or mine.shape[1] < 2:
        return metrics
    norms = np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1)
    dots = np.sum(mine * theirs, axis=1)
    both_zero = (np.linalg.norm(mine, axis=1) == 0) & (np.linalg.norm(theirs, axis=1) == 0)
    cosine = np.where(both_zero, 1.0, dots / np.maximum(norms, 1e-30))
    metrics["cosine_mean"] = float(np.mean(cosine))
    metrics["cosine_p01"] = float(np.percentile(cosine, 1))
    return metrics


def output_metrics(kind: str, candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    if candidate.shape != reference.shape:
        raise ValueError(f"candidate output {candidate.shape} and fp32 output {reference.shape} differ in shape")
    if kind == "class-logits":
        return class_logit_metrics(candidate, reference)
    return vector_metrics(candidate, reference)


def worst(per_output: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric over the outputs that measure it, the worst value (a plain budget holds for every output)."""
    combined: dict[str, float] = {}
    for metrics in per_output.values():
        for name, value in metrics.items():
            if name not in combined:
                combined[name] = value
            else:
                pick = min if name in HIGHER_IS_BETTER else max
                combined[name] = pick(combined[name], value)
    return combined


def compare_outputs(outputs: list[ModelOutput], candidate: list[np.ndarray],
                    reference: list[np.ndarray]) -> dict[str, float]:
    """Every output that is not token logits, each with its kind's metrics (`metric@name`), plus the worst of
    each metric unsuffixed. Outputs are matched by position (a runtime may rename them)."""
    per_output: dict[str, dict[str, float]] = {}
    for output, mine, theirs in zip(outputs, candidate, reference, strict=False):
        if output.kind == "token-logits":
            continue
        per_output[output.name] = output_metrics(output.kind, np.asarray(mine), np.asarray(theirs))
    flat = worst(per_output)
    for name, metrics in per_output.items():
        flat.update({f"{metric}{OUTPUT_SEPARATOR}{name}": value for metric, value in metrics.items()})
    return flat


def drop_bound(metrics: dict[str, float]) -> dict[str, float]:
    """Without labels: top-1 drop <= disagreement with fp32 (per output and overall), marked as a bound."""
    bounds = {name.replace("agreement_pct", "top1_drop_pt"): 100.0 - value for name, value in metrics.items()
              if name.split(OUTPUT_SEPARATOR)[0] == "agreement_pct"}
    if not bounds:
        return {}
    accuracy = {name.replace("top1_drop_pt", "accuracy_drop_pt"): value for name, value in bounds.items()}
    return {**bounds, **accuracy, "top1_drop_is_bound": 1.0}


def token_windows(texts: list[str], tokenizer: Any, length: int, max_windows: int) -> np.ndarray:
    """Non-overlapping windows of `length` tokens over the documents joined by EOS (BOS first where there is one)."""
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.extend(separator)
        if len(stream) >= length * max_windows:
            break
    count = min(len(stream) // length, max_windows)
    if count == 0:
        raise DataError(f"the eval text has {len(stream)} tokens, fewer than one window of {length}.",
                        fix="give more text, or a profile with a shorter sequence_length.")
    return np.asarray(stream[: count * length], dtype=np.int64).reshape(count, length)


def token_nll(logits: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    """Per-token negative log-likelihood of ids[1:] under logits[:-1], float64, shape (batch, seq - 1)."""
    shifted = logits[:, :-1].astype(np.float64)
    shifted -= shifted.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=-1))
    chosen = np.take_along_axis(shifted, input_ids[:, 1:, None], axis=-1)[..., 0]
    return log_norm - chosen
