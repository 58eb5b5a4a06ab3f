"""Quality-aware fallback: other quantizer settings first, then sensitive nodes left in float.

When a quantized model breaks one of the profile's quality budgets (any of them: accuracy or top-1
drop, agreement, cosine, relative or absolute error, perplexity increase, per output where a budget
names one; see fallback_eval.py for how each is measured on the validation split of the run's own
data, text, images or arrays), the pass's settings that keep every node in INT8 are tried first, one
setting at a time on top of the best so far (per-channel weights, each calibration method, symmetric
activations; static INT8 also the first and last layers in float): no float node, so (almost) no
speed given away. Only when none passes are the nodes ranked by sensitivity (fp32's outputs vs those
of a model quantized everywhere *except* that node, on a small batch: the lower that error, the more
the node matters) and the worst left in float one more at a time, on the best setting. Every candidate
is measured (its quality metrics, a quick p50 at the profile shape, size). Each float node makes the
model bigger and slower, so the node search stops once a candidate would break the profile's size_mb
(or latency_p50_ms) budget: quality is never bought with a budget that then fails. The choice, among
the candidates within those budgets:
1. those that meet every quality budget with the confidence rule (drop + z * paired SE, agreement
   - z * SE; fallback_eval.Judge): the fastest of them, timed side by side (round-robin in one
   process, so a busy moment cannot reorder them); a single one is taken as it is;
2. else the first that meets them as measured (the validation set is too small to certify: the report
   says how small a drop it could certify); candidates come in order of float nodes, so the first is
   the one with the fewest;
3. else the one closest to its budgets (the worst budget's relative margin), so a search never ends
   with nothing.
`stopped_by` and `selection` in the metadata say which rule chose and why the search stopped.
Tuning uses the validation split: the test split stays for the report.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from slimline.compression.base import PassContext
from slimline.compression.quantize.fallback_eval import FallbackData, Judge, Judged, describe_metrics, quality_budgets
from slimline.core.artifact import ModelDir
from slimline.core.errors import PassError
from slimline.core.progress import reporter

log = logging.getLogger(__name__)
Quantize = Callable[[list[str], Path], None]
Settings = dict[str, object]

SETTING_WORDS: dict[str, Callable[[object], str]] = {
    "per_channel": lambda v: "per-channel weights" if v else "per-tensor weights",
    "calibration_method": lambda v: f"{v} calibration",
    "activation_symmetric": lambda v: "symmetric activations" if v else "asymmetric activations",
    "exclude_first_last": lambda v: "first/last layers in float" if v else "first/last layers in INT8",
}


@dataclass(frozen=True)
class Variant:
    """A quantizer setting to try at full INT8 before leaving nodes in float."""

    name: str
    quantize: Quantize
    overrides: tuple[tuple[str, object], ...] = ()  # the config fields this setting changes


@dataclass
class VariantSpace:
    """The pass's settings: as configured, the alternatives per field (tried in this order), and a quantizer
    for any combination."""

    configured: Settings
    axes: list[tuple[str, list[object]]]
    make: Callable[[Settings], Quantize]

    def variant(self, settings: Settings) -> Variant:
        changed = tuple((k, v) for k, v in settings.items() if self.configured.get(k) != v)
        name = " + ".join(SETTING_WORDS.get(k, lambda v, k=k: f"{k}={v}")(v) for k, v in changed) or "as configured"
        return Variant(name, self.make(settings), changed)


def chosen_overrides(space: VariantSpace, metadata: dict[str, object]) -> dict[str, object]:
    """The config fields the fallback's chosen candidate changed, for the manifest's quantization facts."""
    candidates, chosen = metadata.get("candidates"), metadata.get("chosen")
    if not isinstance(candidates, list) or not isinstance(chosen, int):
        return {}
    return dict(candidates[chosen].get("overrides") or {})


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
                                                          "calibration methods, symmetric activations, first/last "
                                                          "layers) before float nodes")


@dataclass
class SearchCandidate:
    excluded: list[str]
    metrics: dict[str, float]
    failing: list[str]  # quality budgets not met with the confidence rule
    latency_p50_ms: float
    size_mb: float  # the model file, as bench's size_mb counts weights (not tokenizer or manifest)
    variant: str = "as configured"
    overrides: dict[str, object] = field(default_factory=dict)
    failing_measured: list[str] = field(default_factory=list)
    slack: float = 0.0
    accuracy_pct: float | None = None  # labelled data: accuracy, drop and drop + z*SE on the validation split
    drop_pt: float | None = None
    drop_upper_pt: float | None = None
    timed_p50_ms: float | None = None  # round-robin p50 when several candidates passed every budget


@dataclass(frozen=True)
class OtherBudgets:
    """The profile's budgets besides quality that a float node can break."""

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
    budgets: dict[str, str]  # quality budget -> "max 1" / "min 99": what every candidate is judged on
    budget_pt: float | None = None  # the accuracy drop budget, when there is one
    reference_accuracy_pct: float | None = None
    candidates: list[SearchCandidate] = field(default_factory=list)
    chosen: int = 0
    met_budget: bool = False
    stopped_by: str = "budget met"
    #: Which rule chose (see the module docstring) and what the validation set can resolve.
    selection: str = ""
    resolution: str = ""
    sensitivity: dict[str, float] = field(default_factory=dict)
    skipped_settings: list[str] = field(default_factory=list)  # other settings the quantizer could not apply
    left_to_bench: list[str] = field(default_factory=list)  # budgets only the benchmark measures
    examples: int = 0

    def as_metadata(self) -> dict[str, object]:
        return {**asdict(self), "candidates": [asdict(c) for c in self.candidates]}


def search(space: VariantSpace, float_model: Path, nodes: list[str], base_excluded: list[str], data: FallbackData,
           judge: Judge, config: FallbackConfig, out_path: Path, other: OtherBudgets | None = None) -> SearchResult:
    """Quantize at `out_path`: the configured setting, then the other settings, then nodes left in float
    one by one, until a candidate passes every quality budget within the other budgets."""
    started = time.monotonic()
    other = other or OtherBudgets()
    reference = data.run(float_model)
    drop = judge.budgets.get("accuracy_drop_pt") or judge.budgets.get("top1_drop_pt")
    result = SearchResult(budgets={n: f"{b.kind} {b.limit:g}" for n, b in judge.budgets.items()},
                          budget_pt=drop.limit if drop else None, left_to_bench=judge.left_to_bench,
                          reference_accuracy_pct=None if reference.correct is None
                          else 100.0 * float(reference.correct.mean()), examples=data.examples)
    with tempfile.TemporaryDirectory(prefix="slimline-fallback-") as scratch:
        scratch_dir = Path(scratch)
        paths: list[Path] = []

        def measure(variant: Variant, excluded: list[str]) -> SearchCandidate:
            path = scratch_dir / f"candidate-{len(paths)}.onnx"
            variant.quantize(excluded, path)
            paths.append(path)
            metrics = data.metrics(data.run(path), reference)
            judged: Judged = judge.judge(metrics, data.examples)
            labelled = "drop_se_pt" in metrics
            candidate = SearchCandidate(
                excluded=list(excluded), metrics=metrics, failing=judged.failing,
                failing_measured=judged.failing_measured, slack=judged.slack,
                latency_p50_ms=data.latency_p50_ms(path, config.latency_iters), size_mb=path.stat().st_size / 1e6,
                variant=variant.name, overrides=dict(variant.overrides),
                accuracy_pct=metrics.get("accuracy_pct") if labelled else None,
                drop_pt=metrics.get("accuracy_drop_pt") if labelled else None,
                drop_upper_pt=metrics["accuracy_drop_pt"] + judge.z * metrics["drop_se_pt"] if labelled else None)
            result.candidates.append(candidate)
            log.info("fallback candidate %d (%s): %d excluded, %s", len(paths) - 1, variant.name, len(excluded),
                     describe_metrics(metrics, judge.budgets))
            return candidate

        def passes(candidate: SearchCandidate) -> bool:
            return not candidate.failing and other.broken_by(candidate) is None

        best, best_settings = measure(space.variant(space.configured), base_excluded), dict(space.configured)
        if not passes(best) and config.try_variants:
            best, best_settings = _walk_settings(space, best, best_settings, measure, passes, other, result)
        if not any(passes(c) for c in result.candidates):
            _exclude_nodes(space.variant(best_settings), measure, float_model, nodes, base_excluded, data, config,
                           scratch_dir, started, other, result, passes)
        elif len(result.candidates) > 1:
            setting = next(c for c in result.candidates if passes(c)).variant
            result.stopped_by = f"a full-INT8 setting met every budget ({setting})"
        _choose(result, other, lambda indices: data.round_robin_p50_ms([paths[i] for i in indices],
                                                                      config.latency_iters))
        chosen = result.candidates[result.chosen]
        if nodes and set(nodes) <= set(chosen.excluded) | set(getattr(space.variant(
                {**space.configured, **chosen.overrides}).quantize, "float_nodes", ())):
            result.stopped_by += "; every quantizable node is in float: the budgets hold only for the float model"
        result.resolution = _resolution(result, config)
        shutil.copyfile(paths[result.chosen], out_path)
    return result


def _better(a: SearchCandidate, b: SearchCandidate, other: OtherBudgets) -> bool:
    def key(c: SearchCandidate) -> tuple[bool, int, int, float]:
        return other.broken_by(c) is None, -len(c.failing), -len(c.failing_measured), c.slack
    return key(a) > key(b)


def _walk_settings(space: VariantSpace, best: SearchCandidate, settings: Settings,
                   measure: Callable[[Variant, list[str]], SearchCandidate], passes: Callable[[SearchCandidate], bool],
                   other: OtherBudgets, result: SearchResult) -> tuple[SearchCandidate, Settings]:
    """One field at a time on top of the best setting so far, in the space's order, until one passes."""
    tried = [dict(settings)]
    for name, values in space.axes:
        for value in values:
            trial = {**settings, name: value}
            if trial in tried:
                continue
            tried.append(trial)
            variant = space.variant(trial)
            try:
                candidate = measure(variant, best.excluded)
            except PassError as err:  # e.g. a calibrator that cannot run on these examples
                result.skipped_settings.append(f"{variant.name}: {err}")
                log.warning("fallback: setting %r could not be quantized, skipped: %s", variant.name, err)
                continue
            if _better(candidate, best, other):
                best, settings = candidate, trial
            if passes(best):
                return best, settings
    return best, settings


def _exclude_nodes(variant: Variant, measure: Callable[[Variant, list[str]], SearchCandidate], float_model: Path,
                   nodes: list[str], base_excluded: list[str], data: FallbackData, config: FallbackConfig,
                   scratch: Path, started: float, other: OtherBudgets, result: SearchResult,
                   passes: Callable[[SearchCandidate], bool]) -> None:
    """Leave the most sensitive nodes in float one more at a time, until the budgets hold or another breaks."""
    kept = set(getattr(variant.quantize, "float_nodes", ()))  # the setting keeps these in float already
    nodes = [n for n in nodes if n not in base_excluded and n not in kept]
    if not nodes:
        result.stopped_by = "no nodes to exclude"
        return
    result.sensitivity = _rank(variant.quantize, float_model, nodes, base_excluded, data, config, scratch, started)
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
            if passes(candidate):
                return
        result.stopped_by = "max_excluded reached" if ranked else "no nodes to exclude"


def _choose(result: SearchResult, other: OtherBudgets, time_side_by_side: Callable[[list[int]], list[float]]) -> None:
    """The module docstring's rule: within the other budgets, the fastest certified (timed side by side when
    several), else the first within the budgets as measured, else the one closest to them."""
    candidates = result.candidates
    within = [i for i, c in enumerate(candidates) if other.broken_by(c) is None] or list(range(len(candidates)))
    certified = [i for i in within if not candidates[i].failing]
    measured = [i for i in within if not candidates[i].failing_measured]
    result.met_budget = bool(certified)
    if len(certified) > 1:
        for index, p50 in zip(certified, time_side_by_side(certified), strict=True):
            candidates[index].timed_p50_ms = p50
        result.chosen = min(certified, key=lambda i: candidates[i].timed_p50_ms)
        result.selection = (f"the fastest of {len(certified)} candidates within every budget (with the confidence "
                            "rule), timed side by side")
    elif certified:
        result.chosen = certified[0]
        result.selection = "the only candidate within every quality budget (with the confidence rule) and the others"
    elif measured:
        result.chosen = measured[0]
        result.selection = ("fewest float nodes with every quality budget met as measured (not certified: the "
                            "validation set cannot resolve it)")
    else:
        result.chosen = max(within, key=lambda i: (candidates[i].slack, -candidates[i].latency_p50_ms))
        word = "accuracy" if all(n in ("accuracy_drop_pt", "top1_drop_pt") for n in result.budgets) else "quality"
        result.selection = (f"most accurate candidate within the other budgets (none met the {word} budget; ranked "
                            "by the worst budget's margin)")
    if certified and not result.stopped_by.startswith(("more float nodes", "a full-INT8")):
        result.stopped_by = "budget met"


def _resolution(result: SearchResult, config: FallbackConfig) -> str:
    """What the validation set can certify, from the chosen candidate's own paired standard error."""
    chosen = result.candidates[result.chosen]
    if result.budget_pt is None or chosen.drop_pt is None or chosen.drop_upper_pt is None:
        return (f"{result.examples} validation examples; agreement is judged minus {config.confidence_z:g} "
                "binomial SE, other metrics as measured")
    if config.confidence_z == 0:
        return f"{result.examples} validation examples; confidence_z 0: the measured drop is compared as it is"
    se_pt = (chosen.drop_upper_pt - chosen.drop_pt) / config.confidence_z
    certifiable = result.budget_pt - config.confidence_z * se_pt
    return (f"{result.examples} validation examples; the chosen candidate's drop has a paired SE of {se_pt:.2f} pt, "
            f"so a {result.budget_pt:g} pt budget is certified (drop + {config.confidence_z:g}*SE) only below "
            f"{max(certifiable, 0):.2f} pt measured")


def _rank(quantize: Quantize, float_model: Path, nodes: list[str], base_excluded: list[str], data: FallbackData,
          config: FallbackConfig, scratch: Path, started: float) -> dict[str, float]:
    """Sensitivity per node: output error vs fp32 when only that node stays in float (lower = more sensitive)."""
    rows = data.subset(config.sensitivity_samples)
    reference = data.run(float_model, rows)
    errors: dict[str, float] = {}
    probe = scratch / "probe.onnx"
    with reporter().step("fallback: ranking node sensitivity", total=len(nodes)) as step:
        for node in nodes:
            if time.monotonic() - started > config.time_limit_s / 2:
                log.warning("sensitivity ranking stopped at the time limit after %d of %d nodes", len(errors),
                            len(nodes))
                break
            quantize([*base_excluded, node], probe)
            errors[node] = data.sensitivity(data.run(probe, rows), reference)
            step.advance()
    if not errors:
        raise PassError("fallback: no time was left to rank any node.", fix="raise fallback.time_limit_s.")
    return errors


def quantizable_nodes(model_path: Path, op_types: list[str]) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in op_types and node.name]


def quantize_with_fallback(space: VariantSpace, float_model: Path, out_path: Path, model: ModelDir,
                           op_types: list[str], excluded: list[str], context: PassContext,
                           config: FallbackConfig) -> dict[str, object]:
    """Quantize once, or search when the profile has quality budgets and the run has eval data; returns metadata."""
    budgets = quality_budgets(context, config.max_drop_pt)
    reason = None
    if not config.enabled:
        reason = "disabled in the recipe"
    elif not budgets:
        reason = "the profile has no quality budget"
    elif context.tuning_data is None:
        reason = "no eval data in this run (pass --eval-data)"
    if reason is not None:
        log.warning("quality fallback skipped: %s", reason)
        space.make(space.configured)(excluded, out_path)
        return {"skipped": reason}
    data = FallbackData(model, context, config.eval_samples, context.quality_outputs or None)
    judge = Judge(budgets, config.confidence_z, config.margin_pt)
    other = OtherBudgets(size_mb=context.size_budget_mb, latency_p50_ms=context.latency_p50_budget_ms)
    with reporter().step(f"fallback: judging candidates on {data.examples} validation examples of "
                         f"{context.tuning_data.source} ({', '.join(judge.budgets) or 'no budget it can measure'})"):
        result = search(space, float_model, quantizable_nodes(float_model, op_types), excluded, data, judge, config,
                        out_path, other)
    return result.as_metadata()
