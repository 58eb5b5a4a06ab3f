"""Moved to slimline.runtimes.tensorrt.runner; kept so older imports keep working."""

from __future__ import annotations

from slimline.runtimes.tensorrt.runner import TensorRTRunner

__all__ = ["TensorRTRunner"]
