"""Numeric precision: the choices, the one native-bf16 probe, and the autocast context.

Without native bf16 kernels (CPUs without AVX512-BF16/AMX) oneDNN emulates bf16 convolutions:
the full model at 4 x 512² ran ~5x slower than fp32 on an AVX2 CPU
(``benchmarks/forward_speed.py``), so inference refuses emulated bf16 and training warns.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from omniseg.errors import OmnisegError

PRECISIONS = ("fp32", "bf16")
AUTO = "auto"


def native_bf16(device: torch.device) -> bool:
    """True when bf16 convolutions run on native kernels: a CUDA GPU with bf16, or oneDNN on a
    CPU with AVX512-BF16/AMX. A missing probe counts as no (fp32 is never the slow choice)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def auto_precision(device: torch.device, *, cpu_bf16: bool = True) -> str:
    """What ``auto`` means here: bf16 where it runs natively (a CUDA GPU with bf16, or, with
    ``cpu_bf16``, a CPU with AVX512-BF16/AMX), fp32 elsewhere."""
    if device.type == "cpu" and not cpu_bf16:
        return "fp32"
    return "bf16" if device.type in ("cpu", "cuda") and native_bf16(device) else "fp32"


def resolve_precision(
    name: str,
    device: torch.device,
    *,
    allow_emulated: bool = False,
    cpu_auto_bf16: bool = True,
    option: str = "--precision",
) -> str:
    """'fp32' or 'bf16' for this device; ``auto`` per :func:`auto_precision`.

    Emulated bf16 is an error unless ``allow_emulated`` (then a warning). Training passes
    ``cpu_auto_bf16=False``: its ``auto`` keeps fp32 on every CPU.
    """
    choices = (*PRECISIONS, AUTO)
    if name not in choices:
        raise OmnisegError(f"{option} {name}: unknown; valid: {', '.join(choices)}")
    if name == AUTO:
        return auto_precision(device, cpu_bf16=cpu_auto_bf16)
    if name == "bf16" and not native_bf16(device):
        message = (
            f"{option} bf16: this {device.type} device has no native bf16 support (needs "
            "AVX512-BF16/AMX on CPU, or a GPU), so bf16 is emulated and many times slower; "
            f"use {option} fp32 or auto"
        )
        if not allow_emulated:
            raise OmnisegError(message)
        warnings.warn(message, stacklevel=2)
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for 'bf16', nothing for 'fp32'."""
    if precision not in PRECISIONS:
        raise OmnisegError(f"--precision {precision}: unknown; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
