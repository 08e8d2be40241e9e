"""``--backend auto``: the hardware's choice of backend and number format, with faked CPU flags."""

from __future__ import annotations

import pytest

from omniseg.runtime.choice import choose_runtime

AVX2 = {"avx2": True}
VNNI = {"avx2": True, "avx512f": True, "avx512_vnni": True}
ALDER_LAKE = {"avx2": True, "avx_vnni": True}
SAPPHIRE = {"avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "amx_bf16": True,
            "amx_int8": True, "amx_tile": True}  # fmt: skip


def _choose(flags, precision="auto", *, bf16=False, int8_ready=True, ort=True, device="cpu"):
    choice = choose_runtime(
        precision, device, flags, native_bf16=bf16, int8_ready=int8_ready, onnxruntime=ort
    )
    return choice.backend, choice.precision


@pytest.mark.parametrize(
    ("flags", "bf16", "expected"),
    [
        (AVX2, False, ("torch", "fp32")),
        (VNNI, False, ("onnxruntime-int8", "int8")),
        (ALDER_LAKE, False, ("onnxruntime-int8", "int8")),
        (SAPPHIRE, True, ("torch", "bf16")),
        ({**VNNI, "avx512_bf16": True}, True, ("torch", "bf16")),
    ],
)
def test_auto_follows_the_cpu_flags(flags, bf16, expected):
    assert _choose(flags, bf16=bf16) == expected


def test_int8_needs_its_calibration_and_onnxruntime_and_says_why_not():
    assert _choose(VNNI, int8_ready=False) == ("torch", "fp32")
    assert _choose(VNNI, ort=False) == ("torch", "fp32")
    reason = choose_runtime(
        "auto", "cpu", VNNI, native_bf16=False, int8_ready=False, onnxruntime=True
    ).reason
    assert "avx512_vnni" in reason and "calibration" in reason


def test_an_explicit_precision_keeps_torch_and_a_gpu_runs_torch():
    assert _choose(SAPPHIRE, "fp32", bf16=True) == ("torch", "fp32")
    assert _choose(VNNI, "fp32") == ("torch", "fp32")
    assert _choose({}, device="cuda", bf16=True) == ("torch", "bf16")
    assert _choose({}, device="cuda", bf16=False) == ("torch", "fp32")


def test_resolve_auto_reads_the_flags_and_the_model_folder(tmp_path, monkeypatch):
    from omniseg.models import create_model
    from omniseg.runtime import backends
    from omniseg.runtime.int8 import CALIBRATION_NAME

    model = create_model("omniseg-tiny")
    monkeypatch.setattr("omniseg.runtime.precision.native_bf16", lambda device=None: False)
    monkeypatch.setattr("omniseg.runtime.cpu.cpu_capabilities", lambda: dict(VNNI))
    assert backends.resolve_auto(model, "auto", tmp_path).backend == "torch"  # no table
    (tmp_path / CALIBRATION_NAME).write_text("{}")
    choice = backends.resolve_auto(model, "auto", tmp_path)
    expected = "onnxruntime-int8" if _has_onnxruntime() else "torch"
    assert choice.backend == expected
    monkeypatch.setattr("omniseg.runtime.cpu.cpu_capabilities", lambda: dict(AVX2))
    assert backends.resolve_auto(model, "auto", tmp_path).backend == "torch"


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None
