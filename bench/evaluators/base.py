"""Evaluators: how a model's quality is measured, chosen by task (or by name), pluggable.

Every candidate and the baseline are scored on the *same* arrays: `prepare` (main process, once)
writes them to an .npz; `score` (in each benchmark worker, with that worker's runner) turns the
model's outputs into metrics; `compare` (main process) turns a candidate's score and the
baseline's into metrics relative to the baseline (drops, agreement, error). Metric names carry
their unit (`top1_pct`, `perplexity_increase_pct`); any of them can be a profile budget once it
is listed in profiles/schema.py BUDGET_METRICS.

How to add one (e.g. causal-LM perplexity):
  1. Write `slimline/bench/evaluators/<module>.py` with a subclass of `Evaluator` decorated with
     `@register_evaluator("<name>")`; set `tasks` to the tasks it is the default for.
  2. Map the name to its module in `EVALUATOR_MODULES` below (modules are imported lazily, so
     importing slimline never imports numpy-heavy evaluators or the runtimes).
  3. `prepare(data, context, out_npz)`: build the inputs every runner reads; return facts for the
     report (source, count, sha256). `score(forward, npz, batch_size, outputs_path)`: run `forward`
     (one batch of numpy feeds -> the model's first output) over it, return an `EvalScore`.
     `compare(candidate, baseline)`: metrics vs the baseline (each score may point at its raw outputs).
  4. Add budget metric names to BUDGET_METRICS (profiles/schema.py); the verdict reads any metric
     from `CandidateResult.quality` (bench/budgets.py).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import DataError
from slimline.profiles.schema import Shape

#: One batch of feeds -> the model's first output (logits), as numpy: a runner's `run`.
Forward = Callable[[dict[str, np.ndarray]], np.ndarray]

#: Evaluator name -> the module that registers it (imported on first use).
EVALUATOR_MODULES: dict[str, str] = {
    "text-classification": "slimline.bench.evaluators.text_classification",
    "image-top1": "slimline.bench.evaluators.image_top1",
    "agreement": "slimline.bench.evaluators.agreement",
    "perplexity": "slimline.bench.evaluators.perplexity",
}
#: Task -> its default evaluator when eval data is given without naming one.
TASK_EVALUATORS: dict[str, str] = {
    "text-classification": "text-classification",
    "image-classification": "image-top1",
    "text-generation": "perplexity",
}


class EvalSource(BaseModel):
    """Eval data that is not a labelled text dataset: an image folder, an .npz, or `pkg.module:callable`.

    `evaluator` None: the task's default (TASK_EVALUATORS), or `agreement` when the task has none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    evaluator: str | None = None
    split: Literal["train", "validation", "test", "all"] = "all"
    max_samples: int | None = Field(default=None, gt=0)
    seed: int = 0

    def kind(self) -> Literal["folder", "npz", "callable", "text"]:
        path = Path(self.source).expanduser()
        if path.is_dir():
            return "folder"
        if self.source.endswith(".npz"):
            return "npz"
        if ":" in self.source and "." in self.source.partition(":")[0] and not path.exists():
            return "callable"
        return "text"


class EvalScore(BaseModel):
    """One model's score: metrics of its own, top-1 per example (for paired comparisons), raw outputs."""

    metrics: dict[str, float] = Field(default_factory=dict)
    predictions: list[int] | None = None
    outputs_path: str | None = None  # .npy of the raw outputs, written when the evaluator compares errors


@dataclass
class EvalContext:
    """What `prepare` may use: the source model (tokenizer, preprocessing), its inputs and the profile's shape."""

    model: ModelDir
    inputs: list[TensorSpec]
    shape: Shape = field(default_factory=Shape)
    max_samples: int | None = None  # the profile's eval_max_samples


class Evaluator(ABC):
    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ()
    #: Writes each model's raw outputs for `compare` (memory: examples x output size floats).
    keeps_outputs: ClassVar[bool] = False

    @abstractmethod
    def prepare(self, data: Any, context: EvalContext, out_npz: Path) -> dict[str, Any]:
        """Write the arrays every runner reads to `out_npz`; return facts for the report."""

    @abstractmethod
    def score(self, forward: Forward, npz: Path, batch_size: int, outputs_path: Path | None) -> EvalScore:
        """Run the model over the prepared arrays (in the benchmark worker)."""

    def compare(self, candidate: EvalScore, baseline: EvalScore, npz: Path) -> dict[str, float]:
        """Metrics relative to the baseline; the default: top-1 agreement from the predictions."""
        return prediction_agreement(candidate, baseline)


def prediction_agreement(candidate: EvalScore, baseline: EvalScore) -> dict[str, float]:
    if candidate.predictions is None or baseline.predictions is None:
        return {}
    mine, theirs = np.asarray(candidate.predictions), np.asarray(baseline.predictions)
    return {"agreement_pct": 100.0 * float(np.mean(mine == theirs))}


_REGISTRY: dict[str, type[Evaluator]] = {}


def register_evaluator(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    def decorate(cls: type[Evaluator]) -> type[Evaluator]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"evaluator {name!r} registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_evaluator(name: str) -> Evaluator:
    """The evaluator registered as `name`, importing its module on first use."""
    if name not in _REGISTRY and name in EVALUATOR_MODULES:
        try:
            importlib.import_module(EVALUATOR_MODULES[name])
        except ModuleNotFoundError as err:
            if err.name != EVALUATOR_MODULES[name]:
                raise
    if name not in _REGISTRY:
        known = sorted(set(EVALUATOR_MODULES) | set(_REGISTRY))
        raise DataError(f"no evaluator named {name!r}.", fix=f"use one of {', '.join(known)}.")
    return _REGISTRY[name]()


def evaluator_name_for(task: str, source: Any = None) -> str:
    """The evaluator a run uses: the one the source names, else the task's, else agreement with fp32.
    A labelled text dataset (core.data.DatasetSpec) is always text classification."""
    if source is not None and not isinstance(source, EvalSource):
        return "text-classification"
    if source is not None and source.evaluator:
        return source.evaluator
    if source is not None and source.kind() == "callable":
        return "agreement"
    return TASK_EVALUATORS.get(task, "agreement")


def batches(arrays: dict[str, np.ndarray], batch_size: int,
            axes: dict[str, int | None] | None = None) -> list[dict[str, np.ndarray]]:
    """Batches of examples. `axes` says where each input's batch axis is (default: the first); an input with
    none (None: a scalar, a tensor the batch shares) goes whole into every batch."""
    axes = axes or {}
    batched = {k: axes.get(k, 0) for k in arrays if axes.get(k, 0) is not None}
    if not batched:  # nothing to split: the arrays are one call
        return [dict(arrays)]
    first = next(iter(batched))
    count = arrays[first].shape[batched[first]]
    return [{k: v if k not in batched else np.take(v, np.arange(i, min(i + batch_size, count)), axis=batched[k])
             for k, v in arrays.items()} for i in range(0, count, batch_size)]


#: An npz entry of the prepared eval arrays: {input: batch axis or null}, for inputs whose batch is not first.
BATCH_AXES_KEY = "meta_batch_axes"


def batch_axes(npz: Path) -> dict[str, int | None]:
    """The prepared arrays' batch axes (empty: every input's batch is its first axis)."""
    import json

    with np.load(npz, allow_pickle=False) as data:
        return json.loads(str(data[BATCH_AXES_KEY])) if BATCH_AXES_KEY in data.files else {}


def model_inputs(npz: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The prepared arrays, minus `labels` (returned apart) and any `meta_*` entries."""
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith("meta_")}
    return arrays, arrays.pop("labels", None)


EVAL_SPLITS = ("train", "validation", "test", "all")


def parse_eval_arg(value: Any) -> Any:
    """--eval-data: a labelled text dataset (rotten-tomatoes[:split], .csv/.jsonl -> core.data.DatasetSpec), or
    `PATH[:split]` for an image folder / .npz, or `pkg.module:function` (-> EvalSource)."""
    from slimline.core.data import DatasetSpec, parse_dataset_arg

    if value is None or isinstance(value, (DatasetSpec, EvalSource)):
        return value
    text = str(value)
    if text.partition(":")[0] == "rotten-tomatoes" or text.endswith((".csv", ".jsonl")):
        return parse_dataset_arg(text)
    head, _, tail = text.rpartition(":")
    source, split = (head, tail) if head and tail in EVAL_SPLITS else (text, "all")
    return EvalSource(source=source, split=split)  # type: ignore[arg-type]


def check_eval_source(source: EvalSource) -> None:
    """The cheap pre-flight: the folder or .npz exists (a callable is imported when the data is prepared)."""
    if source.kind() == "callable":
        return
    path = Path(source.source).expanduser()
    if not path.exists():
        raise DataError(f"eval data {source.source} does not exist.",
                        fix="pass an image folder (root/<class>/<image>), an .npz, or pkg.module:function.")
    if source.kind() == "text":
        raise DataError(f"eval data {source.source} is not a folder, an .npz, a .csv/.jsonl or pkg.module:function.",
                        fix="convert it to one of those.")
