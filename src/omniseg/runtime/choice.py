"""``--backend auto``: the hardware picks the backend and number format (pure logic on CPU flags,
so it is tested with faked flags).

What was measured decides it (docs/performance.md, "Let the hardware choose"):
* a CUDA GPU runs torch, in bf16 where it has it;
* a CPU with native bf16 (AVX512-BF16 / AMX) runs torch in bf16: 1.6x torch fp32's tiles/s on
  a 2-core AVX-512 EPYC (30.9 against 19.4 40x tiles/s, ``benchmarks/run.py --quick``);
* every other CPU runs torch in fp32. int8 is not picked, even with VNNI: on that same CPU, which
  has AVX512-VNNI, ONNX Runtime's int8 decoder ran 13.2 40x tiles/s, slower than torch fp32,
  and on AVX2 CPUs it did not pay either. ``--backend onnxruntime-int8`` still runs it.

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
) -> RuntimeChoice:
    """Backend and precision for ``--backend auto`` with ``precision`` ("auto", "fp32", "bf16").

    ``flags``: CPU flag -> present (runtime/cpu.py); ``native_bf16``: oneDNN's (or CUDA's) own
    probe.
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
    if int8_flags:
        return RuntimeChoice(
            "torch", "fp32",
            f"no native bf16; CPU has {'/'.join(int8_flags)}, but int8 ran slower than torch "
            "fp32 on a VNNI CPU (docs/performance.md): torch fp32",
        )  # fmt: skip
    return RuntimeChoice("torch", "fp32", "no native bf16: torch fp32")
