"""ONNX Runtime static INT8 quantization: weights and activations, ranges from a calibration set.

QDQ (QuantizeLinear/DequantizeLinear pairs that ORT fuses at load) or QOperator (QLinear* ops),
per-tensor or per-channel weights, and MinMax / Entropy / Percentile calibration. On CPUs without
int8 dot-product instructions (VNNI) static INT8 is often slower than dynamic INT8, and the pre-flight
check says so; on ORT's CUDA EP there are no INT8 kernels at all (onnxruntime #12229).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field

from slimline.compression.base import (
    ModelInfo,
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    Problem,
    copy_side_files,
    register,
)
from slimline.compression.calibration import (
    EVAL_DATA_SOURCE,
    ArrayCalibrationReader,
    CalibrationSpec,
    ExamplesReader,
    TextCalibrationReader,
    check_calibration_set,
    is_array_source,
    stride_for,
)
from slimline.compression.quantize.effect import check_quantization_effect
from slimline.compression.quantize.fallback import (
    FallbackConfig,
    Quantize,
    Settings,
    VariantSpace,
    chosen_overrides,
    quantizable_nodes,
    quantize_with_fallback,
)
from slimline.compression.quantize.ort_common import float_model_for_quantization, weight_op_coverage
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import BadInputError, PassError
from slimline.core.machine import has_vnni
from slimline.core.progress import reporter
from slimline.profiles.schema import Target
from slimline.runtimes import get_runtime

STATIC_MODEL_FILE = "model.onnx"
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class Int8StaticConfig(PassConfig):
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: Literal["quint8", "qint8"] = Field(default="quint8", description="U8S8 is ORT's CPU default")
    activation_symmetric: bool = Field(default=False, description="activation ranges symmetric around 0")
    exclude_first_last: bool = Field(default=False, description="keep the first and last quantizable nodes in float")
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


HISTOGRAM_METHODS = frozenset({"entropy", "percentile"})


def static_space(config: Int8StaticConfig, make: Callable[[Settings], Quantize]) -> VariantSpace:
    """The settings that keep every node in INT8, tried by the fallback before float nodes: per-channel weights,
    each other calibration method, symmetric activations, then the first and last layers in float."""
    configured: Settings = {"per_channel": config.per_channel, "calibration_method": config.calibration_method,
                            "activation_symmetric": config.activation_symmetric,
                            "exclude_first_last": config.exclude_first_last}
    methods = [m for m in ("percentile", "entropy", "minmax") if m != config.calibration_method]
    return VariantSpace(configured, [("per_channel", [not config.per_channel]), ("calibration_method", methods),
                                     ("activation_symmetric", [not config.activation_symmetric]),
                                     ("exclude_first_last", [not config.exclude_first_last])], make)


@register("quantize.ort-int8-static")
class OrtInt8Static(Pass[Int8StaticConfig]):
    Config = Int8StaticConfig
    stage = "onnx"
    accepts = frozenset({"onnx"})
    produces = "onnx"
    skip_consequence = "continuing unquantized"
    needs = frozenset({"calibration_data"})

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        config = self.config
        problems = super().check(model, target)
        runtime = get_runtime(target.runtime)
        if runtime.runs_onnx_contrib_ops and target.device not in runtime.onnx_int8_devices:
            problems.append(self.error("ONNX Runtime's CUDA EP has no INT8 kernels (onnxruntime #12229): the "
                                       "model would run slower than fp32",
                                       fix="use convert.fp16 or a TensorRT profile for GPUs; keep INT8 for CPU "
                                           "profiles"))
        if target.device == "cpu" and not has_vnni():
            problems.append(self.warning("this CPU has no VNNI (int8 dot product): static INT8 is usually slower "
                                         "than quantize.ort-int8-dynamic here; measure both"))
        if model.task == "text-generation":  # before the data: no calibration set would make it apply
            problems.append(self.error("calibrates one forward pass of a classifier-style graph; a causal LM exports "
                                       "with its KV cache (past_key_values inputs, which text calibration does not "
                                       "feed), and static activation ranges clip an LLM's activation outliers",
                                       fix="for a causal LM use 8-bit weight-only blocks (recipe llm-int8-weight-only, "
                                           "the llm-cpu profile's) or dynamic INT8 per channel "
                                           "(llm-int8-per-channel)"))
            return problems
        if config.calibration.source == EVAL_DATA_SOURCE:
            return problems  # the run's --eval-data (its train split): checked with the eval data
        if model.task == "image-classification" and not is_array_source(config.calibration.source):
            problems.append(self.error(f"calibrates an image model on text ({config.calibration.source}); it "
                                       "needs images (an image folder or an .npz)",
                                       fix="set calibration.source to an image folder (root/<class>/<image>), an "
                                           ".npz, or eval-data (the run's --eval-data, train split)"))
            return problems
        if is_array_source(config.calibration.source):  # images / arrays: read (and counted) in apply
            if not Path(config.calibration.source).expanduser().exists():
                problems.append(self.error(f"calibration source {config.calibration.source} does not exist",
                                           fix="point calibration.source at an existing image folder or .npz file"))
            return problems
        try:
            check_calibration_set(config.calibration)
        except BadInputError as err:
            problems.append(self.refusal(err))
        except ValueError:  # neither a text dataset nor an existing image folder / .npz (e.g. a missing folder)
            problems.append(self.error(f"calibration source {config.calibration.source!r} is not a text dataset, "
                                       "an existing image folder or an .npz",
                                       fix="point calibration.source at rotten-tomatoes, a .csv/.jsonl file, an "
                                           "image folder (root/<class>/<image>), an .npz, or eval-data"))
        return problems

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        quantization = require("onnxruntime.quantization", purpose=self.name)
        config = self.config
        input_names = {spec.name for spec in model.manifest.inputs}
        calibration = config.calibration.resolved(context.tuning_data)
        reader: TextCalibrationReader | ArrayCalibrationReader
        with reporter().step(f"calibration: reading {calibration.source} / {calibration.split}") as _:
            if is_array_source(calibration.source):
                reader = ArrayCalibrationReader(calibration, model, input_names)
            else:
                reader = TextCalibrationReader(calibration, model.path, input_names)
        with reporter().step(f"calibration: {reader.count} examples of {calibration.source} / {calibration.split} "
                             f"(seed {calibration.seed}, sha256 {reader.sha256[:12]})"):
            pass
        source = model.model_path
        with float_model_for_quantization(source, config.preprocess, self.name) as float_model:
            coverage = weight_op_coverage(float_model.path, config.op_types)
            quant_format = getattr(quantization.QuantFormat, "QDQ" if config.format == "qdq" else "QOperator")

            padded = reader.padded()
            nodes = quantizable_nodes(float_model.path, config.op_types)
            ends = [nodes[0], nodes[-1]] if len(nodes) > 1 else nodes

            def make(settings: Settings) -> Quantize:
                method = str(settings["calibration_method"])
                # Ranges are computed once per method and cached: candidates differ in nodes and options only.
                calibration_cache = float_model.scratch / f"calibration-ranges-{method}.json"
                examples: ExamplesReader = padded if method in HISTOGRAM_METHODS else reader

                def quantize(excluded: list[str], out_path: Path) -> None:
                    examples.rewind()
                    skip = [*excluded, *(n for n in ends if n not in excluded)] if settings["exclude_first_last"] \
                        else excluded
                    try:
                        quantization.quantize_static(
                            model_input=str(float_model.path), model_output=str(out_path),
                            calibration_data_reader=examples, quant_format=quant_format,
                            op_types_to_quantize=config.op_types, per_channel=bool(settings["per_channel"]),
                            reduce_range=config.reduce_range,
                            activation_type=_quant_type(quantization, config.activation_type),
                            weight_type=_quant_type(quantization, config.weight_type), nodes_to_exclude=skip,
                            calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[method]),
                            use_external_data_format=float_model.large,
                            calibration_cache_path=str(calibration_cache),
                            extra_options={"CalibPercentile": config.percentile, "CalibTensorRangeSymmetric": False,
                                           "ActivationSymmetric": bool(settings["activation_symmetric"]),
                                           "CalibStridedMinMax": stride_for(len(examples))},
                        )
                    except Exception as err:
                        raise PassError(f"{self.name}: quantize_static failed on {source}: {err}.",
                                        fix="exclude the failing node (exclude_nodes) or try another format.") from err
                quantize.float_nodes = tuple(ends) if settings["exclude_first_last"] else ()  # type: ignore[attr-defined]
                return quantize

            space = static_space(config, make)
            fallback = quantize_with_fallback(space, float_model.path, out_dir / STATIC_MODEL_FILE, model,
                                              config.op_types, config.exclude_nodes, context, config.fallback)
        effect = check_quantization_effect(self.name, model.path, source.name, out_dir, STATIC_MODEL_FILE, coverage,
                                           config.op_types)  # nothing quantized, or bigger: StepNotApplicable
        copy_side_files(model.path, out_dir, skip={source.name, STATIC_MODEL_FILE})
        return PassResult(
            model_file=STATIC_MODEL_FILE,
            metadata={"quantization": {"scheme": "static-int8",
                                       **config.model_copy(update=chosen_overrides(space, fallback)).model_dump(
                                           mode="json", exclude={"calibration", "fallback"}),
                                       "calibration": calibration.facts(reader.count, reader.sha256),
                                       **float_model.notes, "coverage": coverage, "effect": effect},
                      "accuracy_fallback": fallback},
            data_sha256={"calibration": reader.sha256},
        )
