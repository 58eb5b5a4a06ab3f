"""Moved to slimline.runtimes.base; kept so older imports keep working."""

from __future__ import annotations

from slimline.runtimes.base import Runner, RunnerSpec, torch_baseline_precision

__all__ = ["Runner", "RunnerSpec", "torch_baseline_precision"]
