"""The measured facts about one model on one target (a candidate or the baseline)."""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, Field

from slimline.benchmarking.latency import LatencyStats

#: Where a timing figure came from: the models timed together in one process (block-interleaved rounds), or
#: this model timed alone in its own worker process, one model after another.
TimingSource = Literal["side_by_side", "alone"]


class Figure(BaseModel):
    """One timing figure a budget can judge: its value, ~95% interval and the measurement behind it."""

    value: float
    ci95: tuple[float, float] | None = None
    measurement: TimingSource
    n: int | None = None  # samples behind it: iterations, or generations for decoding
    rounds: int | None = None  # side by side: the rounds the interval resamples
    method: str = ""  # how the interval was computed, in words

    def describe(self) -> str:
        where = (f"side by side, {self.rounds} rounds, n={self.n}" if self.measurement == "side_by_side"
                 else f"alone, n={self.n}")
        return f"{where}; {self.method}" if self.method else where


class CandidateResult(BaseModel):
    label: str
    runtime: str
    format: str
    model_dir: str
    runner: dict[str, Any] = Field(default_factory=dict)
    latency: dict[str, LatencyStats]
    size_mb: float
    peak_rss_mb: float
    gpu_memory_mb: float | None = None  # CUDA targets with NVML (bench/gpu_memory.py); None elsewhere
    load_s: float
    accuracy_pct: float | None = None
    accuracy_drop_pt: float | None = None
    accuracy_drop_se_pt: float | None = None  # paired (McNemar) standard error of the drop, same examples
    agreement_with_baseline_pct: float | None = None
    #: The speed-up the verdict judges (baseline p50 / this p50): side by side when the run timed the models
    #: together (`side_by_side`), else alone; `speedup_vs_baseline_alone` is always the alone ratio.
    speedup_vs_baseline: float | None = None
    speedup_vs_baseline_alone: float | None = None
    #: Decoder LLMs: shape label -> bench.decode.DecodeStats (prefill ms, decode tokens/s with the KV cache).
    decode: dict[str, dict[str, Any]] | None = None
    decode_speedup_vs_baseline: float | None = None  # decode tokens/s over the baseline's: as speedup_vs_baseline
    decode_speedup_vs_baseline_alone: float | None = None
    #: The same model timed side by side with the baseline and the other candidates (bench.interleaved), at
    #: the first shape: metric name (latency_p95_ms, speedup_vs_baseline, decode_tokens_per_s ...) -> Figure.
    #: Empty when the run timed it alone only (a GPU target, or a single model).
    side_by_side: dict[str, Figure] = Field(default_factory=dict)
    side_by_side_latency: LatencyStats | None = None
    #: The evaluator's metrics (bench/evaluators): its own (top1_pct, ...) and vs the baseline (top1_drop_pt,
    #: agreement_pct, max_abs_error, ...); budgets read any metric from here.
    quality: dict[str, float] = Field(default_factory=dict)
    #: Which eval examples this model got right (bits in example order, base64): lets `slimline compare`
    #: give two runs on the same examples a paired standard error. None without eval data.
    correct_b64: str | None = None
    warnings: list[str] = Field(default_factory=list)

    def primary_latency(self) -> LatencyStats:
        return next(iter(self.latency.values()))

    def primary_decode(self) -> dict[str, Any] | None:
        return next(iter(self.decode.values())) if self.decode else None


def pack_correct(correct: Any) -> str:
    """A boolean vector as base64 bits (160 bytes for 1,276 examples instead of a JSON list)."""
    import numpy as np

    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_correct(packed: str, examples: int) -> Any:
    import numpy as np

    bits = np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8))
    return bits[:examples].astype(bool)
