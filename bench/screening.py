"""Screening a search trial on the validation split: accuracy, and how faithfully it follows fp32.

The test split is kept for the final report; trials are compared on the validation split. Next to the
accuracy drop (with its paired standard error) it records the low-variance paired measures the issue
of honest selection needs: prediction agreement with the fp32 reference and the mean KL divergence of
the class distributions. Only labelled text classification is screened here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from slimline.core.data import DatasetSpec, encode_labelled, trimmed_batches
from slimline.core.stats import paired_drop_pt


@dataclass(frozen=True)
class Fidelity:
    examples: int
    accuracy_pct: float
    reference_accuracy_pct: float
    drop_pt: float
    drop_se_pt: float  # paired (McNemar) standard error: same examples as the reference
    agreement_pct: float  # predictions equal to fp32's
    kl_divergence: float  # mean KL(fp32 || candidate) of the softmax outputs, nats

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class ValidationScreen:
    """The validation split (or another, for benchmarks) tokenised once; ONNX models run on it with the target's
    thread count."""

    def __init__(self, data: DatasetSpec, tokenizer_dir: Path, sequence_length: int, threads: int,
                 providers: list[str] | None = None, max_samples: int | None = None,
                 split: str = "validation") -> None:
        spec = data.model_copy(update={"split": split, "max_samples": max_samples})
        self.arrays, texts = encode_labelled(spec, tokenizer_dir, sequence_length)
        self.labels = texts.labels
        self.examples_sha256 = texts.sha256
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]

    def logits(self, onnx_path: Path, batch_size: int = 32) -> np.ndarray:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=self.providers)
        names = {i.name for i in session.get_inputs()}
        arrays = {k: v for k, v in self.arrays.items() if k in names}
        return np.concatenate([session.run(None, feeds)[0] for feeds in trimmed_batches(arrays, batch_size)])

    def run_logits(self, run: Callable[[dict[str, np.ndarray]], np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Logits from any runtime's runner (an OpenVINO IR, ...): `run` takes a batch of named inputs."""
        return np.concatenate([run(feeds) for feeds in trimmed_batches(self.arrays, batch_size)])

    def fidelity(self, logits: np.ndarray, reference_logits: np.ndarray) -> Fidelity:
        predictions, reference = logits.argmax(-1), reference_logits.argmax(-1)
        correct, reference_correct = predictions == self.labels, reference == self.labels
        drop, se = paired_drop_pt(reference_correct, correct)
        reference_log_p = _log_softmax(reference_logits.astype(np.float64))
        log_q = _log_softmax(logits.astype(np.float64))
        kl = float(np.mean(np.sum(np.exp(reference_log_p) * (reference_log_p - log_q), axis=-1)))
        return Fidelity(examples=len(self.labels), accuracy_pct=100.0 * float(correct.mean()),
                        reference_accuracy_pct=100.0 * float(reference_correct.mean()), drop_pt=drop, drop_se_pt=se,
                        agreement_pct=100.0 * float(np.mean(predictions == reference)), kl_divergence=max(kl, 0.0))
