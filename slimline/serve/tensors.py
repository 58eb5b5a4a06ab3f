"""Raw tensors in, raw tensors out: serving a bundle that is neither a text classifier nor a causal LM.

A model that arrived as an ONNX or TorchScript file (a streaming model with a recurrent state and a scalar, an
image classifier, any plain module) has no tokenizer to turn text into its inputs, so `POST /v1/infer` takes them
as JSON arrays named after the bundle's inputs and answers every output the same way. Each array must have the
input's rank, its fixed sizes and a dtype it can be cast to without surprise (a float for an integer input is
refused); the client sees which input is wrong and why (422), never a 500 from ONNX Runtime's own check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.errors import BundleError
from slimline.deploy.manifest import BundleManifest

#: Elements of all inputs of one request together; far beyond any streaming chunk, far below memory trouble.
MAX_ELEMENTS = 4_000_000


class TensorInputError(ValueError):
    """A request's tensors do not fit the model's inputs: the message says which and how."""


class TensorModel:
    """An ONNX bundle run on raw tensors (the `tensor` task and any other task without a text front end)."""

    def __init__(self, root: Path, manifest: BundleManifest, threads: int | None = None) -> None:
        if manifest.format != "onnx":
            raise BundleError(f"`slimline serve` runs ONNX engines; {root} holds a {manifest.format} engine.",
                              fix="serve TensorRT plans with Triton: tritonserver --model-repository "
                                  "BUNDLE/model_repository.")
        import onnxruntime as ort

        self.manifest = manifest
        self.threads = threads or manifest.profile.target.threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        providers = [p for p in manifest.profile.target.providers() if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(root / manifest.engine), sess_options=options, providers=providers)
        self.inputs = {spec.name: spec for spec in manifest.inputs}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def feeds(self, payload: Any) -> dict[str, np.ndarray]:
        """`{"inputs": {name: array}}` as the engine's feeds; raise TensorInputError naming what does not fit."""
        if not isinstance(payload, dict) or set(payload) != {"inputs"} or not isinstance(payload["inputs"], dict):
            raise TensorInputError('expected {"inputs": {"<input name>": [...], ...}}')
        given = payload["inputs"]
        missing = sorted(set(self.inputs) - set(given))
        extra = [k if len(k) <= 40 else k[:37] + "..." for k in sorted(set(given) - set(self.inputs))[:5]]
        if missing or extra:
            raise TensorInputError(f"the model takes inputs {sorted(self.inputs)}" + (f"; missing {missing}" if missing
                                   else "") + (f"; unknown {extra}" if extra else ""))
        feeds, elements, sizes = {}, 0, {}
        for name, spec in self.inputs.items():
            try:
                array = np.asarray(given[name])
            except (ValueError, TypeError) as err:  # ragged nesting
                raise TensorInputError(f"inputs.{name} is not a rectangular array: {err}") from None
            if array.dtype == object or array.dtype.kind in "USV":
                what = "text" if array.dtype.kind == "U" else "mixed or out-of-range values"
                raise TensorInputError(f"inputs.{name} must hold numbers, not {what}")
            wanted = np.dtype(spec.dtype)
            if wanted.kind in "iub" and array.dtype.kind == "f":
                raise TensorInputError(f"inputs.{name} is {spec.dtype}; got floating-point numbers")
            if array.ndim != len(spec.shape):
                raise TensorInputError(f"inputs.{name} has {array.ndim} axes {list(array.shape)}; the model takes "
                                       f"{len(spec.shape)} {spec.shape}")
            wrong = [f"axis {i} is {array.shape[i]}, not {axis}" for i, axis in enumerate(spec.shape)
                     if isinstance(axis, int) and axis > 0 and array.shape[i] != axis]
            if wrong or 0 in array.shape:
                raise TensorInputError(f"inputs.{name} has shape {list(array.shape)} for {spec.shape}: "
                                       + ("; ".join(wrong) or "an empty axis"))
            for axis, size in zip(spec.shape, array.shape, strict=True):  # one named axis, one size everywhere
                if isinstance(axis, str) and sizes.setdefault(axis, (size, name))[0] != size:
                    raise TensorInputError(f"axis {axis!r} is {size} in inputs.{name} but {sizes[axis][0]} in "
                                           f"inputs.{sizes[axis][1]}")
            elements += array.size
            if elements > MAX_ELEMENTS:
                raise TensorInputError(f"more than {MAX_ELEMENTS} elements in one request")
            try:
                feeds[name] = np.array(array, dtype=wanted, order="C")  # a scalar stays 0-d (ascontiguousarray: 1-d)
            except (OverflowError, ValueError) as err:
                raise TensorInputError(f"inputs.{name} does not fit {spec.dtype}: {err}") from None
        return feeds

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        """Every output as nested lists. ONNX Runtime's own refusal of a feed (InvalidArgument: a size the graph
        cannot take) is the client's error (TensorInputError), any other failure the server's."""
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        try:
            outputs = self.session.run(None, feeds)
        except InvalidArgument as err:
            raise TensorInputError(f"the model refused these inputs: {str(err)[:300]}") from None
        return {name: np.asarray(value).tolist() for name, value in zip(self.output_names, outputs, strict=True)}
