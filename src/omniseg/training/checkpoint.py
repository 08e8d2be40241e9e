"""Resumable training state in ``RUN_DIR/last/`` (written atomically, loaded without pickle code).

``state.pt`` is a ``torch.save`` of plain dicts, lists, numbers and tensors only, so it loads with
``torch.load(weights_only=True)``; ``meta.json`` repeats step/epoch for humans. The folder is
built beside its target and renamed into place, so a hard stop leaves the previous checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from omniseg.atomic import atomic_folder, backup_of, write_synced
from omniseg.errors import OmnisegError

STATE_NAME = "state.pt"
META_NAME = "meta.json"
STATE_VERSION = 1


def capture_rng() -> dict:
    """Python, numpy (legacy global) and torch RNG states as plain data."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu(value):
    """Deep copy of a state structure with every tensor on the CPU (loadable anywhere)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(v) for v in value)
    return value


def save_state(directory: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (plain data + tensors) to ``directory`` atomically."""
    target = Path(directory)
    with atomic_folder(target) as tmp:
        payload = {"version": STATE_VERSION, **_cpu(state)}
        # Serialised in memory first: torch.save on a full disk raises an opaque RuntimeError
        # ("unexpected pos"), a plain write raises ENOSPC, which is reported as a full disk.
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        try:
            write_synced(tmp / STATE_NAME, buffer.getbuffer())
        except OSError as exc:  # name the checkpoint, not the hidden temp folder
            raise OSError(exc.errno, exc.strerror, str(target / STATE_NAME)) from exc
        meta = {
            k: state[k] for k in ("step", "epoch", "batch_in_epoch", "best_metric") if k in state
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return target


def load_state(directory: str | os.PathLike) -> dict:
    path = Path(directory) / STATE_NAME
    backup = backup_of(Path(directory)) / STATE_NAME
    if not path.is_file() and backup.is_file():
        path = backup  # a stop between the two renames of save_state
    if not path.is_file():
        raise OmnisegError(
            f"{path}: no resumable state; run without --resume (or with --overwrite) to start over"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OmnisegError(f"{path}: unreadable training state ({exc}); use --overwrite") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise OmnisegError(f"{path}: unsupported training state version; use --overwrite")
    return state
