"""Export a plain PyTorch module (a torch-module directory) to ONNX, then prove parity with the module itself.

torch.onnx's dynamo exporter is tried first where it is installed and works (it needs onnxscript);
the TorchScript exporter is the fallback. Every input axis named in the input spec is dynamic in the
graph. Parity runs the user's module and ONNX Runtime on the same seeded inputs (PARITY_EXAMPLES of them, in
batches of several sizes) and fails the export outside the tolerance, as for Hugging Face models.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import ExportError
from slimline.exporters.parity import PARITY_EXAMPLES
from slimline.formats.inputs import synthetic_feeds
from slimline.formats.torch_module import load_module
from slimline.profiles.schema import Shape

log = logging.getLogger(__name__)
ONNX_MODEL_FILE = "model.onnx"


def _dynamic_axes(specs: list[TensorSpec], outputs: list[str]) -> dict[str, dict[int, str]]:
    axes = {s.name: {i: str(a) for i, a in enumerate(s.shape) if isinstance(a, str)} for s in specs}
    batch_dynamic = any(0 in a for a in axes.values())
    return {**axes, **{name: {0: "batch"} for name in outputs if batch_dynamic}}


def _export(module: Any, args: tuple, path: Path, specs: list[TensorSpec], outputs: list[str], opset: int,
            dynamo: bool) -> None:
    import torch

    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=[s.name for s in specs], output_names=outputs,
                          dynamic_axes=_dynamic_axes(specs, outputs), opset_version=opset, dynamo=dynamo,
                          **({"external_data": False} if dynamo else {}))


def _first(output: Any) -> Any:
    if isinstance(output, (tuple, list)):
        return _first(output[0])
    if isinstance(output, dict):
        return _first(next(iter(output.values())))
    return getattr(output, "logits", output)


def _parity_batches() -> Iterator[tuple[int, int]]:
    """(batch size, seed): odd sizes first (a batch axis traced as fixed shows up there), then full batches."""
    yield 3, 1
    yield 1, 2
    seed = 3
    while True:
        yield 16, seed
        seed += 1


def module_parity(module: Any, onnx_path: Path, specs: list[TensorSpec], atol: float,
                  min_agreement: float) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst, agree, total, examples = 0.0, 0, 0, 0
    for batch, seed in _parity_batches():
        if examples >= PARITY_EXAMPLES:
            break
        feeds = synthetic_feeds(specs, Shape(batch_size=batch, sequence_length=24), {}, seed=seed)
        examples += int(next(iter(feeds.values())).shape[0]) if feeds else 1
        with torch.no_grad():
            expected = _first(module(*[torch.from_numpy(feeds[s.name]) for s in specs])).float().numpy()
        actual = session.run(None, feeds)[0]
        if actual.shape != expected.shape:
            raise ExportError(f"the ONNX graph's output shape {actual.shape} differs from the module's "
                              f"{expected.shape} at batch {batch}.",
                              fix="an axis the module treats as fixed is named dynamic in the input spec (or the "
                                  "reverse); fix the spec's shapes.")
        worst = max(worst, float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0)
        if expected.ndim >= 2:
            agree += int((actual.argmax(-1) == expected.argmax(-1)).sum())
            total += int(np.prod(expected.shape[:-1]))
    agreement = agree / total if total else 1.0
    result = {"max_abs_diff": worst, "argmax_agreement": agreement, "atol": atol, "min_agreement": min_agreement,
              "compared_predictions": total, "examples": examples, "examples_from": f"{examples} synthetic inputs"}
    if worst > atol or agreement < min_agreement:
        raise ExportError(f"ONNX export does not match the PyTorch module: max |diff| = {worst:.3g} (tolerance "
                          f"{atol:g}), argmax agreement = {agreement:.3f} (required {min_agreement:g}).",
                          fix="try another opset or exporter: torch; if the difference is expected, raise "
                              "parity_atol in the export config.")
    return result


def export_torch_module(model: ModelDir, out_dir: Path, exporter: str, opset: int, atol: float,
                        min_agreement: float) -> tuple[str, list[TensorSpec], list[str], dict[str, Any]]:
    """Returns (model file, inputs, outputs, metadata) for the stage's manifest."""
    import torch

    if exporter == "optimum":
        raise ExportError(f"{model.path} is a plain PyTorch module; optimum exports only transformers models.",
                          fix="use exporter: auto or torch.")
    module = load_module(model)
    specs, outputs = model.manifest.inputs, model.manifest.outputs or ["output"]
    feeds = synthetic_feeds(specs, Shape(batch_size=2, sequence_length=16), {}, seed=0)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in specs)
    path = out_dir / ONNX_MODEL_FILE
    scripted = bool(model.manifest.metadata.get("torchscript"))  # a ScriptModule: only the TorchScript exporter
    attempts = [("dynamo", True), ("torchscript", False)] if exporter == "auto" and not scripted \
        else [("torchscript", False)]
    failures, used = [], None
    for name, dynamo in attempts:
        try:
            _export(module, args, path, specs, outputs, opset, dynamo)
            used = name
            break
        except Exception as err:  # the exporters raise many types; the next one is tried
            failures.append(f"{name}: {type(err).__name__}: {str(err)[:300]}")
            log.warning("torch.onnx %s export failed: %s", name, err)
            for leftover in out_dir.iterdir():
                if leftover.is_file():
                    leftover.unlink()
    if used is None:
        raise ExportError(f"ONNX export of the module {model.manifest.metadata.get('factory')} failed:\n  "
                          + "\n  ".join(failures),
                          fix="an op torch.onnx cannot express is the usual cause: replace it in the module, or "
                              "try another opset.")
    parity = module_parity(module, path, specs, atol, min_agreement)
    metadata = {"exporter": f"torch.onnx ({used})", "exporter_failures": failures, "opset": opset, "parity": parity,
                "onnx_size_mb": round(path.stat().st_size / 1e6, 3)}
    return ONNX_MODEL_FILE, specs, outputs, metadata
