"""PyTorch eager runner: the baseline every candidate is compared against, and torch-quantized models.

The baseline is fp32, except on a CUDA target whose precision is fp16: there it is the model in fp16
(`.half()`), the GPU baseline an fp16 TensorRT or ONNX Runtime candidate has to beat.

A torch-quantized directory (torch-int8-dynamic, bitsandbytes int8/nf4/fp4) is loaded through
slimline.torch_quantized, which knows each scheme's format; describe() names the scheme.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.core.errors import BenchError, MissingDependency
from slimline.formats.causal_lm import is_past_input
from slimline.formats.hf import load_hf_model
from slimline.runtimes.base import RunnerSpec, torch_baseline_precision


class TorchRunner:
    def __init__(self, spec: RunnerSpec) -> None:
        import torch

        self.torch = torch
        torch.set_num_threads(spec.threads)
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise MissingDependency("the torch runner was asked for CUDA, but torch sees no CUDA device.",
                                    fix="run on a machine with an NVIDIA GPU and a CUDA build of torch.")
        self.device = torch.device(spec.device)
        self.scheme = "none"
        if spec.model_format == "torch-quantized":
            from slimline.formats.torch_quantized import load_torch_quantized

            self.model, quantization = load_torch_quantized(Path(spec.model_dir), spec.task, spec.device)
            self.scheme = quantization["scheme"]
        elif spec.model_format == "hf":
            # transformers loads a checkpoint directory: a pass's output names model.safetensors as its model file
            self.model = load_hf_model(Path(spec.model_dir), spec.task).to(self.device)
            if torch_baseline_precision(spec.device, spec.precision) == "fp16":
                self.model = self.model.half()  # the CUDA fp16 baseline: plain .half(), no autocast, no compile
        elif spec.model_format == "torch-module":  # the user's own nn.Module, rebuilt from its factory
            from slimline.core.artifact import ModelDir
            from slimline.formats.torch_module import load_module

            self.model = load_module(ModelDir.open(spec.model_dir)).to(self.device)
        else:
            raise BenchError(f"the torch runner cannot run a {spec.model_format} model ({spec.model_dir}).",
                             fix="benchmark it with a profile whose runtime matches the model's format.")
        self.dtype = getattr(self.model, "dtype", None) or next(self.model.parameters()).dtype
        self.input_names = [s.name for s in spec.inputs if not is_past_input(s.name)]  # torch keeps its own cache
        self.positional = spec.model_format == "torch-module"  # a plain forward(x, ...) in the spec's order

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            tensors = self._tensors(feeds)
            if self.positional:
                return first_output(self.model(*[tensors[name] for name in self.input_names])).float().cpu().numpy()
            return self.model(**tensors)[0].float().cpu().numpy()  # logits, or an encoder's last_hidden_state

    def run_outputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output: a plain module's tensors flattened in order (tuple, list, dict), an HF model's logits."""
        torch = self.torch
        if not self.positional:
            return [self.run(feeds)]
        with torch.inference_mode():
            tensors = self._tensors(feeds)
            produced = self.model(*[tensors[name] for name in self.input_names])
            return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()
                    for t in flat_outputs(produced)]

    def _tensors(self, feeds: dict[str, np.ndarray]) -> dict[str, object]:
        torch = self.torch
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items() if k in self.input_names}
        return {k: t.to(self.dtype) if t.is_floating_point() else t for k, t in tensors.items()}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def describe(self) -> dict[str, object]:
        return {"runtime": "torch", "mode": "eager", "dtype": str(self.dtype).removeprefix("torch."),
                "quantization": self.scheme, "device": str(self.device), "threads": self.torch.get_num_threads()}


def flat_outputs(output: object) -> list:
    """A plain module's outputs in the order torch.onnx flattens them: tuples and lists in order, dicts by value."""
    if isinstance(output, (tuple, list)):
        return [leaf for item in output for leaf in flat_outputs(item)]
    if isinstance(output, dict):
        return [leaf for item in output.values() for leaf in flat_outputs(item)]
    return [getattr(output, "logits", output)]


def first_output(output: object) -> object:
    """A plain module's first output: the tensor itself, a tuple's first item, a dict's first value, .logits."""
    if isinstance(output, (tuple, list)):
        return first_output(output[0])
    if isinstance(output, dict):
        return first_output(next(iter(output.values())))
    return getattr(output, "logits", output)
