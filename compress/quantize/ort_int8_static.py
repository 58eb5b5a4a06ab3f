"""ONNX Runtime static INT8 quantization: weights and activations, ranges from a calibration set.

QDQ (QuantizeLinear/DequantizeLinear pairs that ORT fuses at load) or QOperator (QLinear* ops),
per-tensor or per-channel weights, and MinMax / Entropy / Percentile calibration. On CPUs without
int8 dot-product instructions (VNNI) static INT8 is often slower than dynamic INT8, and the pre-flight
check says so; on ORT's CUDA EP there are no INT8 kernels at all (onnxruntime #12229).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from slimline.compress.base import (
    ModelInfo,
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    Problem,
    copy_side_files,
    register,
)
from slimline.compress.calibration import CalibrationSpec, TextCalibrationReader, check_calibration_set
from slimline.compress.quantize.fallback import FallbackConfig, quantize_with_fallback
from slimline.compress.quantize.ort_common import float_model_for_quantization
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import BadInputError, PassError
from slimline.core.machine import has_vnni
from slimline.profiles.schema import Target

STATIC_MODEL_FILE = "model.onnx"
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class Int8StaticConfig(PassConfig):
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: Literal["quint8", "qint8"] = Field(default="quint8", description="U8S8 is ORT's CPU default")
    weight_type: Literal["qint8", "quint8"] = "qint8"
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=90, le=100)
    op_types: list[str] = Field(default_factory=lambda: ["MatMul", "Gemm"])
    exclude_nodes: list[str] = Field(default_factory=list)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    preprocess: bool = True
    fallback: FallbackConfig = Field(default_factory=FallbackConfig, description="accuracy-aware node exclusion")


def _quant_type(quantization, name: str):
    return getattr(quantization.QuantType, {"qint8": "QInt8", "quint8": "QUInt8"}[name])


@register("quantize.ort-int8-static")
class OrtInt8Static(Pass[Int8StaticConfig]):
    Config = Int8StaticConfig
    stage = "onnx"
    accepts = frozenset({"onnx"})
    produces = "onnx"
    needs = frozenset({"calibration_data"})

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        config = self.config
        problems = super().check(model, target)
        if target.device == "cuda" and target.runtime == "onnxruntime":
            problems.append(self.error("ONNX Runtime's CUDA EP has no INT8 kernels (onnxruntime #12229): the "
                                       "model would run slower than fp32; use fp16 or a TensorRT target"))
        if target.device == "cpu" and not has_vnni():
            problems.append(self.warning("this CPU has no VNNI (int8 dot product): static INT8 is usually slower "
                                         "than quantize.ort-int8-dynamic here; measure both"))
        if model.task == "image-classification":
            problems.append(self.error("calibration from text datasets only; image calibration is not supported"))
            return problems
        try:
            check_calibration_set(config.calibration)
        except BadInputError as err:
            problems.append(self.error(str(err)))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        quantization = require("onnxruntime.quantization", purpose=self.name)
        config = self.config
        input_names = {spec.name for spec in model.manifest.inputs}
        reader = TextCalibrationReader(config.calibration, model.path, input_names)
        source = model.model_path
        with float_model_for_quantization(source, config.preprocess, self.name) as float_model:
            # Ranges are computed once and cached: fallback candidates differ only in excluded nodes.
            calibration_cache = float_model.scratch / "calibration-ranges.json"

            quant_format = getattr(quantization.QuantFormat, "QDQ" if config.format == "qdq" else "QOperator")

            def quantize(excluded: list[str], out_path: Path) -> None:
                reader.rewind()
                try:
                    quantization.quantize_static(
                        model_input=str(float_model.path), model_output=str(out_path),
                        calibration_data_reader=reader,
                        quant_format=quant_format,
                        op_types_to_quantize=config.op_types, per_channel=config.per_channel,
                        reduce_range=config.reduce_range,
                        activation_type=_quant_type(quantization, config.activation_type),
                        weight_type=_quant_type(quantization, config.weight_type), nodes_to_exclude=excluded,
                        calibrate_method=getattr(quantization.CalibrationMethod,
                                                 CALIBRATION_METHODS[config.calibration_method]),
                        use_external_data_format=float_model.large, calibration_cache_path=str(calibration_cache),
                        extra_options={"CalibPercentile": config.percentile, "CalibTensorRangeSymmetric": False},
                    )
                except Exception as err:
                    raise PassError(f"{self.name}: quantize_static failed on {source}: {err}.",
                                    fix="exclude the failing node (exclude_nodes) or try another format.") from err

            fallback = quantize_with_fallback(quantize, float_model.path, out_dir / STATIC_MODEL_FILE, model.path,
                                              input_names, config.op_types, config.exclude_nodes, context,
                                              config.fallback)
        copy_side_files(model.path, out_dir, skip={source.name, STATIC_MODEL_FILE})
        return PassResult(
            model_file=STATIC_MODEL_FILE,
            metadata={"quantization": {"scheme": "static-int8",
                                       **config.model_dump(mode="json", exclude={"calibration", "fallback"}),
                                       "calibration": {**config.calibration.model_dump(), "examples": reader.count},
                                       **float_model.notes},
                      "accuracy_fallback": fallback},
            data_sha256={"calibration": reader.sha256},
        )
