"""Plain PyTorch models: an `nn.Module` from a factory (`pkg.module:callable`) plus a state dict, no HF config.

A `torch-module` model directory holds `model.safetensors` (the state dict, converted once) and a
manifest whose metadata records the factory, the hash of the user's own weights file, the input spec
and, for images, the preprocessing. Every stage, the lineage and the bundle then work as for a
Hugging Face checkpoint; the baseline runner rebuilds the module from the factory, so the reference
is the user's own module as they run it. Pickled weights are read only with torch.load(weights_only=True).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slimline.core.artifact import (
    LineageStep,
    Manifest,
    ModelDir,
    TensorSpec,
    atomic_directory,
    new_provenance,
    sha256_file,
    sha256_json,
    write_manifest,
)
from slimline.core.errors import CheckpointError, shorten
from slimline.core.image_data import ImagePreprocess
from slimline.core.output_kinds import OutputKind
from slimline.core.paths import cache_root
from slimline.core.progress import reporter
from slimline.core.yaml_files import load_yaml_file
from slimline.formats.inputs import FEEDABLE_DTYPES
from slimline.formats.state_dict import UnwrappedState, match_module_keys, unwrap_state_dict

TORCH_MODULE_FORMAT = "torch-module"
WEIGHTS_FILE = "model.safetensors"
DTYPES = FEEDABLE_DTYPES


class ModuleInputSpec(BaseModel):
    """The small YAML beside `--model-factory` (or an ONNX / TorchScript `--checkpoint`): the inputs (names, dtypes,
    shapes with named dynamic axes), the output names, the task, and for images how pixels are prepared.

    The axis named `batch` is the batch wherever it sits (a recurrent state `[layers, batch, hidden]`); an input
    without one (a scalar `shape: []`, a fixed-size tensor) is shared by the whole batch, in benchmarks and eval
    data alike. Other named axes are dynamic and take the profile's sequence length."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[str] = Field(default_factory=lambda: ["output"])
    task: str = "tensor"  # image-classification scores top-1; anything else agreement with fp32
    #: How each output's quality is judged (core.output_kinds): class-logits (argmax is a prediction), vector
    #: (cosine and relative error: embeddings, boxes, keypoints), token-logits. Unnamed outputs: a classifier's
    #: first output is class-logits, everything else a vector.
    output_kinds: dict[str, OutputKind] = Field(default_factory=dict)
    label_names: list[str] | None = None
    image_preprocess: ImagePreprocess | None = None

    @model_validator(mode="after")
    def _kinds_name_outputs(self) -> ModuleInputSpec:
        unknown = sorted(set(self.output_kinds) - set(self.outputs))
        if unknown:
            raise ValueError(f"output_kinds names {unknown}, which are not in outputs {self.outputs}")
        return self

    @field_validator("inputs")
    @classmethod
    def _dtypes(cls, inputs: list[TensorSpec]) -> list[TensorSpec]:
        for spec in inputs:
            if spec.dtype not in DTYPES:
                raise ValueError(f"input {spec.name}: dtype {spec.dtype!r} is not one of {', '.join(DTYPES)}")
        return inputs


def load_input_spec(source: str | Path | dict[str, Any] | ModuleInputSpec) -> ModuleInputSpec:
    if isinstance(source, ModuleInputSpec):
        return source
    data = source if isinstance(source, dict) else load_yaml_file(Path(source), CheckpointError, "input spec")
    try:
        return ModuleInputSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise CheckpointError(f"input spec {shorten(str(source))} is invalid: {'.'.join(map(str, first['loc']))}: "
                              f"{first['msg']}.", fix="inputs: [{name: x, dtype: float32, shape: [batch, 3, 224, 224]}]"
                              " (strings in a shape are dynamic axes).") from None


def import_factory(reference: str, import_root: str | None = None) -> Any:
    """`pkg.module:callable` -> the callable (a class or a function that returns an nn.Module)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise CheckpointError(f"model factory {shorten(reference)} is not of the form pkg.module:callable.",
                              fix="e.g. --model-factory mypkg.models:build_net")
    for root in (import_root, str(Path.cwd())):
        if root and root not in sys.path:
            sys.path.insert(0, root)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as err:  # ImportError, AttributeError, or whatever the user's module raises on import
        raise CheckpointError(f"cannot import model factory {shorten(reference)}: {type(err).__name__}: {err}.",
                              fix="make the module importable from the working directory (or pip install it); a "
                                  "broken dependency it imports is named above.") from err
    if not callable(target):
        raise CheckpointError(f"model factory {shorten(reference)} is not callable.",
                              fix="point at a class or a function that returns the nn.Module.")
    return target


def read_weights(path: Path) -> UnwrappedState:
    """safetensors, or a pickle through torch.load(weights_only=True) (never full unpickling); the model's tensors
    unwrapped from a training checkpoint (`model_state`, `state_dict`, `module.` prefixes ...) with a note."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist.", fix="check the --weights path.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} could not be read as a state dict safely: {err}.",
                              fix="save it with torch.save(model.state_dict()) or safetensors' save_file.") from err
    return unwrap_state_dict(loaded, str(path))


def load_state_dict(path: Path) -> dict[str, Any]:
    """The model's tensors in `path` (see read_weights)."""
    return read_weights(path).tensors


def build_module(factory: Any, state: dict[str, Any], reference: str, notes: list[str] | None = None) -> Any:
    """The factory's module with `state` loaded strictly; a prefix every key shares that keeps the keys from matching
    the module's own (a Lightning module's `model.`) is stripped, and said in `notes`."""
    import torch

    try:
        module = factory()
    except Exception as err:
        raise CheckpointError(f"model factory {shorten(reference)}() failed: {type(err).__name__}: {err}.",
                              fix="the factory must build the model with no arguments (wrap it).") from err
    if not isinstance(module, torch.nn.Module):
        raise CheckpointError(f"model factory {shorten(reference)} returned {type(module).__name__}, not an nn.Module.",
                              fix="return the nn.Module itself.")
    state, stripped = match_module_keys(state, set(module.state_dict()))
    if stripped and notes is not None:
        notes.append(stripped)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the weights do not fit {shorten(reference)}: {str(err)[:400]}.",
                              fix="pass the state dict saved from this exact architecture.") from err
    return module.eval()


def load_module(model: ModelDir) -> Any:
    """The user's module, rebuilt from a torch-module directory (fp32, eval mode): from its factory and weights,
    or the TorchScript archive it holds (slimline.formats.model_files)."""
    meta = model.manifest.metadata
    if meta.get("torchscript"):
        from slimline.formats.model_files import load_torchscript

        return load_torchscript(model.model_path)
    factory = import_factory(meta["factory"], meta.get("import_root"))
    return build_module(factory, load_state_dict(model.path / WEIGHTS_FILE), meta["factory"])


def module_dir_for(factory: str, weights: Path, spec: ModuleInputSpec, cache: Path | None = None) -> ModelDir:
    """The torch-module directory for (factory, weights, spec), built once under the cache and reused.

    Building it imports the factory, loads the weights strictly and writes them as safetensors, so a
    wrong factory or state dict fails here, before any stage runs."""
    weights = Path(weights).expanduser().resolve()
    weights_sha256 = sha256_file(weights) if weights.is_file() else ""
    key = sha256_json({"factory": factory, "weights": weights_sha256, "spec": spec.model_dump(mode="json")})[:16]
    final = (cache or cache_root() / "torch-modules") / key
    if (final / "manifest.json").is_file():
        return _announced(ModelDir.open(final))
    import torch
    from safetensors.torch import save_file

    import_root = str(Path.cwd())
    weights_read = read_weights(weights)
    notes = list(weights_read.steps)
    module = build_module(import_factory(factory, import_root), weights_read.tensors, factory, notes)
    tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()
               if isinstance(v, torch.Tensor)}
    with atomic_directory(final, replace=True) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        write_manifest(tmp, Manifest(
            format=TORCH_MODULE_FORMAT, task=spec.task, model_file=WEIGHTS_FILE, inputs=spec.inputs,
            outputs=spec.outputs,
            lineage=[LineageStep(kind="source", name="torch-module",
                                 config={"path": str(final), "factory": factory, "weights": str(weights),
                                         "weights_sha256": weights_sha256})],
            provenance=new_provenance(),
            metadata={"factory": factory, "import_root": import_root, "weights_sha256": weights_sha256,
                      "weights_file": str(weights), "parameters": int(sum(t.numel() for t in tensors.values())),
                      **({"weights_unwrapped": "weights taken from " + "; ".join(notes)} if notes else {}),
                      **({"label_names": spec.label_names} if spec.label_names else {}),
                      **({"output_kinds": dict(spec.output_kinds)} if spec.output_kinds else {}),
                      **({"image_preprocess": spec.image_preprocess.model_dump()} if spec.image_preprocess else {})},
        ))
    return _announced(ModelDir.open(final))


def _announced(model: ModelDir) -> ModelDir:
    """Say how the weights were unwrapped from a training checkpoint, each time the directory is used."""
    note = model.manifest.metadata.get("weights_unwrapped")
    if note:
        reporter().note(f"{model.manifest.metadata.get('weights_file')}: {note}")
    return model


def spec_from_example(module: Any, example_inputs: Any, task: str = "tensor") -> ModuleInputSpec:
    """An input spec from example tensors: names from a dict's keys or forward()'s parameters, dtypes and
    shapes from the tensors, the first axis dynamic (`batch`)."""
    import torch

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, dict):
        named = list(example_inputs.items())
    else:
        parameters = [p for p in inspect.signature(module.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(parameters) < len(example_inputs):
            raise CheckpointError(f"{len(example_inputs)} example inputs for a forward() with {len(parameters)} "
                                  "named parameters.", fix="pass example_inputs as a dict {name: tensor}.")
        named = [(p.name, t) for p, t in zip(parameters, example_inputs, strict=False)]
    inputs = []
    for name, tensor in named:
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise CheckpointError(f"example input {name} has dtype {dtype}; supported: {', '.join(DTYPES)}.",
                                  fix="cast it, or write the input spec by hand.")
        inputs.append(TensorSpec(name=name, dtype=dtype, shape=["batch", *list(tensor.shape[1:])]))
    return ModuleInputSpec(inputs=inputs, task=task)


def module_dir_from_object(module: Any, example_inputs: Any, *, factory: str | None = None,
                           inputs: Any = None, task: str = "tensor") -> ModelDir:
    """An in-memory nn.Module as a torch-module directory. The baseline rebuilds it in a fresh process, so it
    needs an importable factory: `factory`, else the module's class when it builds with no arguments."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    cls = type(module)
    reference = factory or f"{cls.__module__}:{cls.__qualname__}"
    if factory is None and (cls.__module__ == "__main__" or "<locals>" in cls.__qualname__):
        raise CheckpointError(f"{cls.__qualname__} is defined in a script or a function, so a benchmark worker "
                              "cannot import it to rebuild your module.",
                              fix="move the class into an importable module, or pass factory='pkg.module:callable'.")
    spec = load_input_spec(inputs) if inputs is not None else spec_from_example(module, example_inputs, task)
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    scratch = cache_root() / "torch-modules" / "weights"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".safetensors", dir=scratch, delete=False) as handle:
        temporary = Path(handle.name)
    save_file(state, str(temporary))
    final = scratch / f"{sha256_file(temporary)}.safetensors"
    temporary.replace(final)
    return module_dir_for(reference, final, spec)
