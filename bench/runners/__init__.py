"""Runners: load a model for one runtime and run a batch of numpy inputs through it."""

from __future__ import annotations

from slimline.bench.runners.base import Runner, RunnerSpec


def make_runner(spec: RunnerSpec) -> Runner:
    """The runner for `spec.runtime`; each imports its runtime lazily."""
    if spec.runtime == "torch":
        from slimline.bench.runners.torch_runner import TorchRunner

        return TorchRunner(spec)
    if spec.runtime == "onnxruntime":
        from slimline.bench.runners.ort_runner import OrtRunner

        return OrtRunner(spec)
    if spec.runtime == "tensorrt":
        from slimline.bench.runners.trt_runner import TensorRTRunner

        return TensorRTRunner(spec)
    raise ValueError(f"unknown runtime {spec.runtime!r}")


__all__ = ["Runner", "RunnerSpec", "make_runner"]
