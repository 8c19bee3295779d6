"""ResNet-50 trunk laid out as ``nn.Sequential(*resnet50().children()[:-2])``.

The official CVQMAE-ResNet stores its backbone under those Sequential indices
(``0`` conv1, ``1`` bn1, ``4``–``7`` layer1–layer4), so this module reproduces
torchvision's V1.5 bottleneck (stride on the 3×3 conv) without depending on
torchvision.
"""

from __future__ import annotations

import torch
from torch import nn

OUT_CHANNELS = 2048


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 with expansion 4 and an optional projection shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(in_ch: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_ch, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def resnet50_trunk() -> nn.Sequential:
    """The ResNet-50 feature extractor: (B, 3, H, W) normalised RGB → (B, 2048, H/32, W/32)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        _stage(64, 64, 3, 1),
        _stage(256, 128, 4, 2),
        _stage(512, 256, 6, 2),
        _stage(1024, 512, 3, 2),
    )
