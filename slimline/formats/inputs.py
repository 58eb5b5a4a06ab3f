"""Model inputs for a given shape, built from the model's declared inputs and its config.

Export's parity check and every bench runner use these, so the baseline and each candidate see
exactly the same tensors. Token ids are seeded random draws from the vocabulary; masks are ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import BenchError
from slimline.formats.causal_lm import empty_past, is_past_input
from slimline.profiles.schema import Shape

DEFAULT_IMAGE_SIZE = 224
#: Input dtypes slimline can feed (an ONNX graph's inputs, a module's input spec).
FEEDABLE_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
#: Axis names that mean "the batch": its size is the profile's batch size, and eval data is split along it.
BATCH_AXIS_NAMES = ("batch", "batch_size", "N", "n")


def _numpy_dtype(dtype: str) -> Any:
    if dtype not in FEEDABLE_DTYPES:
        raise BenchError(f"model input dtype {dtype!r} cannot be fed.", fix=f"use one of {', '.join(FEEDABLE_DTYPES)}.")
    return np.dtype(dtype).type


def batch_axis(spec: TensorSpec) -> int | None:
    """Where the batch is in this input: its axis named batch (not always the first: a recurrent state is often
    [layers, batch, hidden]); None for an input the whole batch shares (a scalar, a fixed-size tensor)."""
    return next((i for i, axis in enumerate(spec.shape) if axis in BATCH_AXIS_NAMES), None)


def image_size(config: dict[str, Any], shape: Shape) -> int:
    if shape.image_size is not None:
        return shape.image_size
    size = config.get("image_size", DEFAULT_IMAGE_SIZE)
    return int(size if isinstance(size, int) else size[0])


def synthetic_feeds(specs: list[TensorSpec], shape: Shape, config: dict[str, Any],
                    seed: int = 0) -> dict[str, np.ndarray]:
    """One input dict of `shape` for a model whose inputs are `specs`.

    Token ids come from the config's vocabulary; a model without one (a plain module's `input_ids`: its embedding
    may have 64 rows) gets the generic integers in [0, 2), never ids from a guessed vocabulary."""
    rng = np.random.default_rng(seed)
    batch, seq = shape.batch_size, shape.sequence_length
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = _numpy_dtype(spec.dtype)
        if spec.name == "input_ids" and "vocab_size" in config:  # else (a plain module, an ONNX file): generic ids
            vocab = int(config["vocab_size"])
            low = 1000 if vocab > 2000 else 0  # skip special tokens on real vocabularies
            feeds[spec.name] = rng.integers(low, vocab, size=(batch, seq)).astype(dtype)
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((batch, seq), dtype=dtype)
        elif spec.name == "token_type_ids":
            feeds[spec.name] = np.zeros((batch, seq), dtype=dtype)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.broadcast_to(np.arange(seq, dtype=dtype), (batch, seq)).copy()
        elif spec.name == "pixel_values":
            size = image_size(config, shape)
            channels = int(config.get("num_channels", 3))
            feeds[spec.name] = rng.standard_normal((batch, channels, size, size)).astype(dtype)
        elif is_past_input(spec.name):  # a KV-cache export: an empty past makes the call a plain prefill
            feeds.update(empty_past([spec], config, batch))
        else:  # a plain module's input: its declared shape, named axes filled from the profile's shape
            feeds[spec.name] = _generic_feed(spec, shape, config, rng)
    return feeds


def _generic_dims(spec: TensorSpec, shape: Shape, config: dict[str, Any]) -> list[int]:
    """`batch` -> the batch size, height/width -> the image size, any other named axis -> the sequence length."""
    dims = []
    for axis in spec.shape:
        if isinstance(axis, int) and axis > 0:
            dims.append(axis)
        elif axis in BATCH_AXIS_NAMES:
            dims.append(shape.batch_size)
        elif axis in ("height", "width", "H", "W"):
            dims.append(image_size(config, shape))
        elif isinstance(axis, str):
            dims.append(shape.sequence_length)
        else:
            raise BenchError(f"model input {spec.name!r} has an unnamed unknown dimension in {spec.shape}.",
                             fix="name dynamic axes in the input spec (e.g. [batch, 3, 224, 224]).")
    return dims


def _generic_feed(spec: TensorSpec, shape: Shape, config: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """The declared shape with named axes filled from the profile's shape (`_generic_dims`); floats are
    standard normal, integers draw from [0, vocab_size or 2)."""
    dims = _generic_dims(spec, shape, config)
    dtype = _numpy_dtype(spec.dtype)
    if dtype is np.bool_:
        return rng.integers(0, 2, size=dims).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        return np.asarray(rng.integers(0, int(config.get("vocab_size", 2)), size=dims)).astype(dtype)
    return np.asarray(rng.standard_normal(dims)).astype(dtype)  # a scalar input (shape []) is a 0-d array


def shape_label(specs: list[TensorSpec], shape: Shape, config: dict[str, Any]) -> str:
    """What the model is fed at `shape`, from its declared inputs: `b1_s128` for token ids, `b1_3x224x224` for
    images (pixel_values, or a 4-D float input: batch, channels, height, width), `b1_t160x40` for any other
    tensor (its dims after the batch). Labels latency tables and report keys, so an image model is not
    called a 128-token one."""
    batch = f"b{shape.batch_size}"
    names = [spec.name for spec in specs if not is_past_input(spec.name)]
    if not names or "input_ids" in names:
        return f"{batch}_s{shape.sequence_length}"
    primary = next(spec for spec in specs if spec.name == names[0])
    if primary.name == "pixel_values":
        size = image_size(config, shape)
        return f"{batch}_{int(config.get('num_channels', 3))}x{size}x{size}"
    dims = _generic_dims(primary, shape, config)
    if primary.shape and (primary.shape[0] in BATCH_AXIS_NAMES or primary.shape[0] == shape.batch_size):
        dims = dims[1:]
    joined = "x".join(str(d) for d in dims) or "1"
    image_like = len(dims) == 3 and primary.dtype.startswith("float") and dims[0] in (1, 3, 4)
    return f"{batch}_{joined}" if image_like else f"{batch}_t{joined}"


def default_input_specs(task: str) -> list[TensorSpec]:
    """Inputs of a model that has no exported graph to read them from (PyTorch-runtime targets)."""
    if task == "image-classification":
        return [TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, "height", "width"])]
    names = ("input_ids", "attention_mask")
    return [TensorSpec(name=name, dtype="int64", shape=["batch", "sequence"]) for name in names]


def torch_feeds_for(hf_model: Any, model: ModelDir, shape: Shape, seed: int = 0) -> dict[str, Any]:
    """`synthetic_feeds` as torch tensors for an in-memory HF model loaded from the model directory `model`."""
    import torch

    specs = model.manifest.inputs or default_input_specs(model.manifest.task)
    feeds = synthetic_feeds(specs, shape, hf_model.config.to_dict(), seed=seed)
    return {name: torch.from_numpy(value) for name, value in feeds.items()}
