"""Moved to slimline.runtimes.onnxruntime.runner; kept so older imports keep working."""

from __future__ import annotations

from slimline.runtimes.onnxruntime.runner import OrtRunner, check_providers, provider_entries

__all__ = ["OrtRunner", "check_providers", "provider_entries"]
