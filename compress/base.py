"""The pass framework: typed configs, an explicit registry, cheap checks before heavy work.

A pass is one module under `compress/` with a frozen pydantic Config (unknown keys forbidden, so
a typo in a recipe fails at load, not after an hour of calibration) and a class registered with
`@register("family.name")`. Passes are discovered by importing every module under this package,
so adding one touches no other file.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from profiles.schema import Shape, Target
from slimline.artifact import ModelDir
from slimline.data import DatasetSpec

Stage = Literal["torch", "onnx"]
Need = Literal["calibration_data", "teacher", "cuda"]


class PassConfig(BaseModel):
    """Base of every pass config: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Problem:
    """Something `check()` found: an error refuses the recipe before any work, a warning is reported."""

    severity: Literal["error", "warning"]
    message: str
    pass_name: str = ""

    def __str__(self) -> str:
        return f"{self.severity}: {self.pass_name}: {self.message}"


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
    #: Labelled data for accuracy-aware passes; they use its validation split, never the test split.
    tuning_data: DatasetSpec | None = None
    teacher: ModelDir | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassResult:
    """What apply() reports: the produced model file and facts for the manifest's metadata."""

    model_file: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    data_sha256: dict[str, str] = field(default_factory=dict)  # e.g. the calibration set, for provenance


class Pass(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]]
    stage: ClassVar[Stage]
    accepts: ClassVar[frozenset[str]]
    produces: ClassVar[str]
    needs: ClassVar[frozenset[Need]] = frozenset()

    def __init__(self, config: PassConfig) -> None:
        self.config = config

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        """Cheap validation against the incoming model and target; override to add pass-specific checks."""
        problems = []
        if model.format not in self.accepts:
            problems.append(self.error(f"accepts {sorted(self.accepts)} models, but gets a {model.format} model"))
        if "cuda" in self.needs and target.device != "cuda":
            problems.append(self.error(f"needs a CUDA target, but the profile's device is {target.device}"))
        return problems

    @abstractmethod
    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        """Read `model`, write the new model's files into `out_dir` (the manifest is written for you)."""

    def error(self, message: str) -> Problem:
        return Problem("error", message, self.name)

    def warning(self, message: str) -> Problem:
        return Problem("warning", message, self.name)


def copy_side_files(source: Path, out_dir: Path, skip: set[str]) -> None:
    """Carry tokenizer/config files along so every stage directory is deployable on its own."""
    for path in source.iterdir():
        if path.is_file() and path.name not in skip and path.name != "manifest.json":
            shutil.copy2(path, out_dir / path.name)


class TorchRuntimePass(Pass):
    """A torch-level pass whose output only the PyTorch runtime can load, so other runtimes are refused."""

    stage = "torch"
    accepts = frozenset({"hf"})
    produces = "torch-quantized"
    #: Why the output cannot leave PyTorch; check() completes the sentence with the target's runtime.
    torch_only_reason: ClassVar[str]

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = super().check(model, target)
        if target.runtime != "torch":
            problems.append(self.error(f"{self.torch_only_reason}, but the target runtime is {target.runtime}; use "
                                       "a torch-runtime profile, or quantize.ort-int8-dynamic for ONNX Runtime"))
        return problems


_REGISTRY: dict[str, type[Pass]] = {}
_DISCOVERED = False  # not `bool(_REGISTRY)`: a pass registered before the first lookup must not stop discovery


def register(name: str):
    """Class decorator: register a pass under `name` (e.g. "quantize.ort-int8-dynamic")."""

    def decorate(cls: type[Pass]) -> type[Pass]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"pass name {name!r} registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    global _DISCOVERED
    import compress

    for module in pkgutil.walk_packages(compress.__path__, prefix="compress."):
        importlib.import_module(module.name)
    _DISCOVERED = True


def registry() -> dict[str, type[Pass]]:
    """All registered passes by name (imports every pass module once; they import heavy libs lazily)."""
    if not _DISCOVERED:
        _discover()
    return dict(sorted(_REGISTRY.items()))
