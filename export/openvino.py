"""ONNX stage -> OpenVINO IR (`openvino.convert_model` + `save_model`): the engine of an openvino run.

The IR is built from the last ONNX stage, after any ONNX-level passes (which must emit standard ONNX:
OpenVINO has no kernels for ONNX Runtime's contrib ops). optimum-intel is not used: its releases pin a
transformers range that the core pins do not meet, and the ONNX stage is already there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from slimline.core.artifact import ModelDir
from slimline.core.errors import ExportError, PassError
from slimline.exporters.onnx import ExportResult
from slimline.profiles.schema import Shape, Target
from slimline.runtimes.openvino.ir import IR_XML, ir_interface, read_model, runtime_options_of, save_ir

OPENVINO_EXPORT_STEP = "export.openvino"


class OpenVINOExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: OpenVINO's own default: weights stored in fp16 (half the size), computed in the inference precision.
    compress_to_fp16: bool = True


def export_openvino(model: ModelDir, out_dir: Path, config: OpenVINOExportConfig) -> ExportResult:
    """Convert `model` (an ONNX stage) into out_dir/model.xml + model.bin."""
    if model.manifest.format != "onnx":
        raise ExportError(f"the OpenVINO export takes an ONNX model directory, got format {model.manifest.format}.",
                          fix="export to ONNX first (the pipeline does this for runtime openvino).")
    try:
        ov_model = read_model(model, OPENVINO_EXPORT_STEP)
    except PassError as err:
        raise ExportError(str(err).removesuffix(f"\n  fix: {err.fix}"), fix=err.fix) from err
    facts = save_ir(ov_model, model, out_dir, config.compress_to_fp16)  # stateful, for a KV-cache decoder
    inputs, outputs = ir_interface(model, facts)
    return ExportResult(model_file=IR_XML, inputs=inputs, outputs=outputs,
                        metadata={"openvino": {**facts, "runtime_options": runtime_options_of(ov_model)}})


class OpenVINOEngineExporter:
    step = OPENVINO_EXPORT_STEP

    def config(self, target: Target, override: BaseModel | None = None) -> OpenVINOExportConfig:
        return override if isinstance(override, OpenVINOExportConfig) else OpenVINOExportConfig()

    def context_key(self, target: Target, shapes: list[Shape]) -> dict[str, Any]:
        import importlib.metadata

        return {"openvino": importlib.metadata.version("openvino")}

    def build(self, model: ModelDir, out_dir: Path, config: BaseModel, shapes: list[Shape]) -> ExportResult:
        return export_openvino(model, out_dir, OpenVINOExportConfig.model_validate(config.model_dump()))


ENGINE_EXPORTER = OpenVINOEngineExporter()
