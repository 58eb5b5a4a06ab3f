"""What a model's outputs are, and which quality metrics (and so which budgets) can see damage in each.

A metric that does not fit an output hides damage: argmax "agreement" over the 4 offsets of a box or
over the dimensions of an embedding says nothing about either. So each output has a kind, and the
kind decides its metrics:

- `class-logits`: one score per class (argmax is the prediction): top-1 / top-5 agreement with fp32,
  the logits' error, and with labels the accuracy drop (without labels the top-1 drop is bounded by
  the disagreement with fp32, and reported as that bound);
- `vector`: embeddings and any other float tensor (box offsets, keypoints, a score): cosine similarity
  with fp32 per example (mean and 1st percentile) and the relative and absolute error;
- `token-logits`: a causal LM's next-token logits: perplexity on text and greedy-continuation agreement.

Kept free of numpy so that profiles (which name the kinds) stay cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutputKind = Literal["class-logits", "vector", "token-logits"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("class-logits", "vector", "token-logits")
KIND_DESCRIPTIONS: dict[str, str] = {
    "class-logits": "class scores",
    "vector": "float vectors (embeddings, boxes, keypoints, scores)",
    "token-logits": "next-token logits of a causal LM",
}

#: Separates a metric from the output it is measured on, in reports and budget names: `cosine_mean@embeddings`.
OUTPUT_SEPARATOR = "@"

#: Quality metrics each kind measures (vs the fp32 baseline, on the same inputs).
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "class-logits": ("agreement_pct", "top5_agreement_pct", "max_abs_error", "mean_abs_error", "rel_error",
                     "top1_drop_pt", "accuracy_drop_pt", "accuracy_pct"),
    "vector": ("cosine_mean", "cosine_p01", "rel_error", "max_abs_error", "mean_abs_error"),
    "token-logits": ("perplexity_increase_pct", "continuation_agreement_pct"),
}
#: Of those, the ones that need labelled data (the others compare with fp32 and need none).
LABELLED_METRICS = frozenset({"accuracy_pct"})
#: Every metric an evaluator reports about quality (the rest of the budgets are speed, size and memory).
QUALITY_METRICS = frozenset(metric for metrics in KIND_METRICS.values() for metric in metrics)
#: Budgets only a causal LM's benchmark measures (prefill and decoding from the KV cache).
GENERATION_METRICS = frozenset({"prefill_p50_ms", "decode_tokens_per_s", "decode_speedup_vs_baseline"})
#: Metrics where more is better: the worst over several outputs is the smallest.
HIGHER_IS_BETTER = frozenset({"agreement_pct", "top5_agreement_pct", "cosine_mean", "cosine_p01",
                              "continuation_agreement_pct", "accuracy_pct", "top1_pct", "top5_pct"})

#: Task -> the kind of the model's first output when nothing declares it.
TASK_FIRST_OUTPUT_KIND: dict[str, OutputKind] = {"text-generation": "token-logits"}


@dataclass(frozen=True)
class ModelOutput:
    """One output of a model and how its quality is measured."""

    name: str
    kind: OutputKind

    def describe(self) -> str:
        return f"{self.name} ({self.kind}: {KIND_DESCRIPTIONS[self.kind]})"


def split_metric(name: str) -> tuple[str, str | None]:
    """`cosine_mean@embeddings` -> ("cosine_mean", "embeddings"); a plain metric -> (metric, None)."""
    metric, separator, output = name.partition(OUTPUT_SEPARATOR)
    return metric, (output if separator else None)


#: Output names that say what they are whatever the task (the transformers convention for class scores).
CLASS_LOGIT_NAMES = frozenset({"logits"})


def default_kind(task: str, index: int, name: str = "") -> OutputKind:
    """A classifier's first output is class logits, a causal LM's token logits, and so is an output named
    `logits`; anything else is a float vector (never argmaxed unless declared class-logits)."""
    if index == 0 and task in TASK_FIRST_OUTPUT_KIND:
        return TASK_FIRST_OUTPUT_KIND[task]
    if (index == 0 and task.endswith("classification")) or name in CLASS_LOGIT_NAMES:
        return "class-logits"
    return "vector"


def resolve_outputs(task: str, names: list[str], declared: dict[str, str] | None = None,
                    override: dict[str, str] | None = None, force_kind: OutputKind | None = None) -> list[ModelOutput]:
    """The model's outputs with their kinds: `force_kind` (an evaluator that fixes it, e.g. `embedding`) for every
    float output, else the profile's `eval.outputs`, else what the model declares (an input spec's
    `output_kinds`), else the task's default."""
    names = names or ["logits"]
    outputs = []
    for index, name in enumerate(names):
        kind = (override or {}).get(name) or (declared or {}).get(name) or default_kind(task, index, name)
        if force_kind is not None and kind != "token-logits":
            kind = force_kind
        outputs.append(ModelOutput(name, kind))  # type: ignore[arg-type]
    return outputs


def metric_fits(metric: str, outputs: list[ModelOutput], has_labels: bool) -> bool:
    """Whether some output (or the named one) of this model can measure `metric`."""
    base, output = split_metric(metric)
    chosen = [o for o in outputs if output is None or o.name == output]
    if base in LABELLED_METRICS and not has_labels:
        return False
    return any(base in KIND_METRICS[o.kind] for o in chosen)


def fitting_metrics(outputs: list[ModelOutput], has_labels: bool) -> list[str]:
    """The quality budgets this model and data can be judged on, per output when there are several."""
    names: list[str] = []
    for output in outputs:
        for metric in KIND_METRICS[output.kind]:
            if metric in LABELLED_METRICS and not has_labels:
                continue
            names.append(metric if len(outputs) == 1 else f"{metric}{OUTPUT_SEPARATOR}{output.name}")
    return names
