"""Tokenise texts with the bundle's own tokenizer and run its engine: the one place inference happens.

The engine is loaded by its runtime (slimline.runtimes.<name>.open_session: an ONNX Runtime session, an
OpenVINO compiled model behind the same API); a runtime slimline cannot serve (a TensorRT plan) is
refused with the Triton command that serves it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimline.core.errors import BundleError
from slimline.deploy.manifest import BundleManifest
from slimline.deploy.runtime import bundle_runtime
from slimline.runtimes.base import Session

INPUT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def open_engine(root: Path, manifest: BundleManifest, threads: int) -> Session:
    """The bundle's engine loaded by its runtime; BundleError for a runtime slimline does not serve."""
    runtime = bundle_runtime(manifest.format)
    try:
        return runtime.open_session(root / manifest.engine, threads, manifest.profile.target)
    except NotImplementedError as err:
        raise BundleError(f"`slimline serve` cannot run {runtime.engine_description} ({root}).",
                          fix="serve it with Triton: tritonserver --model-repository BUNDLE/model_repository.") from err


class Predictor:
    """A text classifier from a verified bundle directory.

    Texts are padded to the longest in the call and truncated at the profile's largest sequence length,
    as the benchmark fed them. The tokenizer is shared behind a lock: a fast tokenizer used from two
    threads at once can fail with "Already borrowed" (huggingface/tokenizers#537).
    """

    def __init__(self, root: Path, manifest: BundleManifest, threads: int | None = None) -> None:
        if manifest.task != "text-classification":
            raise BundleError(f"`slimline serve` serves text-classification and text-generation bundles; {root} is "
                              f"{manifest.task}.",
                              fix="serve it with Triton: tritonserver --model-repository BUNDLE/model_repository.")
        from slimline.core.tokenizers import load_tokenizer

        self.manifest = manifest
        self.threads = threads or manifest.profile.target.threads
        self.max_length = max(shape.sequence_length for shape in manifest.profile.shapes)
        self.session = open_engine(root, manifest, self.threads)
        self.input_dtypes = {i.name: INPUT_DTYPES.get(i.type, np.int64) for i in self.session.get_inputs()}
        self.tokenizer, _ = load_tokenizer(root / manifest.preprocessing)  # a pad-less one pads with EOS (masked)
        self._tokenizer_lock = threading.Lock()
        classes = manifest.outputs[0].shape[-1] if manifest.outputs and manifest.outputs[0].shape else None
        self.labels = manifest.labels or [str(i) for i in range(classes if isinstance(classes, int) else 0)]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        with self._tokenizer_lock:
            encoded = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length,
                                     return_tensors="np")
        feeds = {name: np.asarray(encoded[name], dtype=dtype) for name, dtype in self.input_dtypes.items()
                 if name in encoded}
        missing = set(self.input_dtypes) - set(feeds)
        if "token_type_ids" in missing:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            missing.discard("token_type_ids")
        if missing:
            raise BundleError(f"the tokenizer does not produce the engine's input(s) {sorted(missing)}.",
                              fix="repackage the bundle from a model whose tokenizer matches its engine.")
        return feeds

    def predict(self, texts: list[str]) -> list[Prediction]:
        logits = self.session.run(None, self.encode(texts))[0]
        probabilities = softmax(np.asarray(logits))
        best = probabilities.argmax(axis=-1)
        return [Prediction(label=self.labels[i] if i < len(self.labels) else str(i), score=float(p[i]))
                for i, p in zip(best.tolist(), probabilities, strict=True)]
