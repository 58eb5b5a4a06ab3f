"""Evaluators: how a model's quality is measured, chosen by task and data (or by name), pluggable.

Every candidate and the baseline are scored on the *same* arrays: `prepare` (main process, once)
writes them to an .npz; `score` (in each benchmark worker, with that worker's runner) turns the
model's outputs into metrics; `compare` (main process) turns a candidate's score and the
baseline's into metrics relative to the baseline (drops, agreement, cosine, error). Each output of
the model has a kind (slimline.core.output_kinds: class-logits, vector, token-logits), decided in the
plan (pipeline.quality_plan) and handed over in `EvalContext.outputs`; the evaluators that compare
outputs (outputs.py) judge each by its kind and name it in the metric (`cosine_mean@embeddings`).
Metric names carry their unit (`top1_pct`, `perplexity_increase_pct`); any of them can be a profile
budget once it is listed in profiles/schema.py BUDGET_METRICS and, for quality, in KIND_METRICS.

How to add one (e.g. causal-LM perplexity):
  1. Write `slimline/benchmarking/evaluators/<module>.py` with a subclass of `Evaluator` (or of
     outputs.OutputsEvaluator to compare every output by its kind) decorated with
     `@register_evaluator("<name>")`; set `tasks` to the tasks it is the default for.
  2. Map the name to its module in `EVALUATOR_MODULES` below (modules are imported lazily, so
     importing slimline never imports numpy-heavy evaluators or the runtimes).
  3. `prepare(data, context, out_npz)`: build the inputs every runner reads; return facts for the
     report (source, count, sha256). `score(forward, npz, batch_size, outputs_path)`: run `forward`
     (one batch of numpy feeds -> the model's first output, or every output when the class sets
     `multi_output`) over it, return an `EvalScore`. `compare(candidate, baseline)`: metrics vs the
     baseline (each score may point at its raw outputs).
  4. Add budget metric names to BUDGET_METRICS (profiles/schema.py) and to the output kind that measures
     them (core/output_kinds.py KIND_METRICS), so the plan can refuse budgets a model cannot measure; the
     verdict reads any metric from `CandidateResult.quality` (bench/budgets.py).
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import DataError
from slimline.core.output_kinds import ModelOutput, OutputKind
from slimline.profiles.schema import Shape

#: One batch of feeds -> the model's first output (logits), as numpy: a runner's `run`. Evaluators that set
#: `multi_output` get a runner's `run_outputs` instead: every output, in the model's order (a list).
Forward = Callable[[dict[str, np.ndarray]], Any]

#: Evaluator name -> the module that registers it (imported on first use).
EVALUATOR_MODULES: dict[str, str] = {
    "text-classification": "slimline.benchmarking.evaluators.text_classification",
    "image-top1": "slimline.benchmarking.evaluators.image_top1",
    "agreement": "slimline.benchmarking.evaluators.agreement",
    "perplexity": "slimline.benchmarking.evaluators.perplexity",
    "embedding": "slimline.benchmarking.evaluators.agreement",
    "text-embedding": "slimline.benchmarking.evaluators.text_embedding",
}
#: Task -> its default evaluator when eval data is given without naming one.
TASK_EVALUATORS: dict[str, str] = {
    "text-classification": "text-classification",
    "image-classification": "image-top1",
    "text-generation": "perplexity",
    "feature-extraction": "text-embedding",
}
#: Task -> its evaluator when the eval data is a text dataset (core.data.DatasetSpec); others: text classification.
TEXT_DATA_EVALUATORS: dict[str, str] = {"feature-extraction": "text-embedding"}


class EvalSource(BaseModel):
    """Eval data that is not a labelled text dataset: an image folder, an .npz, a text file, or `pkg.module:callable`.

    `evaluator` None: chosen by the model's task and the data (evaluator_name_for). The split is `test` by
    default, as for a text dataset: calibration reads the same data's `train` split and the accuracy fallback
    its `validation` split, so none of them overlaps the examples the verdict is judged on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    evaluator: str | None = None
    split: Literal["train", "validation", "test", "all"] = "test"
    max_samples: int | None = Field(default=None, gt=0)
    seed: int = 0

    def kind(self) -> Literal["folder", "npz", "callable", "text"]:
        path = Path(self.source).expanduser()
        if path.is_dir():
            return "folder"
        if self.source.endswith(".npz"):
            return "npz"
        if not path.exists() and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.source):
            return "callable"  # module:function or pkg.module:function
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
    #: The model's outputs and their kinds (core.output_kinds), decided in the plan; every one is compared.
    outputs: list[ModelOutput] = field(default_factory=list)


class Evaluator(ABC):
    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ()
    #: Writes each model's raw outputs for `compare` (memory: examples x output size floats).
    keeps_outputs: ClassVar[bool] = False
    #: `score` gets every output of the model (a runner's run_outputs), not only the first.
    multi_output: ClassVar[bool] = False
    #: Treat every output as this kind (e.g. `embedding`: cosine on every float output), whatever the task says.
    forces_kind: ClassVar[OutputKind | None] = None

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


def evaluator_name_for(task: str, source: Any = None, override: str | None = None) -> str:
    """The evaluator a run uses: `override` (--evaluator, the profile's eval.evaluator), the one the source names,
    else by task and data: perplexity for a causal LM on any text, text classification on a labelled text
    dataset (core.data.DatasetSpec), image top-1 on labelled images, else agreement with fp32 per output."""
    if override:
        return override
    if isinstance(source, EvalSource) and source.evaluator:
        return source.evaluator
    if task == "text-generation":
        return "perplexity"
    if source is not None and not isinstance(source, EvalSource):
        return TEXT_DATA_EVALUATORS.get(task, "text-classification")
    if source is None:
        return TASK_EVALUATORS.get(task, "agreement")
    if task == "image-classification" and source_has_labels(source):
        return "image-top1"
    return "agreement"


def source_has_labels(source: Any) -> bool:
    """Whether eval data carry labels: a text dataset and an image folder do; an .npz when it holds `labels`;
    a callable's arrays and a text file do not. Cheap: an .npz's member names only."""
    if source is None:
        return False
    if not isinstance(source, EvalSource):
        return True
    kind = source.kind()
    if kind == "folder":
        return True
    if kind == "npz":
        path = Path(source.source).expanduser()
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as stored:
                return "labels" in stored.files
        except (OSError, ValueError):
            return False
    return False


def as_output_list(produced: Any) -> list[np.ndarray]:
    """A forward's result as a list of arrays: one array, a list/tuple of them, or a dict (in its order)."""
    if isinstance(produced, dict):
        produced = list(produced.values())
    if isinstance(produced, (list, tuple)):
        return [np.asarray(item) for item in produced]
    return [np.asarray(produced)]


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
    if text.partition(":")[0] == "rotten-tomatoes" or text.endswith((".csv", ".jsonl")) or \
            text.rpartition(":")[0].endswith((".csv", ".jsonl")):  # reviews.csv:test
        return parse_dataset_arg(text)
    head, _, tail = text.rpartition(":")
    source, split = (head, tail) if head and tail in EVAL_SPLITS else (text, "test")
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
