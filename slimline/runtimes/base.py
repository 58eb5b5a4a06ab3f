"""What a runtime is: the questions the rest of slimline asks about one, and what every runner takes.

A runtime folder (`slimline/runtimes/<name>/`) subclasses `Runtime` and answers for itself: which model
formats its runner loads, what a run for it must end in (and which exporter makes that from the ONNX
stage), whether ONNX Runtime's contrib ops or INT8 QDQ graphs run on it, how to check that this machine
has it (with the install line), its per-runtime options (`target.runtime_options`, a frozen pydantic
Config), its Triton platform and file names, and how a bundle's engine is loaded for `verify` and
`serve`. Code elsewhere never compares a runtime's name to a string: it asks these attributes
(optimum-benchmark's backends; a test enforces it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import ProfileError
from slimline.core.runtime_names import runtime_entry
from slimline.formats.causal_lm import Decoder
from slimline.profiles.schema import Measurement, Shape, Target, format_validation_error


class RunnerSpec(BaseModel):
    """Everything a benchmark worker process needs; serialised to JSON between processes."""

    model_config = ConfigDict(extra="forbid")
    label: str
    runtime: str  # a name in slimline.core.runtime_names
    model_path: str
    model_dir: str
    model_format: str = "hf"
    task: str
    device: Literal["cpu", "cuda"] = "cpu"
    precision: str = "fp32"  # the profile's target.precision (the torch baseline runs fp16 on cuda+fp16)
    threads: int = 2
    providers: list[str] = []
    #: The runtime's own settings (target.runtime_options, validated by its Config).
    runtime_options: dict[str, Any] = {}
    inputs: list[TensorSpec]
    shapes: list[Shape]
    measurement: Measurement
    eval_npz: str | None = None
    evaluator: str = "text-classification"  # a name in slimline.benchmarking.evaluators' registry
    eval_outputs_path: str | None = None  # where the evaluator keeps raw outputs (agreement with fp32)
    eval_batch_size: int = 32
    seed: int = 0
    #: False when several models are timed in one process (bench.interleaved): an idle ONNX Runtime pool
    #: that spins steals the cores from the model being timed.
    allow_spinning: bool = True

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, name: str) -> str:
        runtime_entry(name)
        return name


class Runner(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return the first output (logits) as numpy."""
        ...

    def synchronize(self) -> None:
        """Block until queued device work is done (no-op on CPU)."""
        ...

    def describe(self) -> dict[str, object]:
        """Runtime facts for the report: providers in use, device, dtype."""
        ...


class Session(Protocol):
    """The slice of onnxruntime.InferenceSession that serving and the decode loop use; other runtimes
    wrap their compiled models in it (slimline.runtimes.openvino.session)."""

    def get_inputs(self) -> list[Any]: ...  # each with .name, .type ("tensor(int64)"), .shape
    def get_outputs(self) -> list[Any]: ...
    def get_providers(self) -> list[str]: ...
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def torch_baseline_precision(device: str, precision: str) -> str:
    """The GPU baseline for an fp16 target is PyTorch eager in fp16 (what a team would ship without slimline);
    everywhere else the reference is fp32."""
    return "fp16" if device == "cuda" and precision == "fp16" else "fp32"


class EngineExporter(Protocol):
    """Builds a runtime's engine from the last ONNX stage (export.tensorrt, export.openvino)."""

    step: str

    def config(self, target: Target, override: BaseModel | None = None) -> BaseModel:
        """The exporter's config for this target; raises a BadInputError (exit 2) when it cannot build one."""
        ...

    def context_key(self, target: Target, shapes: list[Shape]) -> dict[str, Any]:
        """What besides its config changes the engine (shapes, the GPU): part of the stage's hash."""
        ...

    def build(self, model: ModelDir, out_dir: Path, config: BaseModel, shapes: list[Shape]) -> Any:
        """Write the engine into out_dir; returns an object with model_file, inputs, outputs, metadata."""
        ...


class RuntimeConfig(BaseModel):
    """A runtime's own settings (`target.runtime_options`): frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Runtime:
    """One runtime's answers. Class attributes are the capabilities; methods import the runtime lazily."""

    name: ClassVar[str]
    Config: ClassVar[type[RuntimeConfig]] = RuntimeConfig
    #: Model formats (manifest.format) its runner loads.
    loads: ClassVar[frozenset[str]]
    #: The format a run for this runtime ends in; None: the torch-level model as it is (no export).
    engine_format: ClassVar[str | None] = None
    #: Whether a run for it exports the torch-level model to ONNX (every runtime but torch eager does).
    needs_onnx_export: ClassVar[bool] = True
    #: The exporter step that turns the last ONNX stage into `engine_format` when no pass produced it already,
    #: and where its EngineExporter lives ("module:attribute", imported only when a run builds an engine; the
    #: exporter may sit in a higher layer, as export.tensorrt does).
    engine_step: ClassVar[str | None] = None
    engine_exporter: ClassVar[str | None] = None
    #: Whether it runs ONNX Runtime's contrib ops (com.microsoft: fused Attention, MatMulNBits, ...), i.e.
    #: whether the ORT-only ONNX passes (graph fusion, dynamic INT8, 4-bit) may precede it.
    runs_onnx_contrib_ops: ClassVar[bool] = False
    #: Devices on which it has INT8 kernels for quantized (QDQ / QOperator) ONNX graphs.
    onnx_int8_devices: ClassVar[frozenset[str]] = frozenset()
    #: Models on it can be timed together, round-robin in one process (CPU runtimes; a GPU is owned by one).
    times_side_by_side: ClassVar[bool] = True
    #: `slimline search` can screen trials on it (side-by-side CPU timing of ONNX artifacts).
    screens_search_trials: ClassVar[bool] = False
    #: How prune's pre-flight estimates a pruned shape's speed on this target: "onnx" (an unfused ONNX graph
    #: on ONNX Runtime, the nearest stand-in for a graph runtime), "torch" (eager), None (parameter ratio).
    pruning_timer: ClassVar[Literal["onnx", "torch"] | None] = None
    #: Bundles: Triton's platform and backend, the engine's file name in the version directory, the suffixes
    #: of the files that travel with it (external weights), and how the model card names it.
    triton_platform: ClassVar[str | None] = None
    triton_backend: ClassVar[str | None] = None
    engine_file_name: ClassVar[str | None] = None
    engine_suffixes: ClassVar[tuple[str, ...]] = ()
    engine_description: ClassVar[str] = ""
    #: The Python module whose version a bundle records (and the one `require` imports).
    module_name: ClassVar[str]

    # -- configuration and availability ----------------------------------------------------------------
    def config(self, target: Target) -> RuntimeConfig:
        """`target.runtime_options` validated by this runtime's Config (ProfileError, exit 2, on a bad key)."""
        try:
            return self.Config.model_validate(target.runtime_options)
        except ValidationError as err:
            raise ProfileError(f"target.runtime_options are invalid for runtime {self.name}:\n"
                               f"{format_validation_error(err)}",
                               fix=f"use the keys of {self.name}'s options: "
                                   f"{', '.join(self.Config.model_fields) or '(none)'}.") from err

    def check_available(self, target: Target, purpose: str) -> None:
        """Raise MissingDependency (exit 2, with the install line) when this machine cannot run the target."""
        from slimline.core.deps import require

        require(self.module_name, purpose=purpose)

    def preflight_notes(self, target: Target, capabilities: dict[str, Any]) -> list[str]:
        """Warnings for the plan about this CPU and this runtime (e.g. AMX left unused)."""
        return []

    def providers(self, target: Target) -> list[str]:
        """ONNX Runtime execution providers for a runner spec; other runtimes have none."""
        return []

    def exporter(self) -> EngineExporter:
        """The engine exporter named by `engine_exporter` (ValueError when the runtime builds no engine)."""
        if not self.engine_exporter:
            raise ValueError(f"runtime {self.name} builds no engine")
        module, _, attribute = self.engine_exporter.partition(":")
        return getattr(importlib.import_module(module), attribute)

    # -- running ----------------------------------------------------------------------------------------
    def make_runner(self, spec: RunnerSpec) -> Runner:
        raise NotImplementedError

    # -- bundles ----------------------------------------------------------------------------------------
    def installed_version(self) -> str:
        import importlib.metadata

        from slimline.core.deps import require

        module = require(self.module_name, purpose=f"loading a {self.name} bundle")
        return str(getattr(module, "__version__", None) or importlib.metadata.version(self.module_name))

    def bundle_version(self, model: ModelDir) -> str:
        """The runtime version a bundle of `model` records: by default the one installed while packaging."""
        return self.installed_version()

    def version_problem(self, recorded: tuple[int, ...], local: tuple[int, ...], recorded_text: str,
                        local_text: str) -> tuple[str, str] | None:
        """(message, fix) when an engine recorded with `recorded` cannot be trusted to load on `local`.
        Default: the same major release, and a local minor at least the recorded one."""
        if recorded[0] != local[0] or recorded[:2] > local[:2]:
            return (f"the bundle was packaged with {self.name} {recorded_text}; this machine has {local_text}, "
                    "which may not load its operators",
                    f"install {self.module_name}>={recorded[0]}.{recorded[1]},<{recorded[0] + 1}, or repackage "
                    "the bundle here.")
        return None

    def triton_parameters(self, target: Target) -> dict[str, str]:
        """Backend parameters for config.pbtxt (thread pools, hints)."""
        return {}

    def triton_caveat(self, model_metadata: dict[str, Any]) -> str | None:
        """Why Triton cannot serve this engine correctly as the bundle lays it out, or None when it can."""
        return None

    def open_session(self, engine: Path, threads: int, target: Target) -> Session:
        """The bundle's engine loaded for serving and `verify`'s real load."""
        raise NotImplementedError(f"{self.name} engines cannot be served by slimline")

    def make_decoder(self, session: Session, config: dict[str, Any]) -> Decoder | None:
        """A KV-cache decoder (prefill + steps) over a loaded session, for the benchmark's decode timing and
        `serve`'s generator; None when the model has no cache to decode with. Default: past_key_values in,
        present out, driven from numpy (slimline.formats.causal_lm.OrtDecoder)."""
        from slimline.formats.causal_lm import OrtDecoder

        try:
            return OrtDecoder(session, config)
        except ValueError:  # an export without past_key_values
            return None

    def load_check(self, engine: Path, inputs: list[TensorSpec], target: Target) -> list[str]:
        """Load the engine as serving would; returns warnings. Raises BundleError when it cannot load."""
        from slimline.core.errors import BundleError

        try:
            session = self.open_session(engine, 1, target)
        except BundleError:
            raise
        except Exception as err:  # each runtime raises its own exception types
            raise BundleError(f"{self.name} {self.installed_version()} cannot load {engine}: {err}",
                              fix=f"repackage the bundle with the {self.name} version it was built for.") from err
        missing = {spec.name for spec in inputs} - {i.name for i in session.get_inputs()}
        if missing:
            raise BundleError(f"{engine} has no input(s) {sorted(missing)} that the manifest records.",
                              fix="repackage the bundle.")
        return []

    def engine_outputs(self, engine: Path, model: ModelDir) -> list[TensorSpec]:
        """Output names, dtypes and shapes of the engine (default: the classifier's logits from the manifest)."""
        labels = model.manifest.metadata.get("label_names") or []
        return [TensorSpec(name=name, dtype="float32", shape=["batch", len(labels) or "classes"])
                for name in model.manifest.outputs or ["logits"]]
