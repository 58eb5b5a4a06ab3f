"""The Profile schema: a target, the shapes to measure, a default recipe, and budgets.

A budget names a metric with its unit in the name (`latency_p95_ms`, `size_mb`,
`accuracy_drop_pt`) and exactly one of `max` / `min` / `max_drop` (Olive's MetricGoal kinds).
`max_drop` compares against the fp32 reference measured in the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slimline.core.errors import ProfileError, RecipeError, shorten
from slimline.core.output_kinds import QUALITY_METRICS, OutputKind
from slimline.core.runtime_names import AUTO_RUNTIME, device_problem, runtime_entry
from slimline.core.suggest import did_you_mean, validation_problems
from slimline.core.yaml_files import load_yaml_file

PROFILE_SCHEMA_VERSION = 1
#: Upper bounds no real profile reaches: every number a profile holds ends up in arithmetic (timeouts,
#: margins, plot scales) or a loop count, and `max_time_s: 1e308` validated, then overflowed two stages
#: later. Times are capped at a day (a subprocess timeout adds them up per shape; threading.TIMEOUT_MAX
#: is ~9.2e9 s), budget limits at 1e12 of their unit.
MAX_LIMIT = 1e12
MAX_SECONDS = 86_400.0
MAX_SHAPES = 64
PROFILES_DIR = Path(__file__).parent
#: Recipes shipped with slimline (package data beside the profiles), loadable by name.
RECIPES_DIR = PROFILES_DIR / "recipes"

#: metric -> which limit kinds make sense for it. The unit is part of the name.
BUDGET_METRICS: dict[str, tuple[str, ...]] = {
    "latency_p50_ms": ("max",),
    "latency_p90_ms": ("max",),
    "latency_p95_ms": ("max",),
    "latency_p99_ms": ("max",),
    "throughput_sps": ("min",),
    "size_mb": ("max",),
    "peak_rss_mb": ("max",),
    "gpu_memory_mb": ("max",),
    "accuracy_pct": ("min", "max_drop"),
    "accuracy_drop_pt": ("max",),
    "speedup_vs_baseline": ("min",),
    # Evaluators (bench/evaluators): image top-1 drop vs the baseline in points, top-1 agreement with the
    # baseline in %, and the largest |output - baseline output| on the eval inputs.
    "top1_drop_pt": ("max",),
    "agreement_pct": ("min",),
    "max_abs_error": ("max",),
    # Every output's fidelity to fp32 by its kind (slimline.core.output_kinds): class logits' top-5 agreement in
    # %, any float output's mean |error| and relative error ||out - fp32|| / ||fp32||, and for vectors
    # (embeddings, boxes, keypoints) the cosine similarity with fp32 per example, mean and 1st percentile.
    # A budget on one output of a model with several: METRIC@OUTPUT (`cosine_mean@embeddings`); a plain
    # budget holds for every output that measures the metric.
    "top5_agreement_pct": ("min",),
    "mean_abs_error": ("max",),
    "rel_error": ("max",),
    "cosine_mean": ("min",),
    "cosine_p01": ("min",),
    # Decoder LLMs (bench/decode.py, bench/evaluators/perplexity.py): perplexity increase vs the fp32 baseline
    # in %, prefill latency at the profile's prompt length, decode tokens/s with the KV cache and its speed-up.
    "perplexity_increase_pct": ("max",),
    "continuation_agreement_pct": ("min",),
    "prefill_p50_ms": ("max",),
    "decode_tokens_per_s": ("min",),
    "decode_speedup_vs_baseline": ("min",),
}


#: Other spellings a profile may use -> the metric's name (the issue that introduced cosine budgets named them so).
BUDGET_ALIASES: dict[str, str] = {"cosine_min_mean": "cosine_mean", "cosine_min_p01": "cosine_p01"}


def canonical_budget_name(name: str) -> str:
    """`cosine_min_mean@emb` -> `cosine_mean@emb`; other names unchanged."""
    metric, separator, output = name.partition("@")
    return BUDGET_ALIASES.get(metric, metric) + separator + output


class EvalSettings(BaseModel):
    """How quality is measured, when the task and data would choose otherwise (`--evaluator` overrides
    `evaluator`): an evaluator by name (text-classification, image-top1, agreement, embedding, perplexity) and
    the kind of each named output (class-logits, vector, token-logits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    evaluator: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    outputs: dict[str, OutputKind] = Field(default_factory=dict)


class Budget(BaseModel):
    """Exactly one of max / min / max_drop: a finite, non-negative number (every metric is a size, a
    time, a rate, a ratio or a drop, so a negative or NaN limit is a typo that would pass or fail
    everything)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max: float | None = Field(default=None, ge=0, le=MAX_LIMIT, allow_inf_nan=False)
    min: float | None = Field(default=None, ge=0, le=MAX_LIMIT, allow_inf_nan=False)
    max_drop: float | None = Field(default=None, ge=0, le=MAX_LIMIT, allow_inf_nan=False)

    @model_validator(mode="after")
    def _exactly_one_limit(self) -> Budget:
        given = [kind for kind in ("max", "min", "max_drop") if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a budget needs exactly one of max / min / max_drop, got {given or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in ("max", "min", "max_drop") if getattr(self, kind) is not None)

    @property
    def limit(self) -> float:
        return float(getattr(self, self.kind))


#: CPU capabilities a runtime candidate may require (slimline.core.machine.cpu_capabilities keys).
CPU_CAPABILITIES = ("vnni", "bf16", "amx", "amx_int8", "amx_bf16", "avx512_bf16")


class RuntimeCandidate(BaseModel):
    """One way to run the model that `target.runtime: auto` times against the others: a runtime and the
    ONNX-level recipe that makes its artifact (a shipped recipe's name or the steps), where the CPU has
    what `requires` names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    runtime: str
    recipe: str | list[dict[str, Any]] = Field(default_factory=list)
    label: str | None = Field(default=None, max_length=80)
    #: e.g. {bf16: true}: only where the CPU computes bf16 in hardware; {bf16: false}: only where it does not.
    requires: dict[str, bool] = Field(default_factory=dict)
    #: The runtime's own options for this candidate (target.runtime_options once it is chosen).
    runtime_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, name: str) -> str:
        runtime_entry(name)
        return name

    @field_validator("requires")
    @classmethod
    def _known_capabilities(cls, requires: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(requires) - set(CPU_CAPABILITIES))
        if unknown:
            raise ValueError(f"unknown CPU capabilities {unknown}; known: {', '.join(CPU_CAPABILITIES)}")
        return requires

    def name(self) -> str:
        recipe = self.recipe if isinstance(self.recipe, str) else "+".join(str(s.get("pass")) for s in self.recipe)
        return self.label or f"{self.runtime}: {recipe or 'no passes'}"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: Literal["cpu", "cuda"] = "cpu"
    #: A name in slimline.core.runtime_names (onnxruntime, openvino, tensorrt, torch).
    runtime: str = "onnxruntime"
    threads: int = Field(default=2, ge=1, le=512)
    precision: Literal["fp32", "fp16", "int8", "int4", "mixed"] = "int8"
    execution_providers: list[str] = Field(default_factory=list, max_length=16)
    #: The runtime's own settings, validated by its folder's Config when a run is planned (e.g. openvino's
    #: performance_hint); kept as data here because the profile schema sits below the runtimes.
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    #: `runtime: auto`: the run builds each candidate's artifact, times them side by side and continues with
    #: the fastest that meets the budgets (slimline.pipeline.runtime_choice). `runtime` then holds the first
    #: candidate's: what an explicit --recipe, `compress` or `bench` use without choosing.
    candidates: list[RuntimeCandidate] = Field(default_factory=list, max_length=16)

    @model_validator(mode="before")
    @classmethod
    def _auto(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("runtime") == AUTO_RUNTIME:
            candidates = data.get("candidates") or []
            if not candidates:
                raise ValueError("runtime 'auto' needs target.candidates: the runtimes and recipes to time")
            first = candidates[0]
            runtime = first.runtime if isinstance(first, RuntimeCandidate) else (first or {}).get("runtime")
            return {**data, "runtime": runtime}
        return data

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, name: str) -> str:
        runtime_entry(name)
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        for runtime in dict.fromkeys([self.runtime, *(c.runtime for c in self.candidates)]):
            problem = device_problem(runtime, self.device)
            if problem:
                raise ValueError(problem)
        labels = [c.name() for c in self.candidates]
        if len(set(labels)) != len(labels):
            raise ValueError(f"target.candidates need distinct labels, got {labels}")
        return self

    def providers(self) -> list[str]:
        """ONNX Runtime execution providers in preference order for this target."""
        if self.execution_providers:
            return list(self.execution_providers)
        if self.device == "cuda":
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    batch_size: int = Field(default=1, ge=1, le=4096)
    sequence_length: int = Field(default=128, ge=1, le=32768)
    image_size: int | None = Field(default=None, ge=8, le=4096)

    def label(self) -> str:
        return f"b{self.batch_size}_s{self.sequence_length}" if self.image_size is None else \
            f"b{self.batch_size}_img{self.image_size}"


class Measurement(BaseModel):
    """How long and how often to time: warm-up, then at least min_iters AND min_time_s."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup_iters: int = Field(default=10, ge=0, le=100_000)
    min_iters: int = Field(default=50, ge=5, le=10_000_000)
    min_time_s: float = Field(default=5.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    max_time_s: float = Field(default=60.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    max_cv: float = Field(default=0.15, gt=0, le=100, allow_inf_nan=False,
                          description="coefficient of variation above which a warning is raised")
    eval_max_samples: int | None = Field(default=None, ge=1, le=100_000_000)
    decode_tokens: int = Field(default=64, ge=2, le=4096, description="tokens generated per decode run (LLMs)")
    #: How the runtimes' thread pools wait while the models are timed side by side (slimline.benchmarking.interleaved):
    #: "runtime-defaults" as each runtime ships (what a deployment gets; unbiased on a quiet machine), "passive"
    #: (OpenMP threads sleep at once, ONNX Runtime pools do not spin: steady on an oversubscribed machine, but
    #: every PyTorch op then pays for waking its threads), or "auto": passive when other processes keep the cores
    #: busy just before the timing, else each runtime's defaults (slimline.core.contention).
    side_by_side_threading: Literal["auto", "runtime-defaults", "passive"] = "auto"

    @model_validator(mode="after")
    def _times_ordered(self) -> Measurement:
        if self.max_time_s < self.min_time_s:
            raise ValueError("max_time_s must be >= min_time_s")
        return self


class RegressionBudget(BaseModel):
    """Limits against the last shipped run on the same machine class (`slimline history ship`): the
    median latency's slowdown in % and the accuracy lost in points. Only `max` makes sense for either."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    latency_p50_pct: Budget | None = None
    accuracy_drop_pt: Budget | None = None

    @model_validator(mode="after")
    def _max_only(self) -> RegressionBudget:
        for name in ("latency_p50_pct", "accuracy_drop_pt"):
            budget = getattr(self, name)
            if budget is not None and budget.kind != "max":
                raise ValueError(f"regression_vs_shipped.{name} takes max, not {budget.kind}")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = PROFILE_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=128)
    description: str = Field(default="", max_length=10_000)
    target: Target = Field(default_factory=Target)
    shapes: list[Shape] = Field(default_factory=lambda: [Shape()], min_length=1, max_length=MAX_SHAPES)
    #: The default recipe: a shipped recipe's name (profiles/recipes/NAME.yaml) or the steps themselves.
    recipe: str | list[dict[str, Any]] = Field(default_factory=list)
    measurement: Measurement = Field(default_factory=Measurement)
    #: A profile file must state at least one (parse_profile); a verdict without budgets is "incomplete".
    budgets: dict[str, Budget] = Field(default_factory=dict)
    #: `slimline search`'s default space: a shipped space's name (profiles/spaces/NAME.yaml) or a path; None:
    #: by the target's device (cpu or gpu).
    search_space: str | None = None
    #: Compared with the last shipped run in the results history (slimline.history.regression).
    regression_vs_shipped: RegressionBudget | None = None
    #: The evaluator and output kinds, when the model's task and the eval data would choose otherwise.
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_validator("budgets", mode="before")
    @classmethod
    def _canonical_names(cls, budgets: Any) -> Any:
        if not isinstance(budgets, dict):
            return budgets
        renamed: dict[Any, Any] = {}
        for name, budget in budgets.items():
            key = canonical_budget_name(name) if isinstance(name, str) else name
            if key in renamed:
                raise ValueError(f"budget {name!r} repeats {key!r}")
            renamed[key] = budget
        return renamed

    @field_validator("budgets")
    @classmethod
    def _known_metrics(cls, budgets: dict[str, Budget]) -> dict[str, Budget]:
        for name, budget in budgets.items():
            metric, separator, output = name.partition("@")
            if metric not in BUDGET_METRICS:
                raise ValueError(f"unknown budget metric {metric!r}; {did_you_mean(metric, BUDGET_METRICS)}known: "
                                 f"{', '.join(BUDGET_METRICS)}")
            if separator and (not output or metric not in QUALITY_METRICS):
                raise ValueError(f"budget {name!r}: METRIC@OUTPUT names one output of the model, and only quality "
                                 f"metrics are per output ({', '.join(sorted(QUALITY_METRICS))})")
            if budget.kind not in BUDGET_METRICS[metric]:
                raise ValueError(f"budget {name} takes {' or '.join(BUDGET_METRICS[metric])}, not {budget.kind}")
        return budgets


def format_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per problem; an unknown key names the closest field of `model` at that place ("did you mean")."""
    return "\n".join(f"  - {where or '(top level)'}: {message}" for where, message in validation_problems(err, model))


def parse_profile(data: Any, source: str) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"profile {source} must be a YAML mapping, got {type(data).__name__}.",
                           fix="see `slimline profiles show cpu` for the layout.")
    try:
        profile = Profile.model_validate(data)
    except ValidationError as err:
        raise ProfileError(f"profile {source} is invalid:\n{format_validation_error(err, Profile)}",
                           fix="fix the fields named above; `slimline profiles show cpu` shows a valid one.") from err
    if not profile.budgets:
        raise ProfileError(f"profile {source} has no budgets, so no model could ever fail it.",
                           fix=f"add at least one budget, e.g. budgets: {{latency_p95_ms: {{max: 60}}}}; metrics: "
                               f"{', '.join(BUDGET_METRICS)}.")
    return profile


def list_profiles() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def list_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def shipped_or_path(name_or_path: str | Path, directory: Path, what: str) -> Path:
    """A shipped file's path for a bare name (`cpu-fast` -> DIRECTORY/cpu-fast.yaml), else the path as given;
    an unknown bare name is a RecipeError listing the shipped names."""
    path = Path(name_or_path)
    if path.suffix or path.exists() or len(path.parts) != 1:
        return path
    shipped = directory / f"{name_or_path}.yaml"
    if not shipped.is_file():
        names = sorted(p.stem for p in directory.glob("*.yaml"))
        raise RecipeError(f"no {what} named {shorten(str(name_or_path))}.",
                          fix=f"{did_you_mean(str(name_or_path), names)}use one of {', '.join(names)} or a path to a "
                              "YAML file.")
    return shipped


def recipe_path(name_or_path: str | Path) -> Path:
    """A shipped recipe's file for a bare name (`cpu-fast`), else the path as given."""
    return shipped_or_path(name_or_path, RECIPES_DIR, "recipe")


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name, or any profile YAML by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PROFILES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProfileError(f"no profile named {name_or_path!r}.",
                               fix=f"{did_you_mean(str(name_or_path), list_profiles())}use one of "
                                   f"{', '.join(list_profiles())} or a path to a YAML file.")
    return parse_profile(load_yaml_file(path, ProfileError, "profile"), str(path))
