"""``--backend auto``: the hardware picks the backend and number format (pure logic on CPU flags,
so it is tested with faked flags).

What was measured decides the order (docs/performance.md, "Let the hardware choose"):
* a CUDA GPU runs torch, in bf16 where it has it;
* a CPU with native bf16 (AVX512-BF16 / AMX) runs torch in bf16;
* a CPU with int8 dot-product instructions (VNNI / AMX-INT8) but no native bf16 runs the
  decoder in int8 (ONNX Runtime), when the model folder ships its calibration table and ONNX
  Runtime is installed: int8 kept every task within 0.003 Dice of fp32 on the shared patches;
* everything else runs torch in fp32 (AVX2 without VNNI: int8 did not pay, bf16 is emulated).

An explicit ``--precision fp32`` or ``bf16`` keeps torch: the user chose the number format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

AUTO_BACKEND = "auto"
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # u8 x s8 dot products in one instruction
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class RuntimeChoice:
    """What ``auto`` resolved to, and the reason recorded in summary.json."""

    backend: str
    precision: str
    reason: str


def choose_runtime(
    precision: str,
    device_type: str,
    flags: Mapping[str, bool],
    *,
    native_bf16: bool,
    int8_ready: bool,
    onnxruntime: bool,
) -> RuntimeChoice:
    """Backend and precision for ``--backend auto`` with ``precision`` ("auto", "fp32", "bf16").

    ``flags``: CPU flag -> present (runtime/cpu.py); ``native_bf16``: oneDNN's (or CUDA's) own
    probe; ``int8_ready``: the model folder has its int8 calibration table.
    """
    if device_type != "cpu":
        chosen = "bf16" if precision == "auto" and native_bf16 else precision
        chosen = "fp32" if chosen == "auto" else chosen
        return RuntimeChoice("torch", chosen, f"{device_type} device: torch")
    if precision != "auto":
        return RuntimeChoice("torch", precision, f"--precision {precision} asked: torch")
    if native_bf16:
        found = [f for f in BF16_FLAGS if flags.get(f)] or ["native bf16 probe"]
        return RuntimeChoice("torch", "bf16", f"CPU has {'/'.join(found)}: torch bf16")
    int8_flags = [f for f in INT8_FLAGS if flags.get(f)]
    if int8_flags and int8_ready and onnxruntime:
        return RuntimeChoice(
            "onnxruntime-int8", "int8", f"CPU has {'/'.join(int8_flags)}: ONNX Runtime int8"
        )
    if int8_flags:
        missing = "onnxruntime is not installed" if not onnxruntime else "no int8 calibration"
        return RuntimeChoice("torch", "fp32", f"CPU has {'/'.join(int8_flags)} but {missing}")
    return RuntimeChoice("torch", "fp32", "no native bf16 or int8 instructions: torch fp32")
