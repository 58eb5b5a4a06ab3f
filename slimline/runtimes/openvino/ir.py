"""OpenVINO IR on disk: reading an ONNX stage or an IR, saving an IR, and the runtime options it carries.

An IR stage is `model.xml` (the graph) + `model.bin` (the weights), the files Triton's openvino backend
looks for. Shared by the IR exporter (slimline.exporters.openvino) and the OpenVINO passes (NNCF INT8, weight
compression, the inference precision), which all read the ONNX stage or an IR and write an IR.

Settings that belong to the compiled model rather than the graph (the inference precision chosen by
convert.openvino-precision) are kept in the IR's rt_info under `runtime_options` (where optimum-intel keeps
KV-cache precision); slimline's OpenVINOSession applies them when it compiles the IR (the runner, `verify`,
`serve`), because OpenVINO 2026.4 does not apply that precision by itself. The manifest's metadata records
them as well.

A decoder LLM with a KV cache is saved stateful (slimline.runtimes.openvino.stateful): every IR slimline writes
for one keeps its cache inside the infer request, and its manifest lists the inputs without the past.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.deps import require
from slimline.core.errors import PassError
from slimline.formats.causal_lm import is_past_input

IR_XML, IR_BIN = "model.xml", "model.bin"
#: Model formats an OpenVINO step reads: the ONNX stage (standard ops only) or an IR.
READS = frozenset({"onnx", "openvino"})
#: Files of the model itself (never copied as side files into the next stage).
MODEL_SUFFIXES = (".onnx", ".onnx_data", ".data", ".xml", ".bin")
RUNTIME_OPTIONS = "runtime_options"


def openvino(purpose: str) -> Any:
    return require("openvino", purpose=purpose)


def read_model(model: ModelDir, purpose: str) -> Any:
    """The model's graph as an ov.Model: an IR as it is, an ONNX stage converted (ORT's contrib ops cannot be:
    the error says which step to drop)."""
    ov = openvino(purpose)
    try:
        if model.manifest.format == "openvino":
            return ov.Core().read_model(str(model.model_path))
        return ov.convert_model(str(model.model_path))
    except Exception as err:  # OpenVINO raises its own (OpConversionFailure, GeneralFailure, RuntimeError)
        raise PassError(f"{purpose}: OpenVINO cannot read {model.model_path}: {str(err).splitlines()[0][:400]}",
                        fix="OpenVINO reads standard ONNX only: drop ONNX Runtime-only steps before it "
                            "(optimize.ort-transformers, quantize.ort-int8-dynamic, quantize.ort-int4-weight-only)."
                        ) from err


def runtime_options_of(ov_model: Any) -> dict[str, str]:
    """The compile-time options stored in the IR's rt_info (e.g. INFERENCE_PRECISION_HINT)."""
    if not ov_model.has_rt_info([RUNTIME_OPTIONS]):
        return {}
    info = ov_model.get_rt_info()[RUNTIME_OPTIONS]
    value = info.astype(dict) if hasattr(info, "astype") else info
    return {str(k): str(v.astype(str) if hasattr(v, "astype") else v) for k, v in dict(value).items()}


def save_ir(ov_model: Any, source: ModelDir, out_dir: Path, compress_to_fp16: bool) -> dict[str, Any]:
    """model.xml + model.bin into out_dir, the source's tokenizer and config beside them; returns facts.
    A KV-cache decoder is made stateful first (the facts say so, and how many attention blocks were fused)."""
    from slimline.runtimes.openvino.stateful import is_stateful, make_stateful

    ov = openvino("saving an OpenVINO IR")
    made = make_stateful(ov_model)
    ov.save_model(ov_model, str(out_dir / IR_XML), compress_to_fp16=compress_to_fp16)
    copy_side_files(source.path, out_dir)
    facts = {"ir_size_mb": round(((out_dir / IR_XML).stat().st_size + (out_dir / IR_BIN).stat().st_size) / 1e6, 3),
             "compress_to_fp16": compress_to_fp16, "openvino_version": ov.__version__,
             "stateful": is_stateful(ov_model)}
    return {**facts, **(made or {})}


def ir_interface(source: ModelDir, facts: dict[str, Any]) -> tuple[list[TensorSpec], list[str]]:
    """The manifest's inputs and outputs for an IR saved from `source` with `facts`: a stateful decoder's past
    is no input and its present no output any more (its beam_idx is filled by slimline's session, not listed)."""
    inputs, outputs = list(source.manifest.inputs), list(source.manifest.outputs)
    if not facts.get("stateful"):
        return inputs, outputs
    return ([spec for spec in inputs if not is_past_input(spec.name)],
            [name for name in outputs if not name.startswith("present.")])


def copy_side_files(source: Path, out_dir: Path) -> None:
    """Tokenizer and config files travel with every stage; the previous stage's model files do not."""
    for path in source.iterdir():
        if path.is_file() and path.name != "manifest.json" and not path.name.endswith(MODEL_SUFFIXES):
            shutil.copy2(path, out_dir / path.name)


def set_runtime_option(ov_model: Any, key: str, value: str) -> None:
    ov_model.set_rt_info(value, [RUNTIME_OPTIONS, key])
