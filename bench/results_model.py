"""The measured facts about one model on one target (a candidate or the baseline)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from slimline.bench.latency import LatencyStats


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
    speedup_vs_baseline: float | None = None
    warnings: list[str] = Field(default_factory=list)

    def primary_latency(self) -> LatencyStats:
        return next(iter(self.latency.values()))
