"""Controllers (image feature x task x scale -> head parameters) and the dynamic 1x1 head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniseg.models.config import HEAD_LEAK, HeadSpec


def head_activation(x: Tensor, spec: HeadSpec) -> Tensor:
    if spec.activation == "leaky_relu":
        return F.leaky_relu(x, HEAD_LEAK)
    return F.relu(x)


def split_head_params(params: Tensor, spec: HeadSpec) -> list[tuple[Tensor, Tensor]]:
    """Cut (..., P) parameter vectors into per-layer (weight (..., out, in), bias (..., out))."""
    lead = params.shape[:-1]
    layers, w_at, b_at = [], 0, spec.num_weights
    for out_ch, in_ch in spec.layer_shapes:
        w = params[..., w_at : w_at + out_ch * in_ch].reshape(*lead, out_ch, in_ch)
        b = params[..., b_at : b_at + out_ch]
        layers.append((w, b))
        w_at += out_ch * in_ch
        b_at += out_ch
    return layers


def _first_head_layer(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """(N, C, H, W) features, (N, T, out, C) weights -> (N*T, out, H*W) pre-activations."""
    n, c, h, w = features.shape
    x = torch.einsum("ntoc,ncp->ntop", weight, features.reshape(n, c, h * w)) + bias[..., None]
    return x.reshape(n * weight.shape[1], -1, h * w)


def _next_head_layer(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """This layer's per-(sample, task) 1x1 conv of the previous layer's ReLU'd (N*T, in, P)."""
    nt = x.shape[0]
    return torch.baddbmm(bias.reshape(nt, -1, 1), weight.reshape(nt, *weight.shape[2:]), x)


def apply_dynamic_head(features: Tensor, params: Tensor, spec: HeadSpec) -> Tensor:
    """Run per-sample, per-task 1x1 heads on shared features.

    features: (N, C, H, W); params: (N, T, P). Returns (N, T, out, H, W). Batched matrix products
    replace the original grouped convolution (same maths, no per-sample loop, exportable).
    """
    n, _, h, w = features.shape
    layers = split_head_params(params, spec)
    x = _first_head_layer(features, *layers[0])
    for weight, bias in layers[1:]:
        # rebinding frees the pre-activation: at most two head tensors live
        x = head_activation(x, spec)
        x = _next_head_layer(x, weight, bias)
    return x.reshape(n, params.shape[1], spec.out_channels, h, w)


def head_preactivations(features: Tensor, params: Tensor, spec: HeadSpec) -> list[Tensor]:
    """Pre-ReLU values of every head layer, (N, T, units, H*W) each, the output logits last.

    For diagnosing dead heads (``evaluation.head_health``). Keeps every layer in memory, so it is
    for small inputs, not the inference path (``apply_dynamic_head``).
    """
    n, t = params.shape[:2]
    layers: list[Tensor] = []
    for weight, bias in split_head_params(params, spec):
        if not layers:
            layers.append(_first_head_layer(features, weight, bias))
        else:
            layers.append(_next_head_layer(head_activation(layers[-1], spec), weight, bias))
    return [x.reshape(n, t, x.shape[1], x.shape[2]) for x in layers]


def head_init_vector(spec: HeadSpec, hidden_bias: float, generator=None) -> Tensor:
    """A sane starting head: conv-like U(+-1/sqrt(fan_in)) weights, small positive hidden biases.

    Used as the controllers' bias so every generated head starts as a working MLP whose hidden ReLUs
    are alive. With PyTorch's default init the generated heads start near zero and, on small
    data, whole heads can die (a DT head predicting nothing was seen in calibration runs).
    """
    vec = torch.zeros(spec.num_params)
    layers = split_head_params(vec, spec)
    for i, (weight, bias) in enumerate(layers):
        bound = 1.0 / math.sqrt(weight.shape[-1])
        weight.uniform_(-bound, bound, generator=generator)
        bias.fill_(hidden_bias if i < len(layers) - 1 else 0.0)
    return vec


def init_controller(linear: nn.Linear, spec: HeadSpec, mode: str) -> None:
    """``default``: PyTorch's init (the original). ``head``: bias = a sane head, small weights."""
    if mode == "default":
        return
    with torch.no_grad():
        linear.weight.mul_(CONTROLLER_WEIGHT_SCALE)
        linear.bias.copy_(head_init_vector(spec, HIDDEN_BIAS_INIT))


CONTROLLER_WEIGHT_SCALE = 0.1  # image-feature dependence starts small next to the base head
HIDDEN_BIAS_INIT = 0.1  # keeps hidden ReLUs of fresh heads in their active range


class ScaleTaskController(nn.Module):
    """Omni-Seg's trilinear controller: params = W[task, scale] @ f + b.

    The original builds the f (x) task (x) scale outer product (feat*T*S wide, index
    ``(c*T + t)*S + s``) and applies one linear map. With one-hot codes that equals selecting one of
    T*S linear maps, which is what this does without materialising the outer product.
    """

    def __init__(
        self, feat: int, num_tasks: int, num_scales: int, spec: HeadSpec, init: str = "default"
    ) -> None:
        super().__init__()
        self.feat, self.num_tasks, self.num_scales = feat, num_tasks, num_scales
        self.linear = nn.Linear(feat * num_tasks * num_scales, spec.num_params)
        init_controller(self.linear, spec, init)

    def all_params(self, f: Tensor) -> Tensor:
        """(N, T*S, P): the parameters for every (task, scale) pair, index t*S + s."""
        weight = self.linear.weight.reshape(-1, self.feat, self.num_tasks * self.num_scales)
        return torch.einsum("nc,pck->nkp", f, weight) + self.linear.bias

    def forward(self, f: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        """f: (N, C); task_ids, scale_ids: (N, T). Returns (N, T, P)."""
        table = self.all_params(f)
        index = (task_ids * self.num_scales + scale_ids)[..., None].expand(-1, -1, table.shape[-1])
        return torch.gather(table, 1, index)


class TaskController(nn.Module):
    """DoDNet / original "ns" controller: linear map of concat(f, one-hot task). Scale is ignored."""

    def __init__(self, feat: int, num_tasks: int, spec: HeadSpec, init: str = "default") -> None:
        super().__init__()
        self.feat, self.num_tasks = feat, num_tasks
        self.linear = nn.Linear(feat + num_tasks, spec.num_params)
        init_controller(self.linear, spec, init)

    def forward(self, f: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        del scale_ids  # accepted for a uniform interface, deliberately unused
        w_feat = self.linear.weight[:, : self.feat]
        w_task = self.linear.weight[:, self.feat :]  # (P, T): one-hot selects a column
        shared = f @ w_feat.T + self.linear.bias  # (N, P)
        return shared[:, None, :] + w_task.T[task_ids]


class StaticHeads(nn.Module):
    """Multi-head baseline: one learned head per task, no controller. Scale is ignored."""

    def __init__(self, spec: HeadSpec, num_tasks: int, init: str = "default") -> None:
        super().__init__()
        self.spec, self.init = spec, init
        self.params = nn.Parameter(torch.empty(num_tasks, spec.num_params))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for row in self.params:
                if self.init == "head":
                    row.copy_(head_init_vector(self.spec, HIDDEN_BIAS_INIT))
                    continue
                # Same distribution as a freshly built nn.Conv2d 1x1 layer: U(+-1/sqrt(fan_in)).
                for weight, bias in split_head_params(row, self.spec):
                    bound = 1.0 / math.sqrt(weight.shape[-1])
                    weight.uniform_(-bound, bound)
                    bias.uniform_(-bound, bound)

    def forward(self, f: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        del f, scale_ids
        return self.params[task_ids]
