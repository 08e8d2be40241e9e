"""Adapting a pretrained encoder's BatchNorm statistics to the training patches (AdaBN).

Stained tissue is not ImageNet, and batches of 8 are too few to learn BatchNorm statistics
while training. So, once before the first step, the statistics are re-estimated as the exact
average over every training patch (Li et al. 2016, "Revisiting Batch Normalization For Practical
Domain Adaptation") and then kept frozen. Measured (scripts/bn_statistics_check.py): it lowers
the first stage's mean |activation| on kidney patches from 6.65 to 5.27 (ReLU6 clips at 6); with
the final controller it made no difference to fitting one batch, and its effect on val is not
measured separately (every omniseg-lite0 run of docs/model-card.md used it).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from omniseg.models.network import batch_norms


@torch.no_grad()
def recalibrate_norm_stats(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace every BatchNorm's running statistics by their average over ``batches``.

    ``batches``: (N, 3, H, W) images in [0, 1] on the model's device. Only the statistics change
    (no parameter, no gradient). Returns the number of batches seen (0 if the model has no
    BatchNorm, in which case nothing is run).
    """
    norms = batch_norms(model)
    if not norms:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in norms]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the exact mean over all batches
        bn.train()
    seen = 0
    try:
        for images in batches:
            model.encode(images)
            seen += 1
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    return seen


def calibration_batches(
    records, patch_size: int, batch_size: int, device: torch.device, channels_last: bool
):
    """Every training patch once, centre-cropped to ``patch_size``, unaugmented, in order.

    A last batch of one patch joins the one before (a 1-sample batch has 1x1 deepest maps at small
    sizes, on which BatchNorm cannot compute a variance).
    """
    from omniseg.data.augment import AugmentConfig
    from omniseg.data.dataset import PatchDataset

    dataset = PatchDataset(records, patch_size, AugmentConfig(enabled=False), seed=0)
    size = max(2, batch_size)
    starts = list(range(0, len(dataset), size))
    if len(starts) > 1 and len(dataset) - starts[-1] == 1:
        starts.pop()
    for lo, hi in zip(starts, [*starts[1:], len(dataset)], strict=True):
        images = torch.stack([dataset[i]["image"] for i in range(lo, hi)]).to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images


def restrict_training(model: nn.Module, parts: str, tasks: tuple[int, ...]) -> None:
    """Which weights may learn (``finetune.train_parts``).

    "all": every weight (the encoder at ``encoder_lr_scale``). "decoder": all but the encoder.
    "task": only the controller's weights of ``tasks`` (the scale-aware controller keeps one
    block per task x scale): every other task's head, and so its output, stays exactly as it
    was, by construction. Frozen weights get ``requires_grad = False``; the other tasks' blocks
    get zero gradients (so the optimiser, without weight decay, leaves them bit-identical).
    """
    from omniseg.errors import OmnisegError
    from omniseg.training.optim import ENCODER_PREFIX

    if parts == "all":
        return
    if parts == "decoder":
        for name, p in model.named_parameters():
            if name.startswith(ENCODER_PREFIX):
                p.requires_grad_(False)
        return
    controller = getattr(model, "controller_trilinear", None)
    if controller is None:
        raise OmnisegError(
            "finetune.train_parts=task needs the scale-aware controller (omniseg, omniseg-lite0); "
            "use train_parts=decoder or all for this model"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    weight = controller.linear.weight  # (P, feat * T * S), column (c * T + t) * S + s
    weight.requires_grad_(True)
    keep = torch.zeros(controller.feat, controller.num_tasks, controller.num_scales)
    keep[:, list(tasks), :] = 1.0
    mask = keep.reshape(1, -1).to(weight.device, weight.dtype)
    weight.register_hook(lambda grad: grad * mask)
