"""The ONE way an image becomes a foreground probability map.

``evaluate`` and the whole-slide ``segment`` both call :func:`predict_probability`, so a patch
segmented either way gets the same prediction: /255 scaling (no mean/std), reflect padding to the
network's size divisor and crop back, optional 8-fold dihedral test-time augmentation averaged on
foreground probabilities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from omniseg.data import PatchRecord, read_image
from omniseg.errors import OmnisegError
from omniseg.models import OmniSeg, foreground_probability

PRECISIONS = ("fp32", "bf16")
UINT8_MAX = 255.0
DIHEDRAL_ROTATIONS = 4  # rot90 by 0, 90, 180, 270 degrees, each with and without a flip


def image_to_tensor(image: np.ndarray) -> Tensor:
    """HxWx3 uint8 RGB -> (3, H, W) float32 in [0, 1] (the network was trained on exactly this)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / UINT8_MAX


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise OmnisegError(f"--precision {precision}: unknown; valid: {', '.join(PRECISIONS)}")
    return precision


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def reflect_pad(x: Tensor, bottom: int, right: int) -> Tensor:
    """Mirror-pad (N, C, H, W) at the bottom/right, mirroring again if the pad exceeds the image."""
    while bottom > 0 or right > 0:
        h, w = x.shape[-2:]
        step_b = min(bottom, h - 1)
        step_r = min(right, w - 1)
        if step_b == 0 and step_r == 0:  # a 1-px wide image cannot be mirrored
            return F.pad(x, (0, right, 0, bottom), mode="replicate")
        x = F.pad(x, (0, step_r, 0, step_b), mode="reflect")
        bottom, right = bottom - step_b, right - step_r
    return x


def _dihedral(x: Tensor, k: int, flip: bool) -> Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1))


def _undo_dihedral(x: Tensor, k: int, flip: bool) -> Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1))
    if flip:
        x = torch.flip(x, dims=(-1,))
    return x


def dihedral_transforms(tta: bool) -> list[tuple[int, bool]]:
    """(rotations, flip) pairs: the identity only, or all 8 symmetries of the square."""
    if not tta:
        return [(0, False)]
    return [(k, flip) for flip in (False, True) for k in range(DIHEDRAL_ROTATIONS)]


@contextlib.contextmanager
def inference_mode_of(model: torch.nn.Module) -> Iterator[None]:
    """eval() + no_grad for the block, then the model's previous train/eval mode again."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 kernels exist (CUDA bf16, or oneDNN on a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # private probe missing: assume the fast path
            return True
    return True


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if check_precision(precision) != "bf16":
        return contextlib.nullcontext()
    if not bf16_supported(device):
        # Without native kernels convolutions fall back to a slow emulated path (5x slower than
        # fp32 for the full model at 4 x 512² on an AVX2 CPU, benchmarks/forward_speed.py).
        raise OmnisegError(
            f"--precision bf16: this {device.type} device has no native bf16 support "
            "(needs AVX512-BF16/AMX on CPU); use --precision fp32"
        )
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def predict_probability(
    model: OmniSeg,
    images: Tensor,
    task_ids: Tensor | Sequence[int] | int,
    scale_ids: Tensor | Sequence[int] | int,
    *,
    tta: bool,
    precision: str = "fp32",
) -> Tensor:
    """(N, 3, H, W) float images in [0, 1] -> (N, H, W) float32 foreground probability.

    Runs on the model's device (the result stays there). Any H, W: the batch is reflect-padded
    to ``model.config.size_divisor`` and the prediction cropped back.
    """
    if images.ndim != 4 or images.shape[1] != model.config.in_channels:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError("expected float images in [0, 1]; convert uint8 with image_to_tensor")
    device = model_device(model)
    divisor = model.config.size_divisor
    h, w = images.shape[-2:]
    x = images.to(device=device, dtype=torch.float32)
    x = reflect_pad(x, -h % divisor, -w % divisor)
    total = None
    transforms = dihedral_transforms(tta)
    with inference_mode_of(model), _autocast(device, precision):
        for k, flip in transforms:
            logits = model(_dihedral(x, k, flip), task_ids, scale_ids)
            prob = _undo_dihedral(foreground_probability(logits), k, flip)
            total = prob if total is None else total + prob
    return (total / len(transforms))[..., :h, :w].float().contiguous()


def predict_record(
    model: OmniSeg, record: PatchRecord, *, tta: bool | None = None, precision: str = "fp32"
) -> np.ndarray:
    """(H, W) float32 foreground probability of one patch for its own task and scale.

    ``tta=None`` uses the model folder's default (``model.inference.tta``).
    """
    use_tta = model.inference.tta if tta is None else bool(tta)
    x = image_to_tensor(read_image(record.image))[None]
    prob = predict_probability(
        model, x, [record.task_id], [record.scale_id], tta=use_tta, precision=precision
    )
    return prob[0].cpu().numpy()
