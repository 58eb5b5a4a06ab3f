"""A plain PyTorch model as a run's source: a torch-module directory (cached), and eval inputs from a callable."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from slimline.benchmarking.evaluators.base import EvalSource
from slimline.core.artifact import ModelDir, atomic_write_bytes
from slimline.core.errors import CheckpointError, DataError
from slimline.core.paths import cache_root
from slimline.formats.model_files import model_file_checkpoint
from slimline.formats.torch_module import load_input_spec, module_dir_for, module_dir_from_object


def module_checkpoint(model: Any, example_inputs: Any, factory: str | None, weights: Any, inputs: Any,
                      task: str | None) -> ModelDir:
    """The torch-module directory for an in-memory module or a factory + weights + input spec."""
    if model is not None:
        if example_inputs is None and inputs is None:
            raise CheckpointError("a model (nn.Module) needs example_inputs or an input spec to be exported.",
                                  fix="pass example_inputs=(tensor, ...) or a dict {name: tensor}.")
        return module_dir_from_object(model, example_inputs, factory=factory, inputs=inputs, task=task or "tensor")
    if weights is None or inputs is None:
        raise CheckpointError("--model-factory needs --weights (a state dict) and --inputs (the input spec YAML).",
                              fix="e.g. --model-factory pkg.nets:build --weights net.safetensors --inputs inputs.yaml")
    spec = load_input_spec(inputs)
    if task:
        spec = spec.model_copy(update={"task": task})
    return module_dir_for(factory or "", Path(weights), spec)


def file_checkpoint(checkpoint: Any, inputs: Any, task: str | None) -> ModelDir | None:
    """The model directory of an ONNX file (or a directory holding one) or a TorchScript archive, with `inputs`
    (an input spec: YAML path, dict or ModuleInputSpec) renaming the graph's axes or, for TorchScript, giving the
    dtypes and shapes; None for any other checkpoint, which must then come without `inputs`."""
    spec = load_input_spec(inputs) if inputs is not None else None
    model = model_file_checkpoint(Path(checkpoint), spec, task)
    if model is None and spec is not None:
        raise CheckpointError(f"--inputs was given, but {checkpoint} is neither an ONNX file nor a TorchScript "
                              "archive; a Hugging Face checkpoint declares its own inputs.",
                              fix="drop --inputs, or use it with --model-factory, a .onnx file or a TorchScript file.")
    return model


def eval_from_callable(function: Any, split: str = "test") -> EvalSource:
    """Call a user's function for eval inputs and keep them as an .npz, split like any other eval data: the
    verdict on `split` (test), calibration on the train split, the fallback on validation (never overlapping)."""
    produced = function()
    parts = produced if isinstance(produced, (list, tuple)) else [produced]
    if not parts or not all(isinstance(p, dict) and p for p in parts):
        raise DataError(f"the eval callable returned {type(produced).__name__}.",
                        fix="return a dict {input_name: array} or a list of such dicts.")
    arrays = {name: np.concatenate([np.asarray(getattr(p[name], "numpy", lambda v=p[name]: v)()) for p in parts])
              for name in parts[0]}
    return eval_npz(arrays, split)


def eval_npz(arrays: dict[str, np.ndarray], split: str = "test", evaluator: str | None = None) -> EvalSource:
    """Arrays kept as a content-addressed .npz under the cache: what a callable's data become, from the Python
    API (a function) and the CLI (`pkg.module:function`) alike, so both split them the same way."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    path = cache_root() / "eval-inputs" / f"{hashlib.sha256(data).hexdigest()[:16]}.npz"
    atomic_write_bytes(path, data)
    return EvalSource(source=str(path), split=split, evaluator=evaluator)  # type: ignore[arg-type]


def materialised(source: EvalSource) -> EvalSource:
    """`pkg.module:function` eval data (the CLI's) -> the same .npz the Python API makes of a callable."""
    if source.kind() != "callable":
        return source
    from slimline.benchmarking.evaluators.agreement import call_user_inputs

    return eval_npz(call_user_inputs(source.source), source.split, source.evaluator)
