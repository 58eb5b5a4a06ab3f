"""Accuracy-aware fallback: other quantizer settings first, then sensitive nodes left in float.

When a quantized model loses more accuracy than the profile allows, the pass's other settings are
tried first at full INT8 (per-channel weights, another calibration method: `variants`, no float node,
so no speed given away). Only when none passes are the nodes ranked by sensitivity (the fp32 model's
logits vs those of a model quantized everywhere *except* that node, on a small batch: the lower that
error, the more the node matters) and the worst left in float one more at a time, on the most
accurate setting. Every candidate is measured (validation accuracy, a quick p50 at the profile shape,
size). Each float node makes the model bigger and slower, so the node search stops once a candidate
would break the profile's size_mb (or latency_p50_ms) budget: accuracy is never bought with a budget
that then fails. The choice, among the candidates within those budgets:
1. those whose drop + z * paired standard error is within the accuracy budget (certified): the
   fastest of them, timed side by side (round-robin in one process, so a busy moment cannot reorder
   them); a single one is taken as it is;
2. else the first whose measured drop is within it (the validation set is too small to certify: the
   report says how small a drop it could certify); candidates come in order of float nodes, so the
   first is the one with the fewest;
3. else the most accurate one, so a search never ends with nothing.
`stopped_by` and `selection` in the metadata say which rule chose and why the search stopped.
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
from slimline.core.data import DatasetSpec, encode_labelled, trimmed_batches
from slimline.core.errors import PassError
from slimline.core.progress import reporter
from slimline.core.stats import paired_drop_pt
from slimline.core.timing import round_robin_ms
from slimline.formats.inputs import synthetic_feeds

log = logging.getLogger(__name__)
Quantize = Callable[[list[str], Path], None]


@dataclass(frozen=True)
class Variant:
    """A quantizer setting to try at full INT8 before leaving nodes in float."""

    name: str
    quantize: Quantize
    overrides: tuple[tuple[str, object], ...] = ()  # the config fields this setting changes


def chosen_overrides(variants: list[Variant], metadata: dict[str, object]) -> dict[str, object]:
    """The config fields the fallback's chosen candidate changed, for the manifest's quantization facts."""
    candidates, chosen = metadata.get("candidates"), metadata.get("chosen")
    if not isinstance(candidates, list) or not isinstance(chosen, int):
        return {}
    name = candidates[chosen]["variant"]
    return dict(next((v.overrides for v in variants if v.name == name), ()))


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
    try_variants: bool = Field(default=True, description="try the pass's other settings (per-channel weights, "
                                                          "another calibration method) before float nodes")


@dataclass
class SearchCandidate:
    excluded: list[str]
    accuracy_pct: float
    drop_pt: float
    drop_upper_pt: float  # drop + z * standard error: what the budget is checked against
    latency_p50_ms: float
    size_mb: float  # the model file, as bench's size_mb counts weights (not tokenizer or manifest)
    variant: str = "as configured"
    timed_p50_ms: float | None = None  # round-robin p50 when several candidates passed every budget


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
    skipped_settings: list[str] = field(default_factory=list)  # other settings the quantizer could not apply

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

    def _session(self, path: Path, spinning: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if not spinning:  # several sessions alive in one process: an idle spinning pool steals the cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def logits(self, path: Path, rows: int | None = None, batch: int = 32) -> np.ndarray:
        """Logits on all validation examples, or on `rows` of them spread evenly over the lengths."""
        session = self._session(path)
        subset = None if rows is None else np.linspace(0, len(self.labels) - 1, min(rows, len(self.labels))).astype(int)
        return np.concatenate([session.run(None, feeds)[0] for feeds in trimmed_batches(self.arrays, batch, subset)])

    def correct(self, path: Path) -> np.ndarray:
        """Per-example correctness on the validation examples (for paired comparisons)."""
        return self.logits(path).argmax(-1) == self.labels

    def round_robin_p50_ms(self, paths: list[Path]) -> list[float]:
        """Medians of the candidates timed side by side (one run of each per round, spinning pools off)."""
        sessions = [self._session(path, spinning=False) for path in paths]
        runs = [lambda session=session: session.run(None, self.latency_feeds) for session in sessions]
        samples, _ = round_robin_ms(runs, warmup_iters=3, min_rounds=self.config.latency_iters, min_time_s=1.0,
                                    max_time_s=30.0)
        return [float(np.median(times)) for times in samples]

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


def search(variants: list[Variant], float_model: Path, nodes: list[str], base_excluded: list[str],
           evaluator: OrtEvaluator, budget_pt: float, config: FallbackConfig, out_path: Path,
           other: OtherBudgets | None = None) -> SearchResult:
    """Quantize at `out_path`: the configured setting, then the other settings, then nodes left in float
    one by one, until a candidate passes the accuracy budget within the other budgets."""
    started = time.monotonic()
    other = other or OtherBudgets()
    reference_correct = evaluator.correct(float_model)
    reference = 100.0 * float(reference_correct.mean())
    result = SearchResult(budget_pt=budget_pt, reference_accuracy_pct=reference)
    with tempfile.TemporaryDirectory(prefix="slimline-fallback-") as scratch:
        scratch_dir = Path(scratch)
        paths: list[Path] = []

        def measure(variant: Variant, excluded: list[str]) -> SearchCandidate:
            path = scratch_dir / f"candidate-{len(paths)}.onnx"
            variant.quantize(excluded, path)
            paths.append(path)
            correct = evaluator.correct(path)
            drop, error = paired_drop_pt(reference_correct, correct)
            candidate = SearchCandidate(excluded=list(excluded), accuracy_pct=100.0 * float(correct.mean()),
                                        drop_pt=drop, drop_upper_pt=drop + config.confidence_z * error,
                                        latency_p50_ms=evaluator.latency_p50_ms(path),
                                        size_mb=path.stat().st_size / 1e6, variant=variant.name)
            result.candidates.append(candidate)
            log.info("fallback candidate %d (%s): %d excluded, drop %.2f pt (upper %.2f)", len(paths) - 1,
                     variant.name, len(excluded), candidate.drop_pt, candidate.drop_upper_pt)
            return candidate

        def passes(candidate: SearchCandidate) -> bool:
            return candidate.drop_upper_pt <= budget_pt and other.broken_by(candidate) is None

        first = measure(variants[0], base_excluded)
        if not passes(first) and config.try_variants:
            for variant in variants[1:]:
                try:
                    measure(variant, base_excluded)
                except PassError as err:  # e.g. ORT's histogram calibrators need equal-length examples
                    result.skipped_settings.append(f"{variant.name}: {err}")
                    log.warning("fallback: setting %r could not be quantized, skipped: %s", variant.name, err)
        if not any(passes(c) for c in result.candidates):
            within = [c for c in result.candidates if other.broken_by(c) is None] or result.candidates
            best_setting = max(within, key=lambda c: c.accuracy_pct).variant
            variant = next(v for v in variants if v.name == best_setting)
            _exclude_nodes(variant, measure, float_model, nodes, base_excluded, evaluator, budget_pt, config,
                           scratch_dir, started, other, result)
        elif len(result.candidates) > 1:
            setting = next(c for c in result.candidates if passes(c)).variant
            result.stopped_by = f"a full-INT8 setting met every budget ({setting})"
        _choose(result, budget_pt, other, lambda indices: evaluator.round_robin_p50_ms([paths[i] for i in indices]))
        result.resolution = _resolution(result, len(reference_correct), config)
        shutil.copyfile(paths[result.chosen], out_path)
    return result


def _exclude_nodes(variant: Variant, measure: Callable[[Variant, list[str]], SearchCandidate], float_model: Path,
                   nodes: list[str], base_excluded: list[str], evaluator: OrtEvaluator, budget_pt: float,
                   config: FallbackConfig, scratch: Path, started: float, other: OtherBudgets,
                   result: SearchResult) -> None:
    """Leave the most sensitive nodes in float one more at a time, until the budget holds or another breaks."""
    if not nodes:
        result.stopped_by = "no nodes to exclude"
        return
    result.sensitivity = _rank(variant.quantize, float_model, nodes, base_excluded, evaluator, config, scratch,
                               started)
    ranked = sorted(result.sensitivity, key=result.sensitivity.get)
    excluded = list(base_excluded)
    with reporter().step("fallback: leaving sensitive nodes in float",
                         total=min(len(ranked), config.max_excluded)) as step:
        for node in ranked[: config.max_excluded]:
            if time.monotonic() - started > config.time_limit_s:
                result.stopped_by = "time limit"
                return
            excluded.append(node)
            step.advance()
            candidate = measure(variant, excluded)
            broken = other.broken_by(candidate)
            if broken is not None:
                result.stopped_by = f"more float nodes break another budget ({broken})"
                return
            if candidate.drop_upper_pt <= budget_pt:
                return
        result.stopped_by = "max_excluded reached" if ranked else "no nodes to exclude"


def _choose(result: SearchResult, budget_pt: float, other: OtherBudgets,
            time_side_by_side: Callable[[list[int]], list[float]]) -> None:
    """The module docstring's rule: within the other budgets, the fastest certified (timed side by side when
    several), else the first within the budget as measured, else the most accurate."""
    candidates = result.candidates
    within = [i for i, c in enumerate(candidates) if other.broken_by(c) is None] or list(range(len(candidates)))
    certified = [i for i in within if candidates[i].drop_upper_pt <= budget_pt]
    measured = [i for i in within if candidates[i].drop_pt <= budget_pt]
    result.met_budget = bool(certified)
    if len(certified) > 1:
        for index, p50 in zip(certified, time_side_by_side(certified), strict=True):
            candidates[index].timed_p50_ms = p50
        result.chosen = min(certified, key=lambda i: candidates[i].timed_p50_ms)
        result.selection = (f"the fastest of {len(certified)} candidates within every budget (drop + z*SE within "
                            "the accuracy budget), timed side by side")
    elif certified:
        result.chosen = certified[0]
        result.selection = "the only candidate with drop + z*SE within the accuracy budget and every other budget"
    elif measured:
        result.chosen = measured[0]
        result.selection = ("fewest float nodes with the measured drop within the accuracy budget (not certified: "
                            "the validation set cannot resolve it)")
    else:
        result.chosen = max(within, key=lambda i: (candidates[i].accuracy_pct, -candidates[i].latency_p50_ms))
        result.selection = "most accurate candidate within the other budgets (none met the accuracy budget)"
    if certified and not result.stopped_by.startswith(("more float nodes", "a full-INT8")):
        result.stopped_by = "budget met"


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


def quantize_with_fallback(variants: list[Variant], float_model: Path, out_path: Path, model_dir: Path,
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
    elif not isinstance(context.tuning_data, DatasetSpec):
        reason = "the fallback searches on labelled text; this run's eval data are images or arrays"
    if reason is not None:
        log.warning("accuracy fallback skipped: %s", reason)
        variants[0].quantize(excluded, out_path)
        return {"skipped": reason}
    evaluator = OrtEvaluator(model_dir, context, config, input_names)
    other = OtherBudgets(size_mb=context.size_budget_mb, latency_p50_ms=context.latency_p50_budget_ms)
    result = search(variants, float_model, quantizable_nodes(float_model, op_types), excluded, evaluator,
                    budget, config, out_path, other)
    return result.as_metadata()


