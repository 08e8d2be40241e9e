"""The Omni-Seg network: residual U-Net backbone + controller-generated dynamic head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniseg.catalogue import Catalogue, default_catalogue
from omniseg.errors import OmnisegError
from omniseg.models.blocks import make_stage, norm_relu_conv1x1
from omniseg.models.config import InferenceSettings, ModelConfig
from omniseg.models.heads import (
    ScaleTaskController,
    StaticHeads,
    TaskController,
    apply_dynamic_head,
)
from omniseg.models.lite_unet import LiteUNet

IdsLike = Tensor | Sequence[int] | int


class OmniSeg(nn.Module):
    """Scale-aware dynamic segmentation network (and its task-only / multi-head variants).

    ``forward(x, task_ids, scale_ids)``: x is float RGB in [0, 1], (N, 3, H, W), H and W multiples
    of ``config.size_divisor``; ids are per sample. Returns (N, 2, H, W) logits whose softmax
    channel 1 is the foreground probability of each sample's task.
    """

    def __init__(
        self,
        config: ModelConfig,
        inference: InferenceSettings | None = None,
        catalogue: Catalogue | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.inference = inference or InferenceSettings()
        # The classes this model was trained on (names, colours, scales): saved in and read back
        # from its config.json, so its outputs carry its own names.
        self.catalogue = catalogue or default_catalogue()
        if len(self.catalogue.tissues) != config.num_tasks:
            raise OmnisegError(
                f"the tissue catalogue lists {len(self.catalogue.tissues)} tissues but the model "
                f"has {config.num_tasks} tasks"
            )
        c = config
        if c.encoder == "resunet":
            bottleneck = self._build_resunet(c)
        else:
            self.backbone = LiteUNet(c)
            bottleneck = self.backbone.feature_width
        if c.controller == "scale":
            self.controller_trilinear = ScaleTaskController(
                bottleneck, c.num_tasks, c.num_scales, c.head, c.head_init
            )
        elif c.controller == "task":
            self.controller = TaskController(bottleneck, c.num_tasks, c.head, c.head_init)
        else:
            self.heads = StaticHeads(c.head, c.num_tasks, c.head_init)
        # Training sets this to keep (pretrained) BatchNorm statistics fixed in train() mode.
        self.frozen_norm_stats = False

    def _build_resunet(self, c: ModelConfig) -> int:
        """The original backbone, attribute names as in its checkpoints; returns its width."""
        self.conv1 = nn.Conv2d(c.in_channels, c.stem_channels, 3, padding=1, bias=False)
        in_ch = c.stem_channels
        for i, (width, n_blocks) in enumerate(zip(c.widths, c.blocks, strict=True)):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i}", make_stage(in_ch, width, n_blocks, stride, c.groups))
            in_ch = width
        bottleneck = c.widths[-1]
        self.fusionConv = norm_relu_conv1x1(bottleneck, bottleneck, c.groups, bias=False)
        # Decoder: one block per skip, deepest first; names x8_resb ... x1_resb as in the original.
        self.decoder_names: list[str] = []
        for k in range(len(c.widths) - 2, -1, -1):
            out_ch = c.widths[k - 1] if k > 0 else c.stem_channels
            name = f"x{2**k}_resb"
            self.add_module(name, make_stage(in_ch, out_ch, 1, 1, c.groups))
            self.decoder_names.append(name)
            in_ch = out_ch
        self.precls_conv = norm_relu_conv1x1(in_ch, c.head.in_channels, c.groups, bias=True)
        self.GAP = nn.Sequential(
            nn.GroupNorm(c.groups, bottleneck), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)
        )
        return bottleneck

    def train(self, mode: bool = True) -> OmniSeg:
        """As nn.Module.train, but BatchNorm layers stay in eval mode when
        ``frozen_norm_stats`` is set: batches of 8 would overwrite the pretrained statistics."""
        super().train(mode)
        if mode and self.frozen_norm_stats:
            for module in batch_norms(self):
                module.eval()
        return self

    # ----------------------------------------------------------------------------- helpers
    @property
    def head_generator(self) -> nn.Module:
        for name in ("controller_trilinear", "controller", "heads"):
            if hasattr(self, name):
                return getattr(self, name)
        raise AssertionError("model without a head generator")

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input of shape (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        d = self.config.size_divisor
        h, w = x.shape[-2:]
        if h % d or w % d:
            raise ValueError(
                f"input size {h}x{w} is not divisible by {d}: pad or crop H and W to a multiple of {d}"
            )

    def _ids(self, ids: IdsLike, n: int, limit: int, what: str, device: torch.device) -> Tensor:
        t = torch.as_tensor(ids, dtype=torch.long)  # lists stay on the CPU for the range check
        if t.ndim == 0:
            t = t.expand(n)
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(
                f"{what} must hold one id per sample ({n}), got shape {tuple(t.shape)}"
            )
        checkable = t.numel() and t.device.type != "meta" and not torch.compiler.is_compiling()
        if checkable and (int(t.min()) < 0 or int(t.max()) >= limit):
            raise ValueError(f"{what} must lie in 0..{limit - 1}, got {t.tolist()}")
        return t.to(device)

    # ----------------------------------------------------------------------------- stages
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone + decoder: (N, head_in, H, W) head features and (N, C) global image feature."""
        self.check_input(x)
        if self.config.encoder != "resunet":
            return self.backbone(x)
        out = self.conv1(x)
        skips = []
        for i in range(len(self.config.widths)):
            out = getattr(self, f"layer{i}")(out)
            skips.append(out)
        out = self.fusionConv(out)
        gap = self.GAP(out).flatten(1)
        for name, skip in zip(self.decoder_names, reversed(skips[:-1]), strict=True):
            out = F.interpolate(out, scale_factor=2.0, mode="nearest") + skip
            out = getattr(self, name)(out)
        return self.precls_conv(out), gap

    def head_params(self, gap: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        """(N, T, P) head parameters for (N, T) task and scale ids."""
        return self.head_generator(gap, task_ids, scale_ids)

    def forward(self, x: Tensor, task_ids: IdsLike, scale_ids: IdsLike) -> Tensor:
        n = x.shape[0]
        tasks = self._ids(task_ids, n, self.config.num_tasks, "task_ids", x.device)
        scale = self._ids(scale_ids, n, self.config.num_scales, "scale_ids", x.device)
        features, gap = self.encode(x)
        params = self.head_params(gap, tasks[:, None], scale[:, None])
        return apply_dynamic_head(features, params.to(features.dtype), self.config.head)[:, 0]

    def predict_tasks(self, x: Tensor, task_ids: Sequence[int], scale_id: IdsLike) -> Tensor:
        """Run the backbone ONCE and apply the heads of several tasks: (N, T, 2, H, W) logits.

        ``scale_id`` is the magnification slot of the input tiles (one int or one per sample).
        """
        n = x.shape[0]
        task_list = list(task_ids)
        if not task_list:
            raise ValueError("predict_tasks needs at least one task id")
        for t in task_list:
            if not 0 <= int(t) < self.config.num_tasks:
                raise ValueError(f"task id {t} outside 0..{self.config.num_tasks - 1}")
        scale = self._ids(scale_id, n, self.config.num_scales, "scale_id", x.device)
        features, gap = self.encode(x)
        tasks = torch.as_tensor(task_list, dtype=torch.long, device=x.device).expand(n, -1)
        scales = scale[:, None].expand(-1, len(task_list))
        params = self.head_params(gap, tasks, scales)
        return apply_dynamic_head(features, params.to(features.dtype), self.config.head)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (the pretrained encoder's; the rest use GroupNorm)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def foreground_probability(logits: Tensor) -> Tensor:
    """Softmax foreground channel (= sigmoid(l1 - l0)); 0.5 reproduces the rule l1 > l0."""
    return torch.sigmoid(logits[..., 1, :, :].float() - logits[..., 0, :, :].float())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
