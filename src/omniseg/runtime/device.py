"""Devices: the user's option ("auto", "cpu", "cuda", "cuda:N") and where a model lives."""

from __future__ import annotations

import torch

from omniseg.errors import OmnisegError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` = the first CUDA GPU when one is usable, else the CPU.

    Asking for CUDA on a machine without it is an error rather than a silent CPU fallback, so a
    user never waits hours on the wrong device without knowing.
    """
    if isinstance(name, torch.device):
        name = str(name)
    choice = str(name).strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise OmnisegError(
                f"--device {name}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu or --device auto"
            )
        try:
            device = torch.device(choice)
        except RuntimeError as exc:
            raise OmnisegError(f"--device {name}: not a valid device ({exc})") from exc
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OmnisegError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present; "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return device
    raise OmnisegError(f"--device {name}: unknown device; valid: {', '.join(DEVICE_CHOICES)}")


def default_device() -> str:
    """The device ``auto`` means here, as a name (reported by ``omniseg info``): the same rule
    as :func:`resolve_device`, so info never promises a device a run would not use."""
    return resolve_device("auto").type


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters live (inputs follow the model, never a hard-coded device)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
