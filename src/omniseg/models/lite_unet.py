"""EfficientNet-Lite encoder + U-Net decoder: the backbone of the ``omniseg-lite0`` models.

It plays the part of the residual U-Net in ``OmniSeg.encode``: it returns the head features
(``config.head.in_channels`` wide, full resolution) and the controller's image feature, the
global average of the deepest encoder map after GroupNorm + ReLU, exactly as the original pools
its bottleneck. The normalisation matters: the raw ImageNet features of a patch average |1.5|
and vary 50x more between images than the original's pooled feature, which made every image's
generated head different and the predictions all-or-nothing per image (docs/model-card.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniseg.errors import OmnisegError
from omniseg.models.blocks import norm_relu_conv1x1
from omniseg.models.config import ModelConfig
from omniseg.models.efficientnet_lite import EfficientNetLiteEncoder

# The encoder was trained on ImageNet images scaled to [-1, 1]; inputs arrive in [0, 1].
INPUT_CENTER = 0.5
INPUT_SCALE = 0.5


class ConvGNReLU(nn.Sequential):
    """3x3 conv -> GroupNorm -> ReLU: batch-size independent, unlike the encoder's BatchNorm."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_ch),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip (if any), two 3x3 conv-GN-ReLU (the SMP U-Net block)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.conv1 = ConvGNReLU(in_ch + skip_ch, out_ch, groups)
        self.conv2 = ConvGNReLU(out_ch, out_ch, groups)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class LiteUNet(nn.Module):
    """Features at strides 2..32 -> one decoder block per stride back to full resolution."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.encoder = EfficientNetLiteEncoder(config.encoder, config.in_channels)
        channels = self.encoder.feature_channels
        if tuple(config.widths) != channels:
            raise OmnisegError(
                f"encoder {config.encoder} gives features of widths {list(channels)}; the model "
                f"config says {list(config.widths)}: set widths to the encoder's"
            )
        skips = (*reversed(channels[:-1]), 0)  # deepest skip first; the last block has none
        blocks, in_ch = [], channels[-1]
        for skip_ch, out_ch in zip(skips, config.decoder_channels, strict=True):
            blocks.append(DecoderBlock(in_ch, skip_ch, out_ch, config.groups))
            in_ch = out_ch
        self.decoder = nn.ModuleList(blocks)
        self.precls_conv = norm_relu_conv1x1(in_ch, config.head.in_channels, config.groups, True)
        self.feature_width = channels[-1]
        self.gap_norm = nn.Sequential(nn.GroupNorm(config.groups, channels[-1]), nn.ReLU())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder((x - INPUT_CENTER) / INPUT_SCALE)
        gap = self.gap_norm(features[-1]).float().mean(dim=(2, 3)).to(features[-1].dtype)
        out = features[-1]
        skips = [*reversed(features[:-1]), None]
        for block, skip in zip(self.decoder, skips, strict=True):
            out = block(out, skip)
        return self.precls_conv(out), gap
