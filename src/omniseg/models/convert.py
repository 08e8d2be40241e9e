"""Import checkpoints of the original Omni-Seg code (``unet2D_Dodnet_scale`` / ``unet2D_ns``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import Tensor

from omniseg.errors import OmnisegError
from omniseg.models.blocks import make_stage
from omniseg.models.network import OmniSeg
from omniseg.models.pretrained import save_pretrained
from omniseg.models.registry import create_model

# Blocks the original defines but never calls: needed only to load its state dicts strictly.
# name -> (in, out, stride)
UNUSED_MODULES = {
    "add_0": (32, 32, 2),
    "add_1": (32, 32, 4),
    "x1_resb_add0": (32, 32, 1),
    "x1_resb_add1": (32, 32, 1),
}
VARIANTS = {"controller_trilinear": "omniseg", "controller": "omniseg-task"}


def _ours_to_original(key: str) -> str:
    return key.replace("controller_trilinear.linear.", "controller_trilinear.").replace(
        "controller.linear.", "controller."
    )


def unused_state(groups: int = 16) -> dict[str, Tensor]:
    state = {}
    for name, (i, o, s) in UNUSED_MODULES.items():
        for k, v in make_stage(i, o, 1, s, groups).state_dict().items():
            state[f"{name}.{k}"] = v
    return state


def original_layout(architecture: str) -> dict[str, tuple[int, ...]]:
    """Every key and shape of an original state dict for ``omniseg`` or ``omniseg-task``."""
    model = create_model(architecture)
    layout = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape)
        if key.startswith(("controller_trilinear.linear.weight", "controller.linear.weight")):
            shape = (*shape, 1, 1)  # the original controllers are 1x1 convolutions
        layout[_ours_to_original(key)] = shape
    layout.update({k: tuple(v.shape) for k, v in unused_state().items()})
    return layout


def to_original_state_dict(model: OmniSeg) -> dict[str, Tensor]:
    """Our weights in the original key layout (unused modules filled with fresh values)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("controller_trilinear.linear.weight") or key == "controller.linear.weight":
            value = value[:, :, None, None]
        state[_ours_to_original(key)] = value.clone()
    state.update(unused_state())
    return state


def _unwrap(obj: object, source: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # FP16 (apex) wrapper {"model", "optimizer", "amp"}
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise OmnisegError(f"{source}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_original_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read an original .pth safely (weights_only=True: code in the pickle is never run)."""
    source = Path(path)
    if not source.is_file():
        raise OmnisegError(f"{source}: file not found")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # PyTorch's own message advises weights_only=False: never repeat that for a file we
        # refused, it would run whatever code the pickle holds.
        raise OmnisegError(
            f"{source}: refused to load: the file holds objects other than tensors (possibly "
            "code); only plain state dicts of tensors are accepted"
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged or non-PyTorch file
        raise OmnisegError(
            f"{source}: not a readable PyTorch checkpoint ({type(exc).__name__}); pass an "
            "original Omni-Seg .pth state dict"
        ) from exc
    return _unwrap(obj, source)


def detect_variant(state: dict[str, Tensor], source: Path) -> str:
    found = [arch for key, arch in VARIANTS.items() if f"{key}.weight" in state]
    if len(found) != 1:
        raise OmnisegError(
            f"{source}: cannot tell the variant: expected exactly one of "
            f"controller_trilinear.weight (scale-aware) or controller.weight (task-only)"
        )
    return found[0]


def convert_state_dict(state: dict[str, Tensor], source: Path) -> OmniSeg:
    """Strictly check ``state`` against the original layout and load it into our model."""
    architecture = detect_variant(state, source)
    layout = original_layout(architecture)
    missing = sorted(set(layout) - set(state))
    extra = sorted(set(state) - set(layout))
    bad = sorted(
        f"{k} {tuple(state[k].shape)} != expected {layout[k]}"
        for k in set(layout) & set(state)
        if tuple(state[k].shape) != layout[k]
    )
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing keys: {missing}")
        if extra:
            parts.append(f"unexpected keys: {extra}")
        if bad:
            parts.append(f"wrong shapes: {bad}")
        raise OmnisegError(
            f"{source}: does not match the original {architecture} layout; " + "; ".join(parts)
        )
    model = create_model(architecture)
    ours = {}
    for key in model.state_dict():
        value = state[_ours_to_original(key)].float()
        ours[key] = value.reshape(model.state_dict()[key].shape)
    model.load_state_dict(ours, strict=True)
    return model.eval()


def convert_checkpoint(src: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Original .pth -> omniseg model folder (unused modules dropped)."""
    source = Path(src)
    state = load_original_state_dict(source)
    model = convert_state_dict(state, source)
    return save_pretrained(model, out_dir, extra={"converted_from": source.name})
