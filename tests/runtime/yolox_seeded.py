"""A YOLOX-S-shaped network with seeded weights, exported to ONNX, for testing the YOLOX detector without the real file.

The topology follows the YOLOX paper and its published S model: a Focus stem (space-to-depth), CSPDarknet
(dark2…dark5 with CSP layers of bottlenecks and an SPP block), a PAFPN neck (top-down then bottom-up) and the
decoupled head (1×1 stem, two 3×3 convolutions each for classes and for box + objectness), SiLU activations,
batch norm. Widths are divided (``width``) to keep the file small; the input (1, 3, 640, 640) and the output
(1, 8400, 85): per cell of the strides 8, 16, 32, the raw box offsets, sigmoid objectness and 80 sigmoid class
scores, are those of the real export (``decode_in_inference=False``). Written from the paper's description for
these tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

NUM_CLASSES = 80
INPUT_HW = (640, 640)
GAIN = 1.3
HEAD_GAIN = 30.0
SCORE_BIAS = 1.5


class ConvBnAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.a, self.b, self.shortcut = ConvBnAct(c, c, 1), ConvBnAct(c, c, 3), shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        return x + y if self.shortcut else y


class CSP(nn.Module):
    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True) -> None:
        super().__init__()
        mid = cout // 2
        self.main, self.side = ConvBnAct(cin, mid, 1), ConvBnAct(cin, mid, 1)
        self.blocks = nn.Sequential(*(Bottleneck(mid, shortcut) for _ in range(n)))
        self.fuse = ConvBnAct(2 * mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.blocks(self.main(x)), self.side(x)], dim=1))


class SPP(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = ConvBnAct(c, c // 2, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.fuse = ConvBnAct(c // 2 * 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.fuse(torch.cat([x, *(p(x) for p in self.pools)], dim=1))


class YoloxShaped(nn.Module):
    """YOLOX-S topology; ``width`` = YOLOX-S's 0.5 width multiplier divided further (channels of 64·width·…)."""

    def __init__(self, width: float = 0.0625, depth: int = 1) -> None:
        super().__init__()
        c = [max(4, int(64 * width * m)) for m in (1, 2, 4, 8, 16)]  # stem, dark2, dark3, dark4, dark5
        self.stem = ConvBnAct(12, c[0], 3)
        self.dark2 = nn.Sequential(ConvBnAct(c[0], c[1], 3, 2), CSP(c[1], c[1], depth))
        self.dark3 = nn.Sequential(ConvBnAct(c[1], c[2], 3, 2), CSP(c[2], c[2], 3 * depth))
        self.dark4 = nn.Sequential(ConvBnAct(c[2], c[3], 3, 2), CSP(c[3], c[3], 3 * depth))
        self.dark5 = nn.Sequential(ConvBnAct(c[3], c[4], 3, 2), SPP(c[4]), CSP(c[4], c[4], depth, shortcut=False))
        self.lateral0 = ConvBnAct(c[4], c[3], 1)
        self.c3_p4 = CSP(2 * c[3], c[3], depth, shortcut=False)
        self.reduce1 = ConvBnAct(c[3], c[2], 1)
        self.c3_p3 = CSP(2 * c[2], c[2], depth, shortcut=False)
        self.bu2 = ConvBnAct(c[2], c[2], 3, 2)
        self.c3_n3 = CSP(2 * c[2], c[3], depth, shortcut=False)
        self.bu1 = ConvBnAct(c[3], c[3], 3, 2)
        self.c3_n4 = CSP(2 * c[3], c[4], depth, shortcut=False)
        hid = c[2]
        self.stems = nn.ModuleList(ConvBnAct(cin, hid, 1) for cin in (c[2], c[3], c[4]))
        self.cls_convs = nn.ModuleList(nn.Sequential(ConvBnAct(hid, hid, 3), ConvBnAct(hid, hid, 3)) for _ in range(3))
        self.reg_convs = nn.ModuleList(nn.Sequential(ConvBnAct(hid, hid, 3), ConvBnAct(hid, hid, 3)) for _ in range(3))
        self.cls_preds = nn.ModuleList(nn.Conv2d(hid, NUM_CLASSES, 1) for _ in range(3))
        self.reg_preds = nn.ModuleList(nn.Conv2d(hid, 4, 1) for _ in range(3))
        self.obj_preds = nn.ModuleList(nn.Conv2d(hid, 1, 1) for _ in range(3))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], dim=1)  # Focus
        d3 = self.dark3(self.dark2(self.stem(x)))
        d4 = self.dark4(d3)
        d5 = self.dark5(d4)
        f0 = self.lateral0(d5)
        f1 = self.reduce1(self.c3_p4(torch.cat([self.up(f0), d4], dim=1)))
        p3 = self.c3_p3(torch.cat([self.up(f1), d3], dim=1))
        p4 = self.c3_n3(torch.cat([self.bu2(p3), f1], dim=1))
        p5 = self.c3_n4(torch.cat([self.bu1(p4), f0], dim=1))
        levels = []
        for i, feature in enumerate((p3, p4, p5)):
            h = self.stems[i](feature)
            cls = self.cls_preds[i](self.cls_convs[i](h))
            r = self.reg_convs[i](h)
            out = torch.cat([self.reg_preds[i](r), self.obj_preds[i](r).sigmoid(), cls.sigmoid()], dim=1)
            levels.append(out.flatten(2))
        return torch.cat(levels, dim=2).permute(0, 2, 1)


def seeded_model(seed: int = 0, width: float = 0.0625) -> YoloxShaped:
    """The network with weights drawn from ``seed``: varied scores, boxes of a few cells, overlapping neighbours.

    ``width`` 0.5 is YOLOX-S's own (8.9 M parameters, as the published file's 35.9 MB of float32 weights).
    """
    model = YoloxShaped(width).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 4:
                fan_in = param.shape[1] * param.shape[2] * param.shape[3]
                param.copy_(torch.randn(param.shape, generator=generator) * (GAIN / fan_in**0.5))
            elif name.endswith("bn.weight"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
        model.stem.conv.weight.div_(128.0)  # the input is 0…255
        for head in model.reg_preds:
            head.weight.mul_(HEAD_GAIN / 8)
            head.bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.6]))  # boxes of ~3–5 cells: neighbours overlap
        for head in (*model.obj_preds, *model.cls_preds):
            head.weight.mul_(HEAD_GAIN)  # spread the scores across (0, 1)
            head.bias[0] += SCORE_BIAS  # objectness, or class 0 (person)
    return model


def export_seeded_yolox(path: Path, seed: int = 0, width: float = 0.0625) -> Path:
    """Write the seeded network as ``path`` (ONNX, input ``images`` (1, 3, 640, 640), output ``output``)."""
    model = seeded_model(seed, width)
    dummy = torch.zeros(1, 3, *INPUT_HW)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["images"], output_names=["output"], opset_version=17, dynamo=False
    )
    return path
