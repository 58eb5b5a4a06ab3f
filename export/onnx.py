"""Export a Hugging Face model directory to ONNX with dynamic batch/sequence axes, then prove parity.

Optimum's exporter is used where it supports the architecture (it knows each model's inputs,
dynamic axes and output names); torch.onnx (TorchScript-based) is the fallback. Either way the
result is checked against PyTorch on the same inputs: a parity failure is an ExportError naming
the tolerance and the measured values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimline.core.artifact import ModelDir, TensorSpec, full_disk_cause
from slimline.core.deps import require
from slimline.core.errors import ExportError
from slimline.exporters.failures import export_failure
from slimline.exporters.parity import check_parity
from slimline.formats.hf import load_hf_model

log = logging.getLogger(__name__)
ONNX_MODEL_FILE = "model.onnx"
OPTIMUM_TASKS = {
    "text-classification": "text-classification",
    # With the KV cache (past_key_values in, present out): the graph serves both the prefill (empty past)
    # and every decode step; without it each generated token would recompute the whole sequence.
    "text-generation": "text-generation-with-past",
    "image-classification": "image-classification",
    "feature-extraction": "feature-extraction",  # last_hidden_state (batch, sequence, hidden): pooled by its users
}
#: The first output's name and dynamic axes when torch.onnx exports (optimum names its own).
TORCH_OUTPUTS = {"text-generation": ("logits", {0: "batch", 1: "sequence"}),
                 "feature-extraction": ("last_hidden_state", {0: "batch", 1: "sequence"})}
#: Tasks whose export keeps optimum's post-processing: it merges the duplicated initializers of tied weights
#: (a tied input embedding / LM head would otherwise be stored twice: +114 MB on a 135M-parameter Llama).
POST_PROCESSED_TASKS = frozenset({"text-generation"})
#: Files that make an exported directory self-contained for serving (tokenizer, preprocessing, config).
SIDE_FILE_PATTERNS = ("config.json", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json",
                      "preprocessor_config.json", "generation_config.json", "*.model", "added_tokens.json")


class OnnxExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    exporter: Literal["auto", "optimum", "torch"] = "auto"
    opset: int = Field(default=18, ge=14, le=21)
    parity_atol: float = Field(default=1e-3, gt=0, description="max |onnx - torch| allowed on the outputs")
    parity_min_agreement: float = Field(default=0.99, ge=0, le=1, description="argmax agreement required")


@dataclass
class ExportResult:
    model_file: str
    inputs: list[TensorSpec]
    outputs: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)


def _export_with_optimum(source: Path, out_dir: Path, task: str, opset: int) -> None:
    exporters = require("optimum.exporters.onnx", purpose="ONNX export through optimum")
    exporters.main_export(str(source), output=str(out_dir), task=OPTIMUM_TASKS[task], opset=opset,
                          no_post_process=task not in POST_PROCESSED_TASKS, do_validation=False, device="cpu",
                          local_files_only=True)


def _export_with_torch(source: Path, out_dir: Path, task: str, opset: int) -> None:
    import torch

    from slimline.formats.inputs import default_input_specs, synthetic_feeds
    from slimline.profiles.schema import Shape

    model = load_hf_model(source, task)
    config = json.loads((source / "config.json").read_text())
    specs = default_input_specs(task)
    axes = {s.name: {i: axis for i, axis in enumerate(s.shape) if isinstance(axis, str)} for s in specs}
    feeds = synthetic_feeds(specs, Shape(batch_size=2, sequence_length=16), config)
    args = tuple(torch.from_numpy(feeds[spec.name]) for spec in specs)
    output_name, output_axes = TORCH_OUTPUTS.get(task, ("logits", {0: "batch"}))
    with torch.inference_mode():
        torch.onnx.export(model, args, str(out_dir / ONNX_MODEL_FILE), input_names=[s.name for s in specs],
                          output_names=[output_name], dynamic_axes={**axes, output_name: output_axes},
                          opset_version=opset, dynamo=False)


def _graph_io(path: Path) -> tuple[list[TensorSpec], list[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    type_names = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
                  onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}
    inputs = []
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        dims: list[int | str] = [d.dim_param or d.dim_value for d in tensor_type.shape.dim]
        inputs.append(TensorSpec(name=value.name, dtype=type_names.get(tensor_type.elem_type, "float32"), shape=dims))
    return inputs, [value.name for value in model.graph.output]


def _copy_side_files(source: Path, out_dir: Path) -> None:
    import shutil

    for pattern in SIDE_FILE_PATTERNS:
        for path in source.glob(pattern):
            if path.is_file() and not (out_dir / path.name).exists():
                shutil.copy2(path, out_dir / path.name)


def export_onnx(model: ModelDir, out_dir: Path, config: OnnxExportConfig) -> ExportResult:
    """Export `model` (format hf or torch-module) into `out_dir`; raise ExportError when export or parity fails."""
    if model.manifest.format == "torch-module":  # a plain nn.Module: torch.onnx and parity with the module
        from slimline.exporters.torch_module import export_torch_module

        file, inputs, outputs, metadata = export_torch_module(model, out_dir, config.exporter, config.opset,
                                                              config.parity_atol, config.parity_min_agreement)
        return ExportResult(model_file=file, inputs=inputs, outputs=outputs, metadata=metadata)
    if model.manifest.format != "hf":
        raise ExportError(f"ONNX export takes a Hugging Face model directory, got format {model.manifest.format}.",
                          fix="put ONNX-level passes after the export step, torch-level passes before it.")
    task = model.manifest.task
    attempts = ["optimum", "torch"] if config.exporter == "auto" else [config.exporter]
    failures: list[str] = []
    errors: list[tuple[str, BaseException]] = []
    used = None
    for exporter in attempts:
        try:
            exporter_fn = _export_with_optimum if exporter == "optimum" else _export_with_torch
            exporter_fn(model.path, out_dir, task, config.opset)
            used = exporter
            break
        except ExportError:
            raise
        except Exception as err:  # exporters raise many types (ValueError, KeyError, torch errors)
            if full_disk_cause(err) is not None:
                raise  # the next exporter would only fill the same disk: atomic_directory names it (exit 2)
            failures.append(f"{exporter}: {type(err).__name__}: {err}")
            errors.append((exporter, err))
            log.warning("ONNX export with %s failed: %s", exporter, err)
            for leftover in out_dir.iterdir():
                leftover.unlink() if leftover.is_file() else None
    if used is None:  # each cause its own message and fix (an unknown architecture is not an opset problem)
        raise export_failure(model.path, task, config.opset, errors)
    model_path = out_dir / ONNX_MODEL_FILE
    inputs, outputs = _graph_io(model_path)
    _copy_side_files(model.path, out_dir)
    parity = check_parity(model.path, task, model_path, inputs, config.parity_atol, config.parity_min_agreement)
    metadata = {"exporter": used, "exporter_failures": failures, "opset": config.opset,
                "parity": parity, "onnx_size_mb": round(model_path.stat().st_size / 1e6, 3)}
    if task == "text-generation":
        metadata["kv_cache"] = any(spec.name.startswith("past_key_values.") for spec in inputs)
        metadata["tied_embeddings"] = _tied_embedding_check(model.path, model_path)
    return ExportResult(model_file=ONNX_MODEL_FILE, inputs=inputs, outputs=outputs, metadata=metadata)


def _tied_embedding_check(source: Path, model_path: Path) -> dict[str, Any]:
    """How many vocab x hidden matrices the ONNX file stores: one when a tied embedding stayed tied."""
    import onnx

    config = json.loads((source / "config.json").read_text())
    tied = bool(config.get("tie_word_embeddings", True))
    vocab, hidden = config.get("vocab_size"), config.get("hidden_size") or config.get("n_embd")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    copies = sum(1 for init in graph.initializer if sorted(init.dims) == sorted([vocab, hidden]))
    kept = not tied or copies <= 1
    if not kept:
        log.warning("the ONNX export stores the tied embedding %d times (%s x %s)", copies, vocab, hidden)
    return {"tie_word_embeddings": tied, "embedding_matrices": copies, "kept_tied": kept}
