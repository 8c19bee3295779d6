"""HRNet-W48 backbone of MEGA (``hrnet_w48(downsample=True, use_conv=True)``).

A plain-PyTorch re-implementation whose ``state_dict()`` has exactly the official key
names, shapes, dtypes and order (the ``backbone.`` part of the CVQMAE-HRNet checkpoint,
without that prefix), so the official weights load with ``strict=True``.

Layout (see the design spec, section 1.1): stem (two stride-2 3x3 convs) -> layer1
(4 Bottlenecks, 256 ch) -> transition1 / stage2 (branches [48, 96], 1 module) ->
transition2 / stage3 ([48, 96, 192], 4 modules) -> transition3 / stage4
([48, 96, 192, 384], 3 modules, all outputs kept) -> head: branches 0..2 are brought
to 1/32 resolution by stride-2 conv-BN-ReLU stacks and concatenated with branch 3.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

OUT_CHANNELS = 720
BN_MOMENTUM = 0.1
BRANCH_CHANNELS = (48, 96, 192, 384)
# (number of HighResolutionModules, number of branches) for stage2, stage3, stage4.
STAGES = ((1, 2), (4, 3), (3, 4))
BLOCKS_PER_BRANCH = 4


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=BN_MOMENTUM)


def _conv_bn(cin: int, cout: int, stride: int, relu: bool) -> nn.Sequential:
    """3x3 conv (no bias) + BN (+ ReLU); keys ``0.weight`` and ``1.*``."""
    layers: list[nn.Module] = [_conv3x3(cin, cout, stride), _bn(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + identity, ReLU. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.bn1 = _bn(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = _bn(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (expansion 4). (B,Cin,H,W) -> (B,4*planes,H,W)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int) -> None:
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, outplanes, kernel_size=1, bias=False)
        self.bn3 = _bn(outplanes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if inplanes != outplanes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, outplanes, kernel_size=1, bias=False), _bn(outplanes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def _fuse_path(i: int, j: int) -> nn.Module | None:
    """Path from branch j to output branch i (channels from BRANCH_CHANNELS)."""
    cin, cout = BRANCH_CHANNELS[j], BRANCH_CHANNELS[i]
    if j > i:  # 1x1 conv + BN, then nearest upsampling by 2**(j-i)
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=1, bias=False),
            _bn(cout),
            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
        )
    if j == i:
        return None
    # (i-j) stride-2 3x3 convs: intermediate ones keep cin and have ReLU, the last maps to cout without ReLU.
    steps = i - j
    return nn.Sequential(
        *[_conv_bn(cin, cout if k == steps - 1 else cin, 2, relu=k != steps - 1) for k in range(steps)]
    )


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by all-to-all fusion.

    Input/output: a list of ``n`` tensors, branch k being (B, BRANCH_CHANNELS[k], H/2**k, W/2**k).
    """

    def __init__(self, num_branches: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(BRANCH_CHANNELS[k]) for _ in range(BLOCKS_PER_BRANCH)])
            for k in range(num_branches)
        )
        self.fuse_layers = nn.ModuleList(
            # torch's stubs say Iterable[Module], but ModuleList keeps None slots (add_module accepts None).
            nn.ModuleList(_fuse_path(i, j) for j in range(num_branches))  # type: ignore[misc]
            for i in range(num_branches)
        )
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=False)]
        out = []
        for i, fuse_layer in enumerate(self.fuse_layers):
            paths = cast(nn.ModuleList, fuse_layer)  # built in __init__ as a ModuleList per output branch
            y = xs[0] if i == 0 else paths[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else paths[j](xs[j]))
            out.append(self.relu(y))
        return out


def _transition(pre_channels: tuple[int, ...], num_cur: int) -> nn.ModuleList:
    """Branches whose width is unchanged pass through (None); each new branch gets a stride-2 conv on the last one."""
    layers: list[nn.Module | None] = []
    for k in range(num_cur):
        cout = BRANCH_CHANNELS[k]
        if k < len(pre_channels):
            layers.append(None if pre_channels[k] == cout else _conv_bn(pre_channels[k], cout, 1, relu=True))
        else:
            layers.append(nn.Sequential(_conv_bn(pre_channels[-1], cout, 2, relu=True)))
    # torch's stubs say Iterable[Module], but ModuleList keeps None slots (add_module accepts None).
    return nn.ModuleList(layers)  # type: ignore[arg-type]


def _downsample_head(channels: int, times: int) -> nn.Sequential:
    """``times`` x [conv3x3 s2 (no bias), BN, ReLU] in one flat Sequential (indices 0,1,2,3,...)."""
    return nn.Sequential(*[m for _ in range(times) for m in _conv_bn(channels, channels, 2, relu=True)])


class HRNetW48(nn.Module):
    """MEGA's HRNet-W48 image encoder.

    Input: (B, 3, H, W) float32, ImageNet-normalised crops (H, W multiples of 32; 224x224 in MEGA).
    Output: (B, 720, H/32, W/32) = concat of the four branches at 1/32 resolution
    (48 + 96 + 192 + 384 channels); (B, 720, 7, 7) for 224x224 input.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*[Bottleneck(64 if k == 0 else 256, 64) for k in range(4)])

        pre_channels: tuple[int, ...] = (256,)
        for s, (num_modules, num_branches) in enumerate(STAGES, start=1):
            self.add_module(f"transition{s}", _transition(pre_channels, num_branches))
            stage = nn.Sequential(*[HighResolutionModule(num_branches) for _ in range(num_modules)])
            self.add_module(f"stage{s + 1}", stage)
            pre_channels = BRANCH_CHANNELS[:num_branches]

        # Built by the official code (and present in its checkpoints) but never used in forward.
        self.final_layer = nn.Conv2d(BRANCH_CHANNELS[0], 24, kernel_size=1)
        self.downsample_stage_1 = _downsample_head(BRANCH_CHANNELS[0], 3)
        self.downsample_stage_2 = _downsample_head(BRANCH_CHANNELS[1], 2)
        self.downsample_stage_3 = _downsample_head(BRANCH_CHANNELS[2], 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 720, H/32, W/32)."""
        x = self.relu(self.bn1(self.conv1(img)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in range(1, len(STAGES) + 1):
            transition = getattr(self, f"transition{s}")
            new_xs = []
            for k, layer in enumerate(transition):
                src = xs[k] if k < len(xs) else xs[-1]
                new_xs.append(src if layer is None else layer(src))
            xs = getattr(self, f"stage{s + 1}")(new_xs)
        feats = [
            self.downsample_stage_1(xs[0]),
            self.downsample_stage_2(xs[1]),
            self.downsample_stage_3(xs[2]),
            xs[3],
        ]
        return torch.cat(feats, dim=1)
