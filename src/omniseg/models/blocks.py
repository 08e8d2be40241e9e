"""Building blocks of the Omni-Seg residual U-Net (pre-activation GroupNorm blocks)."""

from __future__ import annotations

from torch import Tensor, nn


class SubsampledPointwiseConv(nn.Conv2d):
    """A 1x1 convolution with stride s, computed as ``x[..., ::s, ::s]`` then a stride-1 1x1
    convolution: the same output and gradients, less work, and a crash avoided.

    Why: in torch 2.13.0+cpu the backward of a 1x1 stride-2 Conv2d on channels_last input with
    fewer than 16 input channels crashes ("double free or corruption", exit 134/139) in oneDNN's
    AVX-512 code path; AVX2-only CPUs never run it (reproduction: docs/robustness.md). The
    weight has the shape and state-dict name of the strided conv it replaces.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, bias: bool = False) -> None:
        super().__init__(in_ch, out_ch, 1, stride=1, bias=bias)
        self.subsample = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.subsample > 1:
            x = x[..., :: self.subsample, :: self.subsample]
        return super().forward(x)


class ResidualBlock(nn.Module):
    """GN -> ReLU -> conv3x3 (stride), GN -> ReLU -> conv3x3, plus identity or GN-ReLU-1x1 shortcut.

    Attribute names match the original ``NoBottleneck`` so original checkpoints load by name.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.GroupNorm(groups, in_ch),
                nn.ReLU(inplace=True),
                SubsampledPointwiseConv(in_ch, out_ch, stride),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu(self.gn1(x)))
        out = self.conv2(self.relu(self.gn2(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def make_stage(in_ch: int, out_ch: int, n_blocks: int, stride: int, groups: int) -> nn.Sequential:
    """One block that changes stride/width, then ``n_blocks - 1`` identity blocks."""
    layers = [ResidualBlock(in_ch, out_ch, stride, groups)]
    layers += [ResidualBlock(out_ch, out_ch, 1, groups) for _ in range(n_blocks - 1)]
    return nn.Sequential(*layers)


def norm_relu_conv1x1(in_ch: int, out_ch: int, groups: int, bias: bool) -> nn.Sequential:
    """GN -> ReLU -> 1x1 conv (indices 0 and 2 hold parameters, as in the original)."""
    return nn.Sequential(
        nn.GroupNorm(groups, in_ch), nn.ReLU(inplace=True), nn.Conv2d(in_ch, out_ch, 1, bias=bias)
    )
