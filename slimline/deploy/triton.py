"""Triton Inference Server model configuration (config.pbtxt) for a bundle's engine.

A bundle's `model_repository/` is a Triton model repository as it stands:
`model_repository/<name>/config.pbtxt` + `model_repository/<name>/1/model.onnx` (or `model.plan`, or
`model.xml` + `model.bin`), so `tritonserver --model-repository BUNDLE/model_repository` serves it
unchanged. The platform, backend, file name and backend parameters are the engine's runtime's
(slimline.runtimes.<name>: triton_platform, triton_backend, engine_file_name, triton_parameters).

Surprises the rendering handles:
- with `max_batch_size > 0` Triton adds the batch axis itself, so `dims` leave it out; that is only
  possible when every input and output has a dynamic first axis. Otherwise `max_batch_size: 0` and
  `dims` are the full shapes.
- a dynamic axis (a named axis in the manifest, or 0/-1) is `-1`; a tensor with no axis left after
  the batch axis is `dims: [ 1 ]` with an empty `reshape`, as Triton requires.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slimline.core.artifact import TensorSpec
from slimline.core.errors import BundleError
from slimline.profiles.schema import Profile
from slimline.runtimes import engine_runtime

#: A deployable engine's format (manifest.format): one a runtime in slimline.runtimes bundles.
EngineFormat = str
TRITON_DTYPES: dict[str, str] = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float32": "TYPE_FP32",
    "float64": "TYPE_FP64", "string": "TYPE_STRING",
}
DEFAULT_MAX_QUEUE_DELAY_US = 1000
TRITON_VERSION_DIR = "1"


class TritonModelConfig(BaseModel):
    """What config.pbtxt says; rendered by `render_config_pbtxt`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    format: EngineFormat
    max_batch_size: int = Field(ge=0)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay_us: int = Field(default=DEFAULT_MAX_QUEUE_DELAY_US, ge=0)
    instance_kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    #: Backend parameters (thread pools, hints), from the engine's runtime.
    parameters: dict[str, str] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _deployable(cls, fmt: str) -> str:
        if engine_runtime(fmt) is None:
            raise ValueError(f"{fmt!r} is not a deployable engine format")
        return fmt

    @property
    def platform(self) -> str | None:
        """Triton's platform name; None where a backend has none (openvino is named by backend alone)."""
        return engine_runtime(self.format).triton_platform  # type: ignore[union-attr]

    @property
    def backend(self) -> str:
        return str(engine_runtime(self.format).triton_backend)  # type: ignore[union-attr]


def engine_file_name(fmt: str) -> str:
    """The file name Triton looks for in a version directory for a `fmt` engine."""
    runtime = engine_runtime(fmt)
    if runtime is None or runtime.engine_file_name is None:
        raise BundleError(f"{fmt!r} is not a deployable engine format.", fix="package an exported engine.")
    return runtime.engine_file_name


def engine_suffixes(fmt: str) -> tuple[str, ...]:
    runtime = engine_runtime(fmt)
    return runtime.engine_suffixes if runtime is not None else ()


def _is_dynamic(axis: int | str) -> bool:
    return isinstance(axis, str) or axis <= 0


def batch_axis_is_dynamic(tensors: list[TensorSpec]) -> bool:
    return all(t.shape and _is_dynamic(t.shape[0]) for t in tensors)


def triton_dims(shape: list[int | str], batched: bool) -> list[int]:
    axes = shape[1:] if batched else shape
    return [-1 if _is_dynamic(axis) else int(axis) for axis in axes]


def triton_dtype(dtype: str) -> str:
    try:
        return TRITON_DTYPES[dtype]
    except KeyError as err:
        raise BundleError(f"tensor dtype {dtype!r} has no Triton equivalent.",
                          fix=f"export the model with inputs/outputs of one of: {', '.join(TRITON_DTYPES)}.") from err


def config_for(name: str, format: EngineFormat, inputs: list[TensorSpec], outputs: list[TensorSpec],
               profile: Profile, max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US) -> TritonModelConfig:
    """Batching from the profile's shapes: the largest batch is max_batch_size; several preferred sizes
    (or one above 1) turn on dynamic batching. A static batch axis means no Triton batching at all."""
    batched = batch_axis_is_dynamic([*inputs, *outputs])
    batch_sizes = sorted({shape.batch_size for shape in profile.shapes})
    max_batch = max(batch_sizes) if batched else 0
    target = profile.target
    return TritonModelConfig(
        name=name, format=format, max_batch_size=max_batch, inputs=inputs, outputs=outputs,
        preferred_batch_sizes=[size for size in batch_sizes if size > 1] if max_batch > 1 else [],
        max_queue_delay_us=max_queue_delay_us,
        instance_kind="KIND_GPU" if target.device == "cuda" else "KIND_CPU",
        parameters=engine_runtime(format).triton_parameters(target),  # type: ignore[union-attr]
    )


def _quote(text: str) -> str:
    return json.dumps(text)  # protobuf text format reads JSON's string escapes for these names


def _tensor_block(tensor: TensorSpec, batched: bool) -> list[str]:
    dims = triton_dims(tensor.shape, batched)
    lines = ["  {", f"    name: {_quote(tensor.name)}", f"    data_type: {triton_dtype(tensor.dtype)}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    lines.append("  }")
    return lines


def _tensor_list(key: str, tensors: list[TensorSpec], batched: bool) -> list[str]:
    lines = [f"{key} ["]
    for index, tensor in enumerate(tensors):
        block = _tensor_block(tensor, batched)
        if index < len(tensors) - 1:
            block[-1] += ","
        lines += block
    return [*lines, "]"]


def render_config_pbtxt(config: TritonModelConfig) -> str:
    batched = config.max_batch_size > 0
    lines = [
        f"name: {_quote(config.name)}",
        *([f"platform: {_quote(config.platform)}"] if config.platform else []),
        f"backend: {_quote(config.backend)}",
        f"max_batch_size: {config.max_batch_size}",
        *_tensor_list("input", config.inputs, batched),
        *_tensor_list("output", config.outputs, batched),
    ]
    if config.preferred_batch_sizes:
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {', '.join(str(s) for s in config.preferred_batch_sizes)} ]",
            f"  max_queue_delay_microseconds: {config.max_queue_delay_us}",
            "}",
        ]
    lines += ["instance_group [", f"  {{ count: 1, kind: {config.instance_kind} }}", "]"]
    for key, value in config.parameters.items():  # e.g. the onnxruntime backend's own thread pool size
        lines += ["parameters {", f"  key: {_quote(key)}", f"  value: {{ string_value: {_quote(value)} }}", "}"]
    return "\n".join(lines) + "\n"
