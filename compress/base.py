"""The pass framework: typed configs, an explicit registry, cheap checks before heavy work.

A pass is one module under `compress/` with a frozen pydantic Config (unknown keys forbidden, so
a typo in a recipe fails at load, not after an hour of calibration) and a class registered with
`@register("family.name")`. The catalogue (slimline.compression.catalogue) finds those decorators in the
source without importing anything, so adding a pass touches no other file and listing or validating
passes imports only the pass modules a recipe names.
"""

from __future__ import annotations

import math
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.data import DatasetSpec
from slimline.core.errors import SlimlineError
from slimline.core.output_kinds import ModelOutput
from slimline.profiles.schema import Budget, Shape, Target
from slimline.runtimes import get_runtime

Stage = Literal["torch", "onnx"]
Need = Literal["calibration_data", "teacher", "cuda"]


#: Numbers in a pass config beyond these are typos or attacks, never settings: `time_limit_s: 1e308` or
#: `.inf` validated, then overflowed a timeout after an hour of work. Seconds are capped at a week
#: (below threading.TIMEOUT_MAX once added up), any other number at 1e12 (integers at 2**53, exact in
#: a float); each pass's own fields add the tighter bounds that are theirs.
MAX_CONFIG_SECONDS = 7 * 86_400.0
MAX_CONFIG_NUMBER = 1e12
MAX_CONFIG_INTEGER = 2**53


def _bounded_number(value: Any, name: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value}")
    if isinstance(value, int) and abs(value) > MAX_CONFIG_INTEGER:
        raise ValueError(f"{name} = {value:.3g} is out of range (at most {MAX_CONFIG_INTEGER:.3g} in size)")
    if isinstance(value, float) and abs(value) > MAX_CONFIG_NUMBER:
        raise ValueError(f"{name} = {value:.3g} is out of range (at most {MAX_CONFIG_NUMBER:.3g} in size)")
    if name.endswith("_s") and isinstance(value, (int, float)) and value > MAX_CONFIG_SECONDS:
        raise ValueError(f"{name} = {value:.3g} s is more than a week ({MAX_CONFIG_SECONDS:.0f} s)")


def _check_numbers(value: Any, name: str, depth: int = 0) -> None:
    """Every number inside a field: in lists, mappings and nested config models (e.g. a pass's `fallback`)."""
    if isinstance(value, (int, float)):
        _bounded_number(value, name)
    elif depth < 8 and isinstance(value, BaseModel):
        for field, item in value.__dict__.items():
            _check_numbers(item, f"{name}.{field}", depth + 1)
    elif depth < 8 and isinstance(value, (list, tuple)):
        for item in value:
            _check_numbers(item, name, depth + 1)
    elif depth < 8 and isinstance(value, dict):
        for item in value.values():
            _check_numbers(item, name, depth + 1)


class PassConfig(BaseModel):
    """Base of every pass config: frozen, unknown keys rejected, every number finite and bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _finite_and_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        _check_numbers(value, info.field_name or "value")
        return value


@dataclass(frozen=True)
class Problem:
    """Something `check()` found: an error refuses the recipe before any work, a warning is reported."""

    severity: Literal["error", "warning"]
    message: str
    pass_name: str = ""
    fix: str | None = None  # every refusal (error) says how to get past it

    def __str__(self) -> str:
        text = f"{self.severity}: {self.pass_name}: {self.message}"
        return text if self.fix is None else f"{text}\n    fix: {self.fix}"


@dataclass(frozen=True)
class ModelInfo:
    """What a pass may know before anything heavy runs: format, task and architecture."""

    format: str
    task: str
    model_type: str | None = None


@dataclass
class PassContext:
    """Everything a pass may use besides its input directory and config."""

    target: Target
    seed: int = 0
    shape: Shape = field(default_factory=Shape)
    #: The profile's accuracy budget in points vs fp32 (accuracy_drop_pt max / accuracy_pct max_drop).
    accuracy_drop_budget_pt: float | None = None
    #: The profile's size_mb / latency_p50_ms max: a fallback must not trade them away for accuracy.
    size_budget_mb: float | None = None
    latency_p50_budget_ms: float | None = None
    #: The run's eval data (a text DatasetSpec, or images / arrays / text: bench.evaluators.EvalSource) for passes
    #: that tune or calibrate on it: validation split for the fallback, train for calibration, never test.
    tuning_data: DatasetSpec | Any | None = None
    #: Every quality budget of the profile (the fallback searches on all of them) and the model's outputs with
    #: their kinds, as the plan decided them (pipeline.quality_plan).
    quality_budgets: dict[str, Budget] = field(default_factory=dict)
    quality_outputs: list[ModelOutput] = field(default_factory=list)
    teacher: ModelDir | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassResult:
    """What apply() reports: the produced model file and facts for the manifest's metadata."""

    model_file: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    data_sha256: dict[str, str] = field(default_factory=dict)  # e.g. the calibration set, for provenance
    #: The model's inputs and outputs when the pass changed them (a stateful OpenVINO decoder has no past
    #: inputs or present outputs); None: the parent's, as they were.
    inputs: list[TensorSpec] | None = None
    outputs: list[str] | None = None


ConfigT = TypeVar("ConfigT", bound=PassConfig)


class Pass(ABC, Generic[ConfigT]):
    """`Pass[MyConfig]` types `self.config` as MyConfig; `Config` names the same class for validation."""

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]]
    stage: ClassVar[Stage]
    accepts: ClassVar[frozenset[str]]
    produces: ClassVar[str]
    needs: ClassVar[frozenset[Need]] = frozenset()
    #: How a skipped optional step is announced: "<skip_label>: <reason>; <skip_consequence>".
    skip_label: ClassVar[str] = ""
    skip_consequence: ClassVar[str] = "continuing without it"

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        """Cheap validation against the incoming model and target; override to add pass-specific checks."""
        problems = []
        if model.format not in self.accepts:
            problems.append(self.error(f"accepts {sorted(self.accepts)} models, but gets a {model.format} model",
                                       fix=_format_fix(self.stage, model.format)))
        if "cuda" in self.needs and target.device != "cuda":
            problems.append(self.error(f"needs a CUDA target, but the profile's device is {target.device}",
                                       fix="use a CUDA profile (e.g. gpu-t4) on an NVIDIA GPU machine, or drop the "
                                           "step"))
        return problems

    @abstractmethod
    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        """Read `model`, write the new model's files into `out_dir` (the manifest is written for you)."""

    def error(self, message: str, fix: str | None = None) -> Problem:
        """A refusal: `message` says why, `fix` what to change (drop the step, another profile, a config key)."""
        return Problem("error", message, self.name, fix)

    def warning(self, message: str, fix: str | None = None) -> Problem:
        return Problem("warning", message, self.name, fix)

    def refusal(self, err: SlimlineError) -> Problem:
        """An error found by a shared check (a SlimlineError): its message and its fix, kept apart."""
        message = str(err)
        if err.fix:
            message = message.removesuffix(f"\n  fix: {err.fix}")
        return Problem("error", message, self.name, err.fix or "fix the step's config as the message says")


def _format_fix(stage: str, given: str) -> str:
    if stage == "onnx":
        return ("put the step after the export (in a recipe, ONNX-level steps run after it), or `slimline export` "
                "the model first")
    if given == "onnx":
        return "torch-level steps run before the export: give them the Hugging Face checkpoint, not an ONNX model"
    return "drop the step, or start from a model format it accepts"


def copy_side_files(source: Path, out_dir: Path, skip: set[str]) -> None:
    """Carry tokenizer/config files along so every stage directory is deployable on its own."""
    for path in source.iterdir():
        if path.is_file() and path.name not in skip and path.name != "manifest.json":
            shutil.copy2(path, out_dir / path.name)


class TorchRuntimePass(Pass[ConfigT]):
    """A torch-level pass whose output only the PyTorch runtime can load, so other runtimes are refused."""

    stage = "torch"
    accepts = frozenset({"hf"})
    produces = "torch-quantized"
    #: Why the output cannot leave PyTorch; check() completes the sentence with the target's runtime.
    torch_only_reason: ClassVar[str]

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        if self.produces not in get_runtime(target.runtime).loads:
            problems.append(self.error(f"{self.torch_only_reason}, but the target runtime is {target.runtime}",
                                       fix="use a torch-runtime profile (cpu-torch), or quantize.ort-int8-dynamic "
                                           "for ONNX Runtime"))
        return problems


_REGISTRY: dict[str, type[Pass[Any]]] = {}


def register(name: str, *, extra: str | None = None):
    """Class decorator: register a pass under `name` (e.g. "quantize.ort-int8-dynamic").

    `extra` names the `slimline[extra]` that installs the pass's optional libraries. Both arguments
    must be string literals: the catalogue reads them from the source without importing the module.
    """

    def decorate(cls: type[Pass[Any]]) -> type[Pass[Any]]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"pass name {name!r} registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered(name: str) -> type[Pass[Any]] | None:
    """The class registered under `name` by a module that is already imported."""
    return _REGISTRY.get(name)


def registered_passes() -> dict[str, type[Pass[Any]]]:
    """The passes whose modules are imported so far (the catalogue knows the rest without importing)."""
    return dict(_REGISTRY)
