"""A small streaming model that arrives as an ONNX file (no config.json, no manifest), as teams ship them.

Inputs: `chunk` [batch, time, 40] features of one chunk of audio, `state` [2, batch, 64] (the GRU's state from
the previous chunk: its batch axis is the second) and `gain`, a float scalar (shape []). Outputs: `logits`
[batch, time, 12] per frame and `next_state` [2, batch, 64]. Weight ops: one Conv (the front end over time), two
MatMuls (projection, head) and a GRU. Also its TorchScript archive, and an .npz of eval chunks laid out as the
model takes them (examples along each input's batch axis; the scalar once).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES, HIDDEN, LAYERS, CLASSES, TIME = 40, 64, 2, 12, 16


def _module():
    import torch
    from torch import nn

    class StreamingNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.front = nn.Conv1d(FEATURES, FEATURES, kernel_size=3, padding=1)
            self.proj = nn.Linear(FEATURES, HIDDEN)
            self.gru = nn.GRU(HIDDEN, HIDDEN, num_layers=LAYERS)  # time-major: state is [layers, batch, hidden]
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, chunk: torch.Tensor, state: torch.Tensor, gain: torch.Tensor):
            x = torch.relu(self.front((chunk * gain).transpose(1, 2))).transpose(1, 2)
            y, next_state = self.gru(torch.relu(self.proj(x)).transpose(0, 1), state)
            return self.head(y.transpose(0, 1)), next_state

    torch.manual_seed(0)
    return StreamingNet().eval()


def _examples(batch: int = 2):
    import torch

    return (torch.randn(batch, TIME, FEATURES), torch.zeros(LAYERS, batch, HIDDEN), torch.tensor(1.0))


def write_streaming_onnx(path: Path) -> Path:
    """The model as `path` (a .onnx file), exported with torch.onnx; dynamic batch and time axes."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"chunk": {0: "batch", 1: "time"}, "state": {1: "batch"}, "logits": {0: "batch", 1: "time"},
            "next_state": {1: "batch"}}
    with torch.no_grad():
        torch.onnx.export(_module(), _examples(), str(path), input_names=["chunk", "state", "gain"],
                          output_names=["logits", "next_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def write_streaming_torchscript(path: Path) -> Path:
    """The same model saved with torch.jit.save (traced)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        traced = torch.jit.trace(_module(), _examples())
    torch.jit.save(traced, str(path))
    return path


INPUT_SPEC = """\
inputs:
  - {name: chunk, dtype: float32, shape: [batch, time, 40]}
  - {name: state, dtype: float32, shape: [2, batch, 64]}
  - {name: gain, dtype: float32, shape: []}
outputs: [logits, next_state]
task: tensor
"""


def write_eval_chunks(path: Path, count: int = 24, seed: int = 1) -> Path:
    """`count` chunks laid out as the model takes them: chunk [count, 16, 40], state [2, count, 64] (the batch on
    the second axis), gain a scalar every example shares."""
    rng = np.random.default_rng(seed)
    np.savez(path, chunk=rng.standard_normal((count, TIME, FEATURES)).astype(np.float32),
             state=(0.1 * rng.standard_normal((LAYERS, count, HIDDEN))).astype(np.float32),
             gain=np.float32(1.0))
    return path
