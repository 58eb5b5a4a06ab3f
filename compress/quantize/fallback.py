"""Accuracy-aware fallback: keep the most sensitive nodes in float until the accuracy budget holds.

When a quantized model loses more accuracy than the profile allows, the nodes are ranked by
sensitivity (the fp32 model's logits vs those of a model quantized everywhere *except* that node, on
a small batch: the lower that error, the more the node matters) and the worst are left in float one
more at a time. Every candidate is measured (validation accuracy, p50 latency at the profile shape,
size). Each float node makes the model bigger and slower, so the search stops once a candidate would
break the profile's size_mb (or latency_p50_ms) budget: accuracy is never bought with a budget that
then fails. The choice, among the candidates within those budgets:
1. the first (fewest float nodes) whose drop + z * paired standard error is within the accuracy
   budget (certified);
2. else the first whose measured drop is within it (the validation set is too small to certify: the
   report says how small a drop it could certify);
3. else the most accurate one, so a search never ends with nothing.
"First" stands for "fastest" without timing: the candidates are nested, each one more float node
than the last, so fewer float nodes means less float compute and a smaller model, and the choice
cannot be reordered by a busy machine (the quick in-process p50 of each candidate is recorded, but
taken at different moments it is too noisy to rank them).
Tuning uses the validation split: the test split stays for the report.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.compress.base import PassContext
from slimline.core.artifact import TensorSpec
from slimline.core.data import encode_labelled, trimmed_batches
from slimline.core.errors import PassError
from slimline.core.progress import reporter
from slimline.core.stats import paired_drop_pt
from slimline.formats.inputs import synthetic_feeds

log = logging.getLogger(__name__)
Quantize = Callable[[list[str], Path], None]


class FallbackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    max_drop_pt: float | None = Field(default=None, ge=0, description="None: the profile's accuracy budget")
    eval_samples: int | None = Field(default=None, ge=10, description="validation examples per candidate "
                                                                       "(None: the whole validation split)")
    confidence_z: float = Field(default=1.0, ge=0, description="a candidate passes when drop + z * standard "
                                                                "error (paired, on the validation split) is "
                                                                "within the budget, so it carries over to unseen data")
    margin_pt: float = Field(default=0.0, ge=0, description="aim this much further inside the budget")
    sensitivity_samples: int = Field(default=32, ge=1)
    max_excluded: int = Field(default=24, ge=1)
    time_limit_s: float = Field(default=900, gt=0)
    latency_iters: int = Field(default=30, ge=5)


@dataclass
class SearchCandidate:
    excluded: list[str]
    accuracy_pct: float
    drop_pt: float
    drop_upper_pt: float  # drop + z * standard error: what the budget is checked against
    latency_p50_ms: float
    size_mb: float  # the model file, as bench's size_mb counts weights (not tokenizer or manifest)


@dataclass(frozen=True)
class OtherBudgets:
    """The profile's budgets besides accuracy that a float node can break."""

    size_mb: float | None = None
    latency_p50_ms: float | None = None

    def broken_by(self, candidate: SearchCandidate) -> str | None:
        if self.size_mb is not None and candidate.size_mb > self.size_mb:
            return f"size {candidate.size_mb:.1f} MB > size_mb budget {self.size_mb:g}"
        if self.latency_p50_ms is not None and candidate.latency_p50_ms > self.latency_p50_ms:
            return f"p50 {candidate.latency_p50_ms:.2f} ms > latency_p50_ms budget {self.latency_p50_ms:g}"
        return None


@dataclass
class SearchResult:
    budget_pt: float
    reference_accuracy_pct: float
    candidates: list[SearchCandidate] = field(default_factory=list)
    chosen: int = 0
    met_budget: bool = False
    stopped_by: str = "budget met"
    #: Which rule chose (see the module docstring) and what the validation set can resolve.
    selection: str = ""
    resolution: str = ""
    sensitivity: dict[str, float] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, object]:
        return {**asdict(self), "candidates": [asdict(c) for c in self.candidates]}


class OrtEvaluator:
    """Accuracy, logits and a quick latency figure for ONNX models on the target's thread count."""

    def __init__(self, model_dir: Path, context: PassContext, config: FallbackConfig, input_names: set[str]) -> None:
        if context.tuning_data is None:
            raise PassError("the accuracy fallback needs labelled data, and this run has none.",
                            fix="pass --eval-data, or set fallback.enabled: false.")
        spec = context.tuning_data.model_copy(update={"split": "validation", "max_samples": config.eval_samples})
        arrays, data = encode_labelled(spec, model_dir, context.shape.sequence_length)
        self.arrays = {name: arrays[name] for name in input_names}
        self.labels = data.labels
        self.threads = context.target.threads
        self.config = config
        model_config = json.loads((model_dir / "config.json").read_text())
        specs = [TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in sorted(input_names)]
        self.latency_feeds = synthetic_feeds(specs, context.shape, model_config)

    def _session(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def logits(self, path: Path, rows: int | None = None, batch: int = 32) -> np.ndarray:
        """Logits on all validation examples, or on `rows` of them spread evenly over the lengths."""
        session = self._session(path)
        subset = None if rows is None else np.linspace(0, len(self.labels) - 1, min(rows, len(self.labels))).astype(int)
        return np.concatenate([session.run(None, feeds)[0] for feeds in trimmed_batches(self.arrays, batch, subset)])

    def correct(self, path: Path) -> np.ndarray:
        """Per-example correctness on the validation examples (for paired comparisons)."""
        return self.logits(path).argmax(-1) == self.labels

    def latency_p50_ms(self, path: Path) -> float:
        """A quick in-process median to rank candidates; the report's latency comes from bench."""
        session = self._session(path)
        session.run(None, self.latency_feeds)
        times = []
        for _ in range(self.config.latency_iters):
            start = time.perf_counter()
            session.run(None, self.latency_feeds)
            times.append((time.perf_counter() - start) * 1000.0)
        return float(np.median(times))


def search(quantize: Quantize, float_model: Path, nodes: list[str], base_excluded: list[str],
           evaluator: OrtEvaluator, budget_pt: float, config: FallbackConfig, out_path: Path,
           other: OtherBudgets | None = None) -> SearchResult:
    """Quantize at `out_path`, excluding sensitive nodes step by step until the budget holds."""
    started = time.monotonic()
    other = other or OtherBudgets()
    reference_correct = evaluator.correct(float_model)
    reference = 100.0 * float(reference_correct.mean())
    result = SearchResult(budget_pt=budget_pt, reference_accuracy_pct=reference)
    with tempfile.TemporaryDirectory(prefix="slimline-fallback-") as scratch:
        scratch_dir = Path(scratch)
        paths: list[Path] = []

        def measure(excluded: list[str]) -> SearchCandidate:
            path = scratch_dir / f"candidate-{len(paths)}.onnx"
            quantize(excluded, path)
            paths.append(path)
            correct = evaluator.correct(path)
            drop, error = paired_drop_pt(reference_correct, correct)
            candidate = SearchCandidate(excluded=list(excluded), accuracy_pct=100.0 * float(correct.mean()),
                                        drop_pt=drop, drop_upper_pt=drop + config.confidence_z * error,
                                        latency_p50_ms=evaluator.latency_p50_ms(path),
                                        size_mb=path.stat().st_size / 1e6)
            result.candidates.append(candidate)
            log.info("fallback candidate %d: %d excluded, drop %.2f pt (upper %.2f)", len(paths) - 1,
                     len(excluded), candidate.drop_pt, candidate.drop_upper_pt)
            return candidate

        first = measure(base_excluded)
        if first.drop_upper_pt > budget_pt:
            result.sensitivity = _rank(quantize, float_model, nodes, base_excluded, evaluator, config, scratch_dir,
                                       started)
            ranked = sorted(result.sensitivity, key=result.sensitivity.get)
            excluded = list(base_excluded)
            with reporter().step("fallback: leaving sensitive nodes in float", total=min(len(ranked),
                                                                                        config.max_excluded)) as step:
                for node in ranked[: config.max_excluded]:
                    if time.monotonic() - started > config.time_limit_s:
                        result.stopped_by = "time limit"
                        break
                    excluded.append(node)
                    step.advance()
                    candidate = measure(excluded)
                    broken = other.broken_by(candidate)
                    if broken is not None:
                        result.stopped_by = f"more float nodes break another budget ({broken})"
                        break
                    if candidate.drop_upper_pt <= budget_pt:
                        break
                else:
                    result.stopped_by = "max_excluded reached" if ranked else "no nodes to exclude"
        _choose(result, budget_pt, other)
        result.resolution = _resolution(result, len(reference_correct), config)
        shutil.copyfile(paths[result.chosen], out_path)
    return result


def _choose(result: SearchResult, budget_pt: float, other: OtherBudgets) -> None:
    """The module docstring's rule: within the other budgets, the first certified, else the first within the
    budget as measured, else the most accurate."""
    candidates = result.candidates
    within = [i for i, c in enumerate(candidates) if other.broken_by(c) is None] or list(range(len(candidates)))
    certified = [i for i in within if candidates[i].drop_upper_pt <= budget_pt]
    measured = [i for i in within if candidates[i].drop_pt <= budget_pt]
    result.met_budget = bool(certified)
    if certified:
        result.chosen = certified[0]
        result.selection = "fewest float nodes with drop + z*SE within the accuracy budget"
        if not result.stopped_by.startswith("more float nodes"):
            result.stopped_by = "budget met"
    elif measured:
        result.chosen = measured[0]
        result.selection = ("fewest float nodes with the measured drop within the accuracy budget (not certified: "
                            "the validation set cannot resolve it)")
    else:
        result.chosen = max(within, key=lambda i: (candidates[i].accuracy_pct, -candidates[i].latency_p50_ms))
        result.selection = "most accurate candidate within the other budgets (none met the accuracy budget)"


def _resolution(result: SearchResult, examples: int, config: FallbackConfig) -> str:
    """What the validation set can certify, from the chosen candidate's own paired standard error."""
    chosen = result.candidates[result.chosen]
    if config.confidence_z == 0:
        return f"{examples} validation examples; confidence_z 0: the measured drop is compared as it is"
    se_pt = (chosen.drop_upper_pt - chosen.drop_pt) / config.confidence_z
    certifiable = result.budget_pt - config.confidence_z * se_pt
    return (f"{examples} validation examples; the chosen candidate's drop has a paired SE of {se_pt:.2f} pt, so "
            f"a {result.budget_pt:g} pt budget is certified (drop + {config.confidence_z:g}*SE) only below "
            f"{max(certifiable, 0):.2f} pt measured")


def _rank(quantize: Quantize, float_model: Path, nodes: list[str], base_excluded: list[str],
          evaluator: OrtEvaluator, config: FallbackConfig, scratch: Path, started: float) -> dict[str, float]:
    """Sensitivity per node: logits MSE vs fp32 when only that node stays in float (lower = more sensitive)."""
    reference = evaluator.logits(float_model, config.sensitivity_samples)
    errors: dict[str, float] = {}
    probe = scratch / "probe.onnx"
    with reporter().step("fallback: ranking node sensitivity", total=len(nodes)) as step:
        for node in nodes:
            if time.monotonic() - started > config.time_limit_s / 2:
                log.warning("sensitivity ranking stopped at the time limit after %d of %d nodes", len(errors),
                            len(nodes))
                break
            quantize([*base_excluded, node], probe)
            errors[node] = float(np.mean((evaluator.logits(probe, config.sensitivity_samples) - reference) ** 2))
            step.advance()
    if not errors:
        raise PassError("fallback: no time was left to rank any node.", fix="raise fallback.time_limit_s.")
    return errors


def quantizable_nodes(model_path: Path, op_types: list[str]) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in op_types and node.name]


def quantize_with_fallback(quantize: Quantize, float_model: Path, out_path: Path, model_dir: Path,
                           input_names: set[str], op_types: list[str], excluded: list[str], context: PassContext,
                           config: FallbackConfig) -> dict[str, object]:
    """Quantize once, or search when an accuracy budget and labelled data are at hand; returns metadata."""
    budget = config.max_drop_pt if config.max_drop_pt is not None else context.accuracy_drop_budget_pt
    if budget is not None:
        budget = max(0.0, budget - config.margin_pt)
    reason = None
    if not config.enabled:
        reason = "disabled in the recipe"
    elif budget is None:
        reason = "the profile has no accuracy budget"
    elif context.tuning_data is None:
        reason = "no labelled data in this run (pass --eval-data)"
    if reason is not None:
        log.warning("accuracy fallback skipped: %s", reason)
        quantize(excluded, out_path)
        return {"skipped": reason}
    evaluator = OrtEvaluator(model_dir, context, config, input_names)
    other = OtherBudgets(size_mb=context.size_budget_mb, latency_p50_ms=context.latency_p50_budget_ms)
    result = search(quantize, float_model, quantizable_nodes(float_model, op_types), excluded, evaluator,
                    budget, config, out_path, other)
    return result.as_metadata()


