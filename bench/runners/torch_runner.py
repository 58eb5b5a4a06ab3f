"""PyTorch eager runner: the fp32 baseline every candidate is compared against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.runners.base import RunnerSpec
from slimline.errors import MissingDependency
from slimline.hf import load_hf_model


class TorchRunner:
    def __init__(self, spec: RunnerSpec) -> None:
        import torch

        self.torch = torch
        torch.set_num_threads(spec.threads)
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise MissingDependency("the torch runner was asked for CUDA, but torch sees no CUDA device.",
                                    fix="run on a machine with an NVIDIA GPU and a CUDA build of torch.")
        self.device = torch.device(spec.device)
        self.model = load_hf_model(Path(spec.model_path), spec.task).to(self.device)
        self.input_names = [s.name for s in spec.inputs]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items() if k in self.input_names}
            return self.model(**tensors).logits.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def describe(self) -> dict[str, object]:
        return {"runtime": "torch", "mode": "eager", "dtype": "float32", "device": str(self.device),
                "threads": self.torch.get_num_threads()}
