"""``--backend auto``: the hardware's choice of backend and number format, with faked CPU flags."""

from __future__ import annotations

import pytest

from omniseg.runtime.choice import choose_runtime

AVX2 = {"avx2": True}
VNNI = {"avx2": True, "avx512f": True, "avx512_vnni": True}
ALDER_LAKE = {"avx2": True, "avx_vnni": True}
SAPPHIRE = {"avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "amx_bf16": True,
            "amx_int8": True, "amx_tile": True}  # fmt: skip


def _choose(flags, precision="auto", *, bf16=False, device="cpu"):
    choice = choose_runtime(precision, device, flags, native_bf16=bf16)
    return choice.backend, choice.precision


@pytest.mark.parametrize(
    ("flags", "bf16", "expected"),
    [
        (AVX2, False, ("torch", "fp32")),
        (VNNI, False, ("torch", "fp32")),  # int8 measured slower than torch fp32 with VNNI
        (ALDER_LAKE, False, ("torch", "fp32")),
        (SAPPHIRE, True, ("torch", "bf16")),
        ({**VNNI, "avx512_bf16": True}, True, ("torch", "bf16")),
    ],
)
def test_auto_follows_the_cpu_flags(flags, bf16, expected):
    assert _choose(flags, bf16=bf16) == expected


def test_the_reason_names_the_flags_that_decided():
    reason = choose_runtime("auto", "cpu", VNNI, native_bf16=False).reason
    assert "avx512_vnni" in reason and "slower" in reason
    assert "avx512_bf16" in choose_runtime("auto", "cpu", SAPPHIRE, native_bf16=True).reason


def test_an_explicit_precision_keeps_torch_and_a_gpu_runs_torch():
    assert _choose(SAPPHIRE, "fp32", bf16=True) == ("torch", "fp32")
    assert _choose(VNNI, "fp32") == ("torch", "fp32")
    assert _choose({}, device="cuda", bf16=True) == ("torch", "bf16")
    assert _choose({}, device="cuda", bf16=False) == ("torch", "fp32")


def test_resolve_auto_reads_this_machines_flags_and_probe(monkeypatch):
    from omniseg.models import create_model
    from omniseg.runtime import backends

    model = create_model("omniseg-tiny")
    monkeypatch.setattr("omniseg.runtime.cpu.cpu_capabilities", lambda: dict(SAPPHIRE))
    monkeypatch.setattr("omniseg.runtime.precision.native_bf16", lambda device=None: True)
    assert (backends.resolve_auto(model, "auto").precision) == "bf16"
    monkeypatch.setattr("omniseg.runtime.cpu.cpu_capabilities", lambda: dict(AVX2))
    monkeypatch.setattr("omniseg.runtime.precision.native_bf16", lambda device=None: False)
    assert backends.resolve_auto(model, "auto").precision == "fp32"
