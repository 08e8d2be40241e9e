"""Model folders: ``config.json`` + ``model.safetensors``. Loading never unpickles anything."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from omniseg.atomic import atomic_folder
from omniseg.catalogue import catalogue_from_dict, default_catalogue
from omniseg.errors import OmnisegError
from omniseg.models.config import InferenceSettings, ModelConfig
from omniseg.models.network import OmniSeg

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "omniseg-model"
FORMAT_VERSION = 1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_pretrained(
    model: OmniSeg,
    directory: str | os.PathLike,
    *,
    storage_dtype: torch.dtype = torch.float32,
    extra: dict | None = None,
) -> Path:
    """Write a model folder atomically (a temporary sibling folder renamed into place)."""
    from omniseg import __version__

    target = Path(directory)
    with atomic_folder(target) as tmp:
        state = {
            k: v.detach()
            .to("cpu", storage_dtype if v.is_floating_point() else v.dtype)
            .contiguous()
            for k, v in model.state_dict().items()
        }
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": model.config.architecture,
            "model": model.config.to_dict(),
            "inference": model.inference.to_dict(),
            "catalogue": getattr(model, "catalogue", default_catalogue()).to_dict(),
            "storage_dtype": str(storage_dtype).removeprefix("torch."),
            "omniseg_version": __version__,
            "sha256": sha256_of(tmp / WEIGHTS_NAME),
            **(extra or {}),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


def check_replaceable_model_dir(directory: str | os.PathLike) -> None:
    """``--overwrite`` may replace a model folder, never any other folder: it must be an omniseg
    model folder holding nothing but its config and weights."""
    directory = Path(directory)
    if not directory.is_dir():
        problems = ["(not a folder)"]
    else:
        problems = sorted(
            p.name for p in directory.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME)
        )
        try:
            read_model_config(directory)
        except OmnisegError:
            problems.append("(no omniseg config.json)")
    if problems:
        raise OmnisegError(
            f"{directory}: --overwrite refused: not an omniseg model folder or it holds other "
            f"files ({', '.join(problems[:5])}); nothing was changed. Choose another output folder"
        )


def read_model_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise OmnisegError(
            f"{path}: no model config found; pass a model folder holding {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} (e.g. RUN_DIR/model from `omniseg train`)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OmnisegError(f"{path}: not valid JSON ({exc}); re-export the model folder") from exc
    if raw.get("format") != FORMAT:
        raise OmnisegError(f"{path}: not an omniseg model config (format={raw.get('format')!r})")
    return raw


FLOATS = ("F16", "BF16", "F32", "F64")  # safetensors dtype names of float tensors


def check_shapes(config: ModelConfig, weights: Path) -> None:
    """The network config.json describes must have exactly the tensors of the weights file.

    Built on the meta device (no memory) and compared with the safetensors header, so a config
    asking for an absurd network fails in milliseconds instead of allocating gigabytes first.
    """
    with torch.device("meta"):
        state = OmniSeg(config).state_dict()
    wanted = {k: tuple(v.shape) for k, v in state.items()}
    try:
        with safe_open(str(weights), framework="pt") as fh:
            stored = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
            dtypes = {k: fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise OmnisegError(f"{weights}: unreadable safetensors file ({exc})") from exc
    for name in sorted(set(wanted) | set(stored)):
        floating = name in state and state[name].is_floating_point()
        if floating and name in dtypes and dtypes[name] not in FLOATS:
            raise OmnisegError(
                f"{weights}: tensor {name} is stored as {dtypes.get(name)}, not floating point; "
                "weights quantised or cast to integers or bool would predict nothing: save the "
                "model again from its float weights"
            )
        if wanted.get(name) != stored.get(name):
            raise OmnisegError(
                f"{weights}: does not fit config.json's {config.architecture} (tensor {name}: "
                f"config {wanted.get(name)}, weights {stored.get(name)}); the folder's config.json "
                "and model.safetensors belong to different models"
            )


def load_pretrained(
    directory: str | os.PathLike, *, device: str | torch.device = "cpu", verify: bool = True
) -> OmniSeg:
    """Load a model folder; the weights' SHA-256 must match config.json.

    ``verify=False`` (``--allow-unverified``) loads a folder whose config.json has no SHA-256
    (hand-made or from an old version); a recorded hash that does not match is always an error.
    """
    directory = Path(directory)
    raw = read_model_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise OmnisegError(f"{weights}: weights file missing from the model folder")
    recorded = raw.get("sha256")
    if verify and not recorded:
        raise OmnisegError(
            f"{directory / CONFIG_NAME}: no 'sha256' of the weights, so they cannot be verified; "
            "re-save the folder with omniseg, or pass --allow-unverified if you trust it"
        )
    if recorded and sha256_of(weights) != recorded:
        raise OmnisegError(
            f"{weights}: SHA-256 does not match config.json (corrupt or replaced weights); "
            "re-download or re-export the model folder"
        )
    try:
        config = ModelConfig.from_dict(raw["model"])
        inference = InferenceSettings.from_dict(raw.get("inference", {}))
        saved = raw.get("catalogue")
        catalogue = catalogue_from_dict(saved) if saved is not None else default_catalogue()
        check_shapes(config, weights)  # before any memory is taken for the network
        model = OmniSeg(config, inference, catalogue)
    except OmnisegError as exc:
        raise OmnisegError(f"{directory / CONFIG_NAME}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise OmnisegError(f"{directory / CONFIG_NAME}: invalid model section ({exc!r})") from exc
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise OmnisegError(f"{weights}: unreadable safetensors file ({exc})") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise OmnisegError(f"{weights}: weights do not fit {config.architecture}: {exc}") from exc
    return model.to(device).eval()
