"""Moved to slimline.runtimes.torch.runner; kept so older imports keep working."""

from __future__ import annotations

from slimline.runtimes.torch.runner import TorchRunner, first_output, flat_outputs

__all__ = ["TorchRunner", "first_output", "flat_outputs"]
