"""A per-sample reference forward of the ORIGINAL Omni-Seg, written from the spec.

It works directly on a state dict in the original key layout, uses the original's outer-product
controller input (index ((c*6)+t)*4+s) and the grouped-convolution dynamic head, one sample at a
time. It shares no code with omniseg.models, so agreement is evidence of equivalence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GROUPS = 16


def _gn_relu(x, sd, prefix):
    return F.relu(F.group_norm(x, GROUPS, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]))


def _block(x, sd, p, stride):
    out = F.conv2d(_gn_relu(x, sd, f"{p}.gn1"), sd[f"{p}.conv1.weight"], stride=stride, padding=1)
    out = F.conv2d(_gn_relu(out, sd, f"{p}.gn2"), sd[f"{p}.conv2.weight"], padding=1)
    if f"{p}.downsample.2.weight" in sd:
        short = F.conv2d(
            _gn_relu(x, sd, f"{p}.downsample.0"), sd[f"{p}.downsample.2.weight"], stride=stride
        )
    else:
        short = x
    return out + short


def _stage(x, sd, name, n_blocks, stride):
    x = _block(x, sd, f"{name}.0", stride)
    for i in range(1, n_blocks):
        x = _block(x, sd, f"{name}.{i}", 1)
    return x


def reference_forward(sd, image, task_id, scale_id, num_tasks=6, num_scales=4):
    """One image (1,3,H,W) -> (1,2,H,W) logits, exactly as the original computes them."""
    x = F.conv2d(image, sd["conv1.weight"], padding=1)
    x = _stage(x, sd, "layer0", 1, 1)
    skip0 = x
    x = _stage(x, sd, "layer1", 2, 2)
    skip1 = x
    x = _stage(x, sd, "layer2", 2, 2)
    skip2 = x
    x = _stage(x, sd, "layer3", 2, 2)
    skip3 = x
    x = _stage(x, sd, "layer4", 2, 2)
    x = F.conv2d(_gn_relu(x, sd, "fusionConv.0"), sd["fusionConv.2.weight"])
    feat = _gn_relu(x, sd, "GAP.0").mean(dim=(2, 3))[0]  # (256,)
    for name, skip in (
        ("x8_resb", skip3),
        ("x4_resb", skip2),
        ("x2_resb", skip1),
        ("x1_resb", skip0),
    ):
        x = F.interpolate(x, scale_factor=2, mode="nearest") + skip
        x = _stage(x, sd, name, 1, 1)
    head_in = F.conv2d(
        _gn_relu(x, sd, "precls_conv.0"), sd["precls_conv.2.weight"], sd["precls_conv.2.bias"]
    )
    task = torch.zeros(num_tasks)
    task[task_id] = 1
    if "controller_trilinear.weight" in sd:
        scale = torch.zeros(num_scales)
        scale[scale_id] = 1
        cond = torch.outer(torch.outer(feat, task).reshape(-1), scale).reshape(-1)
        w, b = sd["controller_trilinear.weight"], sd["controller_trilinear.bias"]
    else:
        cond = torch.cat([feat, task])
        w, b = sd["controller.weight"], sd["controller.bias"]
    params = F.conv2d(cond[None, :, None, None], w, b)[0, :, 0, 0]  # (162,)
    w1, w2, w3 = params[0:64], params[64:128], params[128:144]
    b1, b2, b3 = params[144:152], params[152:160], params[160:162]
    out = F.relu(F.conv2d(head_in, w1.reshape(8, 8, 1, 1), b1, groups=1))
    out = F.relu(F.conv2d(out, w2.reshape(8, 8, 1, 1), b2, groups=1))
    return F.conv2d(out, w3.reshape(2, 8, 1, 1), b3, groups=1)


def grouped_head(head_in, params):
    """The original's batched head: (N,8,H,W) and (N,162) -> (N,2,H,W) via a groups=N conv."""
    n, _, h, w = head_in.shape
    w1 = params[:, 0:64].reshape(n * 8, 8, 1, 1)
    w2 = params[:, 64:128].reshape(n * 8, 8, 1, 1)
    w3 = params[:, 128:144].reshape(n * 2, 8, 1, 1)
    b1, b2, b3 = (
        params[:, 144:152].reshape(-1),
        params[:, 152:160].reshape(-1),
        params[:, 160:162].reshape(-1),
    )
    x = head_in.reshape(1, n * 8, h, w)
    x = F.relu(F.conv2d(x, w1, b1, groups=n))
    x = F.relu(F.conv2d(x, w2, b2, groups=n))
    x = F.conv2d(x, w3, b3, groups=n)
    return x.reshape(n, 2, h, w)
