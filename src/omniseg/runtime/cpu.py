"""What this machine's CPU can do, read at run time (never assumed): the model name and the
instruction-set flags that decide which torch/oneDNN kernels run, and whether bf16 is native.
Recorded in summary.json and in every benchmark's JSON."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

import torch

# AVX2: fp32 kernels; AVX-512 (F): other conv kernels (some crash, docs/robustness.md);
# AVX512-BF16 / AMX: native bf16 (without them bf16 is emulated: ~5x slower than fp32 on an AVX2
# CPU, benchmarks/forward_speed.py).
# VNNI / AMX-INT8: int8 dot products in one instruction (runtime/choice.py).
CPU_FLAGS = (
    "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni", "amx_int8",
)  # fmt: skip


@cache
def _proc_cpuinfo() -> tuple[str, frozenset[str]]:
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return name, flags
    for line in text.splitlines():
        if line.startswith("flags") and not flags:
            flags = frozenset(line.split(":", 1)[1].split())
        elif line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
    return name, flags


def cpu_capabilities() -> dict:
    """{"model", "cores", "threads", flag: bool for each of CPU_FLAGS, "native_bf16"}."""
    from omniseg.runtime.precision import native_bf16

    name, flags = _proc_cpuinfo()
    return {
        "model": name,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        **{flag: flag in flags for flag in CPU_FLAGS},
        "native_bf16": native_bf16(torch.device("cpu")),
    }
