"""What every runner takes and offers."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from slimline.core.artifact import TensorSpec
from slimline.profiles.schema import Measurement, Shape


class RunnerSpec(BaseModel):
    """Everything a benchmark worker process needs; serialised to JSON between processes."""

    model_config = ConfigDict(extra="forbid")
    label: str
    runtime: Literal["torch", "onnxruntime", "tensorrt"]
    model_path: str
    model_dir: str
    model_format: str = "hf"
    task: str
    device: Literal["cpu", "cuda"] = "cpu"
    precision: str = "fp32"  # the profile's target.precision (the torch baseline runs fp16 on cuda+fp16)
    threads: int = 2
    providers: list[str] = []
    inputs: list[TensorSpec]
    shapes: list[Shape]
    measurement: Measurement
    eval_npz: str | None = None
    evaluator: str = "text-classification"  # a name in slimline.bench.evaluators' registry
    eval_outputs_path: str | None = None  # where the evaluator keeps raw outputs (agreement with fp32)
    eval_batch_size: int = 32
    seed: int = 0
    #: False when several models are timed in one process (bench.interleaved): an idle ONNX Runtime pool
    #: that spins steals the cores from the model being timed.
    allow_spinning: bool = True


class Runner(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return the first output (logits) as numpy."""
        ...

    def synchronize(self) -> None:
        """Block until queued device work is done (no-op on CPU)."""
        ...

    def describe(self) -> dict[str, object]:
        """Runtime facts for the report: providers in use, device, dtype."""
        ...


def torch_baseline_precision(device: str, precision: str) -> str:
    """The GPU baseline for an fp16 target is PyTorch eager in fp16 (what a team would ship without slimline);
    everywhere else the reference is fp32."""
    return "fp16" if device == "cuda" and precision == "fp16" else "fp32"
