"""PyTorch eager: the fp32 baseline every candidate is compared against, and torch-quantized models.

No export: a run for this runtime ends in the torch-level model (Hugging Face, torch-quantized or a plain
module). Nothing to bundle: slimline's bundles hold a deployable engine.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from slimline.runtimes.base import Runner, RunnerSpec, Runtime


class TorchEager(Runtime):
    name = "torch"
    module_name = "torch"
    loads = frozenset({"hf", "torch-quantized", "torch-module"})
    needs_onnx_export = False
    pruning_timer: ClassVar[Literal["onnx", "torch"] | None] = "torch"

    def make_runner(self, spec: RunnerSpec) -> Runner:
        from slimline.runtimes.torch.runner import TorchRunner

        return TorchRunner(spec)


RUNTIME = TorchEager()
