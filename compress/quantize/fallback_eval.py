"""What the quantization fallback measures a candidate on, and how it judges it: the run's own data, every output.

Data: the validation split of the run's eval data (the test split stays for the verdict, the train split
calibrates), whatever it is: a labelled text dataset (tokenised with the model's tokenizer), images or
an .npz (preprocessed the model's way), or text for a causal LM (token windows, scored by perplexity).
Every output is compared with the fp32 model's by its kind (slimline.core.quality), so the fallback
judges exactly the budgets the verdict will: `accuracy_drop_pt` / `top1_drop_pt` (drop + z * paired SE
with labels; the disagreement with fp32, a bound, without), `agreement_pct` (minus z binomial SEs),
cosine, relative / absolute error and perplexity increase (as measured), per output where a budget
names one (`cosine_mean@embeddings`). A budget it cannot measure here (continuation agreement) is left
to the benchmark and listed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.compression.base import PassContext
from slimline.compression.calibration import is_array_source
from slimline.core.artifact import ModelDir
from slimline.core.batch_axes import BatchAxes, batches, example_count, take_rows
from slimline.core.data import DatasetSpec, encode_labelled, load_texts, trimmed_batches
from slimline.core.errors import PassError
from slimline.core.output_kinds import HIGHER_IS_BETTER, QUALITY_METRICS, ModelOutput, resolve_outputs, split_metric
from slimline.core.quality import compare_outputs, drop_bound, token_nll, token_windows
from slimline.core.stats import paired_drop_pt
from slimline.core.timing import round_robin_ms
from slimline.formats.causal_lm import empty_past, is_past_input, positions_from_mask
from slimline.formats.inputs import batch_axis, synthetic_feeds
from slimline.profiles.schema import Budget

#: Judged by the benchmark only (a greedy generation per candidate would cost more than the search).
BENCH_ONLY = frozenset({"continuation_agreement_pct"})
DROP_METRICS = frozenset({"accuracy_drop_pt", "top1_drop_pt"})
POINT_METRICS = DROP_METRICS | {"agreement_pct", "top5_agreement_pct"}
LM_WINDOWS = 16


@dataclass
class Judged:
    """A candidate's metrics and where it stands against the quality budgets."""

    metrics: dict[str, float]
    failing: list[str]  # not met with the confidence rule (drop + z*SE, agreement - z*SE)
    failing_measured: list[str]  # not met as measured
    slack: float  # the worst budget's margin as measured, relative to its limit (higher: more accurate)


def quality_budgets(context: PassContext, max_drop_pt: float | None) -> dict[str, Budget]:
    """The profile's quality budgets the fallback searches on (`fallback.max_drop_pt` overrides the accuracy one;
    `accuracy_pct: {max_drop}` is an accuracy drop)."""
    budgets = {name: b for name, b in context.quality_budgets.items() if split_metric(name)[0] in QUALITY_METRICS}
    if "accuracy_pct" in budgets and budgets["accuracy_pct"].kind == "max_drop":
        budgets["accuracy_drop_pt"] = Budget(max=budgets.pop("accuracy_pct").limit)
    budgets.pop("accuracy_pct", None)  # an absolute accuracy floor: the benchmark judges it
    if context.accuracy_drop_budget_pt is not None and not any(split_metric(n)[0] in DROP_METRICS for n in budgets):
        budgets["accuracy_drop_pt"] = Budget(max=context.accuracy_drop_budget_pt)
    if max_drop_pt is not None:
        budgets = {n: b for n, b in budgets.items() if split_metric(n)[0] not in DROP_METRICS}
        budgets["accuracy_drop_pt"] = Budget(max=max_drop_pt)
    return budgets


class Judge:
    """The budgets a candidate must meet, with the confidence rule (module docstring)."""

    def __init__(self, budgets: dict[str, Budget], z: float, margin: float = 0.0) -> None:
        self.budgets = {n: b for n, b in budgets.items() if split_metric(n)[0] not in BENCH_ONLY}
        self.left_to_bench = sorted(n for n in budgets if split_metric(n)[0] in BENCH_ONLY)
        self.z = z
        self.margin = margin

    def judge(self, metrics: dict[str, float], examples: int) -> Judged:
        failing, failing_measured, slacks = [], [], []
        for name, budget in self.budgets.items():
            value = metrics.get(name)
            if value is None:
                failing.append(name)
                failing_measured.append(name)
                slacks.append(-math.inf)
                continue
            cautious = value + self.z * self._se(name, value, metrics, examples) * (1 if budget.kind == "max" else -1)
            margin = self.margin if split_metric(name)[0] in POINT_METRICS else 0.0  # margin_pt is in points
            limit = budget.limit - margin if budget.kind == "max" else budget.limit + margin
            if not _within(cautious, limit, budget.kind):
                failing.append(name)
            if not _within(value, limit, budget.kind):
                failing_measured.append(name)
            scale = max(abs(budget.limit), 1e-6)
            slacks.append((limit - value) / scale if budget.kind == "max" else (value - limit) / scale)
        return Judged(metrics, failing, failing_measured, min(slacks) if slacks else 0.0)

    @staticmethod
    def _se(name: str, value: float, metrics: dict[str, float], examples: int) -> float:
        metric, output = split_metric(name)
        if metric in DROP_METRICS:
            return metrics.get("drop_se_pt" if output is None else f"drop_se_pt@{output}", 0.0)
        if metric in ("agreement_pct", "top5_agreement_pct") and examples:
            share = min(max(value / 100.0, 0.0), 1.0)
            return 100.0 * math.sqrt(share * (1 - share) / examples)
        return 0.0


def _within(value: float, limit: float, kind: str) -> bool:
    return value <= limit if kind == "max" else value >= limit


@dataclass
class Reference:
    outputs: list[np.ndarray] = field(default_factory=list)
    nll: np.ndarray | None = None  # causal LMs: per-token NLL
    correct: np.ndarray | None = None


class FallbackData:
    """The validation data and how an ONNX model is run and scored on it (module docstring)."""

    def __init__(self, model: ModelDir, context: PassContext, eval_samples: int | None,
                 outputs: list[ModelOutput] | None = None) -> None:
        data = context.tuning_data
        if data is None:
            raise PassError("the quality fallback needs the run's eval data, and this run has none.",
                            fix="pass --eval-data, or set fallback.enabled: false.")
        manifest = model.manifest
        self.outputs = outputs or resolve_outputs(manifest.task, manifest.outputs,
                                                  manifest.metadata.get("output_kinds"))
        self.specs = list(manifest.inputs)
        self.threads = context.target.threads
        config_path = model.path / "config.json"
        self.config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.labels: np.ndarray | None = None
        self.windows: np.ndarray | None = None
        self.trim = False
        names = {s.name for s in self.specs if not is_past_input(s.name)}
        self.axes = {s.name: batch_axis(s) for s in self.specs}  # a state input's batch need not be first
        if manifest.task == "text-generation":
            self.windows = _lm_windows(data, model.path, context.shape.sequence_length, eval_samples)
            self.arrays = {"input_ids": self.windows}
        elif is_array_source(str(data.source)):
            self.arrays, self.labels = _array_data(data, model, names, eval_samples, self.axes)
        elif manifest.task == "feature-extraction":  # an embedding model: its texts, labels never read
            self.arrays = _text_arrays(data, model.path, context.shape.sequence_length, names, eval_samples)
        else:
            spec = DatasetSpec.model_validate({**data.model_dump(), "split": "validation", "max_samples": eval_samples})
            arrays, texts = encode_labelled(spec, model.path, context.shape.sequence_length)
            self.arrays, self.labels, self.trim = {n: arrays[n] for n in names if n in arrays}, texts.labels, True
        self.examples = example_count(self.arrays, self.axes)
        self.latency_feeds = synthetic_feeds(self.specs, context.shape, self.config)

    def session(self, path: Path, spinning: bool = True) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if not spinning:  # several sessions alive in one process: an idle spinning pool steals the cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def _feeds(self, session: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wanted = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in batch.items() if k in wanted}
        past = [s for s in self.specs if is_past_input(s.name)]
        if past:
            feeds.setdefault("attention_mask", np.ones_like(feeds["input_ids"]))
            feeds = {k: v for k, v in feeds.items() if k in wanted}
            feeds.update(empty_past(past, self.config, len(feeds["input_ids"])))
            if "position_ids" in wanted:
                feeds["position_ids"] = positions_from_mask(np.ones_like(batch["input_ids"]))
        return feeds

    def _batches(self, rows: np.ndarray | None, batch: int) -> Any:
        if self.trim:
            return trimmed_batches(self.arrays, batch, rows)
        arrays = self.arrays if rows is None else take_rows(self.arrays, self.axes, rows)
        return batches(arrays, batch, self.axes)

    def run(self, path: Path, rows: np.ndarray | None = None, batch: int = 32) -> Reference:
        session = self.session(path)
        names = [o.name for o in session.get_outputs() if not o.name.startswith("present")]
        if self.windows is not None:  # a causal LM: (rows x seq x vocab) logits are never kept, only the NLL
            nll = [token_nll(session.run(names[:1], self._feeds(session, b))[0], b["input_ids"])
                   for b in self._batches(rows, 4)]
            return Reference(nll=np.concatenate(nll))
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for feeds in self._batches(rows, batch):
            for index, array in enumerate(session.run(names, self._feeds(session, feeds))):
                parts[index].append(array)
        outputs = [np.concatenate(chunks) for chunks in parts]
        correct = None
        index = next((i for i, o in enumerate(self.outputs) if o.kind == "class-logits"), None)
        if self.labels is not None and index is not None and rows is None:
            correct = outputs[index].argmax(-1) == self.labels
        return Reference(outputs=outputs, correct=correct)

    def metrics(self, candidate: Reference, reference: Reference) -> dict[str, float]:
        if reference.nll is not None and candidate.nll is not None:
            increase = math.exp(float(candidate.nll.mean())) / math.exp(float(reference.nll.mean())) - 1.0
            return {"perplexity_increase_pct": 100.0 * increase}
        metrics = compare_outputs(self.outputs, candidate.outputs, reference.outputs)
        if candidate.correct is not None and reference.correct is not None:
            drop, se = paired_drop_pt(reference.correct, candidate.correct)
            metrics.update({"accuracy_drop_pt": drop, "top1_drop_pt": drop, "drop_se_pt": se,
                            "accuracy_pct": 100.0 * float(candidate.correct.mean())})
        else:
            metrics.update(drop_bound(metrics))
        return metrics

    def sensitivity(self, candidate: Reference, reference: Reference) -> float:
        """How far a probe strays from fp32: relative mean squared error summed over the outputs (or NLL change)."""
        if reference.nll is not None and candidate.nll is not None:
            return float(np.mean((candidate.nll - reference.nll) ** 2))
        return float(sum(np.mean((c.astype(np.float64) - r) ** 2) / max(float(np.mean(r.astype(np.float64) ** 2)),
                                                                        1e-12)
                         for c, r in zip(candidate.outputs, reference.outputs, strict=False)))

    def subset(self, rows: int) -> np.ndarray:
        count = min(rows if self.windows is None else min(rows, 4), self.examples)
        return np.linspace(0, self.examples - 1, count).astype(int)

    def latency_p50_ms(self, path: Path, iterations: int) -> float:
        """A quick in-process median to rank candidates; the report's latency comes from bench."""
        session = self.session(path)
        feeds = self._feeds(session, self.latency_feeds)
        session.run(None, feeds)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - start) * 1000.0)
        return float(np.median(times))

    def round_robin_p50_ms(self, paths: list[Path], iterations: int) -> list[float]:
        """Medians of the candidates timed side by side (one run of each per round, spinning pools off)."""
        sessions = [self.session(path, spinning=False) for path in paths]
        feeds = [self._feeds(session, self.latency_feeds) for session in sessions]
        runs = [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds, strict=True)]
        samples, _ = round_robin_ms(runs, warmup_iters=3, min_rounds=iterations, min_time_s=1.0, max_time_s=30.0)
        return [float(np.median(times)) for times in samples]


def _array_data(data: Any, model: ModelDir, names: set[str], eval_samples: int | None,
                axes: BatchAxes) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    from slimline.core.image_data import load_images, preprocess_for

    floats = [s.name for s in model.manifest.inputs if s.dtype.startswith("float")]
    label_names = model.manifest.metadata.get("label_names")
    images = load_images(str(data.source), preprocess_for(model.path, model.manifest.metadata),
                         floats[0] if floats else "pixel_values", split="validation", max_samples=eval_samples,
                         seed=getattr(data, "seed", 0), model_label_names=label_names, batch_axes=axes)
    missing = names - set(images.arrays)
    if missing:
        raise PassError(f"the eval data {data.source} lack model input(s) {sorted(missing)}.",
                        fix="name the .npz arrays after the model's inputs.")
    dtypes = {s.name: s.dtype for s in model.manifest.inputs}
    arrays = {n: np.ascontiguousarray(images.arrays[n], dtype=np.dtype(dtypes[n])) for n in names}
    return arrays, images.labels


def _text_arrays(data: Any, model_dir: Path, length: int, names: set[str],
                 eval_samples: int | None) -> dict[str, np.ndarray]:
    """The validation split's texts tokenised for an embedding model (no label column needed)."""
    from slimline.core.tokenizers import load_tokenizer

    spec = DatasetSpec.model_validate({**data.model_dump(), "split": "validation", "max_samples": eval_samples})
    texts = load_texts(spec)[0]
    if not texts:
        raise PassError(f"the eval data {data.source} have no texts in their validation split.",
                        fix="pass --eval-data with more texts.")
    tokenizer, _ = load_tokenizer(model_dir)
    encoded = tokenizer(texts, padding="longest", truncation=True, max_length=length, return_tensors="np")
    return {name: np.ascontiguousarray(encoded[name], dtype=np.int64) for name in names if name in encoded}


def _lm_windows(data: Any, model_dir: Path, length: int, eval_samples: int | None) -> np.ndarray:
    from slimline.core.tokenizers import load_tokenizer

    source = str(data.source)
    if source.endswith((".txt", ".md")):  # one document: its last windows (the benchmark scores its first)
        texts = [Path(source).expanduser().read_text(encoding="utf-8")]
    else:
        spec = DatasetSpec(source=source, split="validation", seed=getattr(data, "seed", 0),
                           text_field=getattr(data, "text_field", "text"))
        texts = load_texts(spec)[0]
    tokenizer, _ = load_tokenizer(model_dir)
    windows = token_windows(texts, tokenizer, max(8, length), 10_000 if source.endswith((".txt", ".md")) else
                            (eval_samples or LM_WINDOWS))
    return windows[-(eval_samples or LM_WINDOWS):]


def describe_metrics(metrics: dict[str, float], budgets: dict[str, Budget]) -> str:
    """The budgets' metrics of one candidate, for logs and the report."""
    shown = []
    for name in budgets:
        value = metrics.get(name)
        arrow = "^" if split_metric(name)[0] in HIGHER_IS_BETTER else "v"
        shown.append(f"{name} {'-' if value is None else f'{value:.4g}'}{arrow}")
    return ", ".join(shown)
