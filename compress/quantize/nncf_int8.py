"""NNCF post-training INT8 for OpenVINO: weights and activations, ranges from the user's calibration data.

Reads the ONNX stage (or an IR) and writes an OpenVINO IR whose FakeQuantize ops the CPU plugin runs as INT8
(VNNI / AMX-INT8 kernels where the CPU has them). `model_type: transformer` keeps the ops NNCF knows to be
sensitive in transformers (softmax inputs, layer norms) out of INT8.

Accuracy: when the run has labelled data and the profile an accuracy budget, the quantized model is scored
on the validation split against the fp32 model (both in OpenVINO, the reference compiled in f32). Over the
budget, NNCF's accuracy-controlled quantization (`nncf.quantize_with_accuracy_control`) takes over: it ranks
the quantized ops by their effect on the same validation accuracy and returns the most sensitive to float
until the drop is within `max_drop`. The manifest records both accuracies and which path produced the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from slimline.compression.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compression.calibration import CalibrationSpec
from slimline.compression.quantize.openvino_common import (
    Validation,
    calibration_dataset,
    calibration_problems,
    calibration_reader,
    target_problems,
)
from slimline.core.artifact import ModelDir
from slimline.core.deps import require
from slimline.core.errors import PassError
from slimline.core.machine import has_vnni
from slimline.profiles.schema import Target
from slimline.runtimes.openvino.ir import IR_XML, READS, ir_interface, read_model, save_ir

log = logging.getLogger(__name__)
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


class NncfInt8Config(PassConfig):
    #: performance: symmetric activations (fastest); mixed: asymmetric activations (more accurate on GELU/ReLU).
    preset: Literal["performance", "mixed"] = "mixed"
    model_type: Literal["transformer", "other"] = "transformer"
    fast_bias_correction: bool = True
    calibration: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(num_samples=300))
    ignored_names: list[str] = Field(default_factory=list, description="nodes kept in float, by name")
    #: Accuracy-controlled quantization when the plain result exceeds the profile's accuracy budget.
    accuracy_control: bool = True
    max_drop_pt: float | None = Field(default=None, ge=0, description="None: the profile's accuracy budget")
    validation_samples: int | None = Field(default=500, ge=10, description="validation examples scored")


@register("quantize.nncf-int8", extra="openvino")
class NncfInt8(Pass[NncfInt8Config]):
    Config = NncfInt8Config
    stage = "onnx"
    accepts = READS
    produces = "openvino"
    needs = frozenset({"calibration_data"})

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        problems = [*super().check(model, target), *target_problems(self, target)]
        if target.device == "cpu" and not has_vnni():
            problems.append(self.warning("this CPU has no VNNI/AMX (int8 dot product): INT8 may not beat bf16/f32 "
                                         "here; measure both (target.runtime: auto times them side by side)"))
        return problems + calibration_problems(self, model, self.config.calibration)

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        nncf = require("nncf", purpose=self.name)
        config = self.config
        ov_model = read_model(model, self.name)
        input_names = {port.get_any_name() for port in ov_model.inputs}
        reader = calibration_reader(config.calibration.resolved(context.tuning_data), model, input_names)
        calibration = calibration_dataset(reader)
        options = {"preset": getattr(nncf.QuantizationPreset, config.preset.upper()),
                   "model_type": nncf.ModelType.TRANSFORMER if config.model_type == "transformer" else None,
                   "subset_size": reader.count, "fast_bias_correction": config.fast_bias_correction,
                   "ignored_scope": nncf.IgnoredScope(names=config.ignored_names, validate=False)
                   if config.ignored_names else None}
        try:
            quantized = nncf.quantize(ov_model.clone(), calibration, **options)
        except Exception as err:  # NNCF raises its own errors (nncf.ValidationError, InternalError ...)
            raise PassError(f"{self.name}: nncf.quantize failed on {model.model_path}: {err}",
                            fix="exclude the failing node (ignored_names) or use quantize.ort-int8-static.") from err
        accuracy = self._accuracy_control(ov_model, quantized, model, context, input_names, calibration, options)
        if accuracy.get("quantized_with_accuracy_control"):
            quantized = accuracy.pop("model")
        facts = save_ir(quantized, model, out_dir, compress_to_fp16=False)
        inputs, outputs = ir_interface(model, facts)
        return PassResult(
            model_file=IR_XML, inputs=inputs, outputs=outputs,
            metadata={"quantization": {"scheme": "nncf-int8", **config.model_dump(mode="json", exclude={"calibration"}),
                                       "calibration": {**config.calibration.model_dump(), "examples": reader.count}},
                      "openvino": facts, "accuracy_control": {k: v for k, v in accuracy.items() if k != "model"}},
            data_sha256={"calibration": reader.sha256})

    def _accuracy_control(self, ov_model, quantized, model: ModelDir, context: PassContext,
                          input_names: set[str], calibration, options: dict) -> dict:
        """{reference/quantized accuracy, budget, path taken}; with the replacement model under "model"."""
        config = self.config
        budget = config.max_drop_pt if config.max_drop_pt is not None else context.accuracy_drop_budget_pt
        if budget is None or context.tuning_data is None or model.manifest.task != "text-classification":
            return {"skipped": "no accuracy budget or no labelled text data for this model"}
        nncf = require("nncf", purpose=self.name)
        validation = Validation(model, context, input_names, config.validation_samples)
        reference = validation.accuracy_pct(ov_model, F32)
        plain = validation.accuracy_pct(quantized, {})
        facts: dict = {"budget_pt": budget, "validation_examples": len(validation),
                       "reference_accuracy_pct": round(reference, 3), "int8_accuracy_pct": round(plain, 3),
                       "int8_drop_pt": round(reference - plain, 3)}
        if reference - plain <= budget or not config.accuracy_control:
            return {**facts, "quantized_with_accuracy_control": False}
        log.info("%s: drop %.2f pt > %.2f pt: nncf.quantize_with_accuracy_control", self.name, reference - plain,
                 budget)
        try:
            controlled = nncf.quantize_with_accuracy_control(
                ov_model.clone(), calibration, validation.dataset(), Validation.validate, max_drop=budget / 100.0,
                drop_type=nncf.DropType.ABSOLUTE, **options)
        except Exception as err:
            raise PassError(f"{self.name}: accuracy-controlled quantization failed: {err}",
                            fix="raise the accuracy budget, or set accuracy_control: false for plain INT8.") from err
        after = validation.accuracy_pct(controlled, {})
        return {**facts, "quantized_with_accuracy_control": True, "controlled_accuracy_pct": round(after, 3),
                "controlled_drop_pt": round(reference - after, 3), "model": controlled}
