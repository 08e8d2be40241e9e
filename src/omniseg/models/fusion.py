"""Inference copies of a model with each BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, so ``conv -> bn`` equals one convolution
with scaled weights and a bias. Folding skips a full pass over every activation it normalises
(the bundled model: 48 BatchNorms, 1.07-1.2x more tiles/s in two A/B runs on a 2-core AVX2
CPU). The folded copy is for inference only: the model itself is never modified, and training
keeps its BatchNorms.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def foldable_pairs(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """(sequential, index) of every Conv2d at ``index`` directly followed by a BatchNorm2d."""
    pairs = []
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index, (first, second) in enumerate(itertools.pairwise(module)):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                pairs.append((module, index))
    return pairs


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BatchNorm folded into its conv (and
    replaced by an identity); ``model`` itself when it has none, so no copy is made."""
    if not foldable_pairs(model):
        return model
    folded = copy.deepcopy(model).eval()
    for sequential, index in foldable_pairs(folded):
        sequential[index] = fuse_conv_bn_eval(sequential[index], sequential[index + 1])
        sequential[index + 1] = nn.Identity()
    return folded


def weights_version(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Identity and in-place version counter of every parameter and buffer: it changes when an
    optimiser step, a BatchNorm statistics update or ``load_state_dict`` touches the weights,
    so a folded copy can be rebuilt only when it went stale."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple((id(t), t._version) for t in tensors)
