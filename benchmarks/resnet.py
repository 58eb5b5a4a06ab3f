"""A torchvision-style ResNet-18 built from code (torchvision is never installed with slimline, and no PyPI wheel
ships ImageNet ResNet weights), made to behave like a trained classifier where quantization is concerned.

torchvision's layout and initialisation (BasicBlock x [2, 2, 2, 2], 7x7 stem, kaiming-normal convolutions,
a 1000-class fc), seeded. A random network is not a trained one, so two things are set from images, and the
benchmark says so: the BatchNorm running statistics are estimated on calibration photos (train-mode
forwards, cumulative average), so activations have realistic scales; and the fc layer folds in a
centring of the pooled features (their mean on the same photos) and one scale that gives the logits a
trained classifier's spread, so that its predictions differ from image to image with realistic margins
instead of one class for all (a per-feature standardisation would amplify the INT8 noise of the
near-constant features, which a trained network does not).
"""

from __future__ import annotations

import torch
from torch import nn

#: The spread of the logits over images (a trained ImageNet ResNet-18's are of this order).
LOGIT_STD = 3.0


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inputs != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, layers, inputs = (64, 128, 256, 512), [], 64
        for index, planes in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers.append(nn.Sequential(BasicBlock(inputs, planes, stride), BasicBlock(planes, planes)))
            inputs = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(pixels))


def resnet18() -> nn.Module:
    """The architecture only (the benchmark's factory); weights come from `resnet18_fitted`."""
    return ResNet18()


def resnet18_fitted(pixels: torch.Tensor, seed: int = 0) -> nn.Module:
    """Seeded ResNet-18 with BatchNorm statistics and the fc centring and scale estimated on `pixels` (N, 3, H, W)."""
    torch.manual_seed(seed)
    model = ResNet18()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over every batch below
    model.train()
    with torch.no_grad():
        for batch in pixels.split(32):
            model.features(batch)
        model.eval()
        features = torch.cat([model.features(batch) for batch in pixels.split(32)])
        mean = features.mean(0)
        logits = (features - mean) @ model.fc.weight.T
        weight = model.fc.weight * (LOGIT_STD / logits.std())  # one scale for all: no feature's noise amplified
        model.fc.weight.copy_(weight)
        model.fc.bias.copy_(-(weight @ mean))
    return model.eval()
