"""The decisions behind a TensorRT build that need no GPU: config, optimisation profile, precision flags.

Kept apart from export/tensorrt.py (which drives the TensorRT library) so that every rule here is
unit-tested on a CPU-only machine; the build itself only applies what these functions decide. Which
TensorRT release and GPU an engine may load on is slimline/engine_facts.py (the runner needs it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimline.core.artifact import TensorSpec
from slimline.core.errors import ExportError, ProfileError, RecipeError
from slimline.formats.engine_facts import parse_compute_capability
from slimline.formats.inputs import image_size
from slimline.profiles.schema import Shape

TensorRTPrecision = Literal["fp32", "fp16", "int8-qdq", "best"]
#: profile target.precision -> the TensorRT build precision that serves it.
PRECISION_FOR_TARGET: dict[str, TensorRTPrecision] = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq",
                                                      "mixed": "best"}
#: Native fp16 arithmetic starts at sm_53; int8 dot products (dp4a) at sm_61 (CUDA programming guide).
FP16_MIN_CC = (5, 3)
INT8_MIN_CC = (6, 1)
#: Pascal consumer parts (6.1) run fp16 at a fraction of fp32 speed; "best" only turns fp16 on where it is fast.
FAST_FP16_CC = frozenset({(5, 3), (6, 0), (6, 2)})
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def default_timing_cache_dir() -> Path:
    from slimline.core.paths import cache_root

    return cache_root() / "tensorrt"


class TensorRTExportConfig(BaseModel):
    """How to build the engine. Shapes come from the profile, not from here."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    precision: TensorRTPrecision = "fp16"
    workspace_mb: int = Field(default=4096, ge=16, le=1 << 20, description="builder scratch memory limit")
    timing_cache: Path | None = Field(default=None, description="None: a per-GPU file under the user cache dir")
    use_timing_cache: bool = Field(default=True, description="reuse kernel timings between builds")
    builder_optimization_level: int = Field(default=3, ge=0, le=5, description="TensorRT's default is 3")

    @classmethod
    def for_target_precision(cls, precision: str) -> TensorRTExportConfig:
        if precision not in PRECISION_FOR_TARGET:
            raise ProfileError(f"target.precision {precision!r} has no TensorRT build in slimline.",
                               fix=f"use one of {sorted(PRECISION_FOR_TARGET)} with runtime tensorrt.")
        return cls(precision=PRECISION_FOR_TARGET[precision])


ShapeTriple = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _axis_role(spec: TensorSpec, index: int, dim: int | str) -> str | None:
    """batch / sequence / image, from the axis name where it says, else from the position (as slimline.inputs)."""
    name = dim.lower() if isinstance(dim, str) else ""
    if "batch" in name:
        return "batch"
    if "seq" in name:
        return "sequence"
    if name in ("height", "width") or "image" in name:
        return "image"
    if index == 0:
        return "batch"
    if spec.name in TOKEN_INPUTS and index == 1:
        return "sequence"
    if spec.name == "pixel_values" and index in (2, 3):
        return "image"
    return None


def _role_values(role: str, shapes: list[Shape], config: dict[str, Any]) -> list[int]:
    if role == "batch":
        return [s.batch_size for s in shapes]
    if role == "sequence":
        return [s.sequence_length for s in shapes]
    return [image_size(config, s) for s in shapes]


def optimization_profile_shapes(inputs: list[TensorSpec], profile_shapes: list[Shape],
                                config: dict[str, Any] | None = None) -> dict[str, ShapeTriple]:
    """One TensorRT optimisation profile covering every shape of the slimline profile: {input: (min, opt, max)}.

    opt is the profile's first shape (the one budgets are judged at, so TensorRT tunes its kernels for
    it); max is the largest size asked for. Batch and sequence minimums are 1: the last, partial batch
    of the accuracy run, eval data padded only to its longest text, and short requests must still fit
    the engine. Image sizes span exactly the profile's. Fixed axes stay fixed, and a fixed batch/sequence
    axis that disagrees with the profile is refused now rather than at inference.
    """
    if not profile_shapes:
        raise ProfileError("the profile lists no shapes to build the TensorRT engine for.",
                           fix="add at least one {batch_size, sequence_length} under shapes.")
    config = config or {}
    result: dict[str, ShapeTriple] = {}
    for spec in inputs:
        low: list[int] = []
        opt: list[int] = []
        high: list[int] = []
        for index, dim in enumerate(spec.shape):
            role = _axis_role(spec, index, dim)
            if isinstance(dim, int) and dim > 0:
                wanted = set(_role_values(role, profile_shapes, config)) if role in ("batch", "sequence") else set()
                if wanted - {dim}:
                    raise ExportError(f"model input {spec.name!r} has a fixed {role} size {dim} (axis {index}), "
                                      f"but the profile asks for {sorted(wanted)}.",
                                      fix="re-export the model with dynamic batch/sequence axes (slimline's exporter "
                                          "does this), or change the profile's shapes.")
                low.append(dim), opt.append(dim), high.append(dim)
                continue
            if role is None:
                raise ExportError(f"model input {spec.name!r} has a dynamic axis {index} ({dim!r}) that slimline "
                                  "cannot size from the profile (it knows batch, sequence and image axes).",
                                  fix="export the model with that axis fixed, or name it batch/sequence.")
            values = _role_values(role, profile_shapes, config)
            low.append(1 if role in ("batch", "sequence") else min(values))
            opt.append(values[0])
            high.append(max(values))
        result[spec.name] = (tuple(low), tuple(opt), tuple(high))
    return result


@dataclass(frozen=True)
class BuilderPlan:
    """What the builder is told: the network's typing mode and the BuilderFlag names to set / clear."""

    precision: TensorRTPrecision
    strongly_typed: bool
    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _has_fast_fp16(cc: tuple[int, int]) -> bool:
    return cc in FAST_FP16_CC or cc >= (7, 0)


def select_builder_flags(precision: TensorRTPrecision, onnx_has_qdq: bool,
                         gpu_compute_capability: str | tuple[int, int]) -> BuilderPlan:
    """Decide the network mode and builder flags for `precision` on a GPU of this compute capability.

    - fp32: weakly typed, TF32 cleared so fp32 means IEEE fp32 (TensorRT enables TF32 by default on sm_80+).
    - fp16: weakly typed with the FP16 flag: TensorRT may still keep a layer in fp32 where that is faster.
    - int8-qdq: the ONNX model's explicit Q/DQ nodes decide what runs in int8, so the network is built
      strongly typed and no precision flag is set (TensorRT 10 refuses precision flags on a strongly
      typed network); layers outside Q/DQ pairs keep the ONNX model's own types.
    - best: weakly typed; FP16 where the GPU runs it fast, INT8 as well when the model carries Q/DQ nodes
      (without Q/DQ scales INT8 would need calibration, which slimline does not do in TensorRT).
    A Q/DQ model under fp32/fp16 is refused: its quantization would silently be dropped or half-applied.
    """
    cc = parse_compute_capability(gpu_compute_capability)
    where = f"this GPU (compute capability {cc[0]}.{cc[1]})"
    if onnx_has_qdq and precision in ("fp32", "fp16"):
        raise RecipeError(f"the ONNX model has QuantizeLinear/DequantizeLinear nodes, but the TensorRT precision is "
                          f"{precision}.", fix="use target.precision int8 (TensorRT int8-qdq) or mixed (best), or "
                                               "drop the Q/DQ quantization pass from the recipe.")
    if precision == "fp32":
        return BuilderPlan(precision, strongly_typed=False, set_flags=(), clear_flags=("TF32",),
                           notes=("TF32 disabled: fp32 layers run in IEEE fp32",))
    if precision == "fp16":
        if cc < FP16_MIN_CC:
            raise ProfileError(f"fp16 needs compute capability >= 5.3; {where} has no fp16 arithmetic.",
                               fix="use target.precision fp32 on this GPU.")
        notes = () if _has_fast_fp16(cc) else (f"{where} runs fp16 slower than fp32",)
        return BuilderPlan(precision, strongly_typed=False, set_flags=("FP16",), notes=notes)
    if precision == "int8-qdq":
        if not onnx_has_qdq:
            raise RecipeError("TensorRT int8 (explicit quantization) needs an ONNX model with "
                              "QuantizeLinear/DequantizeLinear nodes, and this one has none.",
                              fix="add `quantize.ort-int8-static` with `format: qdq` to the recipe (it needs "
                                  "calibration data), or use target.precision fp16.")
        if cc < INT8_MIN_CC:
            raise ProfileError(f"int8 needs compute capability >= 6.1 (dp4a); {where} has no int8 kernels.",
                               fix="use target.precision fp16 or fp32 on this GPU.")
        return BuilderPlan(precision, strongly_typed=True, set_flags=(),
                           notes=("strongly typed: Q/DQ pairs run in int8, other layers keep the ONNX types",))
    flags = []
    notes = []
    if _has_fast_fp16(cc):
        flags.append("FP16")
    else:
        notes.append(f"fp16 left off: {where} runs it slower than fp32")
    if onnx_has_qdq and cc >= INT8_MIN_CC:
        flags.append("INT8")
    elif onnx_has_qdq:
        notes.append(f"Q/DQ nodes present but {where} has no int8 kernels")
    return BuilderPlan("best", strongly_typed=False, set_flags=tuple(flags), notes=tuple(notes))
