"""Choosing the inference backend: one name -> one :class:`Predictor`."""

from __future__ import annotations

from pathlib import Path

from omniseg.errors import OmnisegError
from omniseg.runtime import precision as numeric
from omniseg.runtime.choice import AUTO_BACKEND, RuntimeChoice, choose_runtime
from omniseg.runtime.precision import resolve_precision
from omniseg.runtime.predictor import Predictor, TorchPredictor, model_device

# No openvino-int8: OpenVINO ran the same int8 graph 0.056 mean Dice below fp32 on the shared
# patches (ONNX Runtime: 0.003), docs/performance.md.
BACKENDS = ("torch", "onnxruntime", "openvino", "onnxruntime-int8")
INT8_SUFFIX = "-int8"
BACKEND_CHOICES = (AUTO_BACKEND, *BACKENDS)  # auto: runtime/choice.py picks by the hardware


def resolve_auto(model, precision: str) -> RuntimeChoice:
    """What ``--backend auto`` means for this model on this machine."""
    from omniseg.runtime.cpu import cpu_capabilities

    device = model_device(model)
    resolve_precision(precision, device)  # names a misspelt or emulated precision first
    flags = cpu_capabilities() if device.type == "cpu" else {}
    return choose_runtime(precision, device.type, flags, native_bf16=numeric.native_bf16(device))


def make_predictor(
    model,
    backend: str = "torch",
    precision: str = "fp32",
    *,
    model_dir: str | Path | None = None,
    sha256: str | None = None,
) -> Predictor:
    """The predictor for ``backend``. ONNX Runtime and OpenVINO run fp32 on the CPU (``auto``
    means fp32 there) from one ONNX export, cached beside ``model_dir`` keyed by ``sha256``;
    their ``-int8`` forms run that export with its decoder quantized from the model folder's
    calibration table (``runtime/int8.py``)."""
    if backend not in BACKEND_CHOICES:
        raise OmnisegError(f"--backend {backend}: unknown; valid: {', '.join(BACKEND_CHOICES)}")
    if backend == AUTO_BACKEND:
        choice = resolve_auto(model, precision)
        precision = "fp32" if choice.precision == "int8" else choice.precision
        predictor = make_predictor(
            model, choice.backend, precision, model_dir=model_dir, sha256=sha256
        )
        predictor.choice = choice
        return predictor
    if backend == "torch":
        return TorchPredictor(model, precision)
    from omniseg.runtime.onnx_backend import (
        OnnxPredictor,
        OpenVinoPredictor,
        cached_onnx,
        require_openvino,
    )

    runs = "int8" if backend.endswith(INT8_SUFFIX) else "fp32"
    if precision == "bf16":
        raise OmnisegError(f"--backend {backend} runs {runs} only; use --precision fp32 or auto")
    resolve_precision(precision, model_device(model))  # names a misspelt precision
    if model_device(model).type != "cpu":
        raise OmnisegError(f"--backend {backend} runs on the CPU; use --device cpu")
    runtime = backend.removesuffix(INT8_SUFFIX)
    if runtime == "openvino":
        require_openvino()  # before a possibly long export
    folder = Path(model_dir) if model_dir is not None else None
    if runs == "int8":
        from omniseg.runtime.int8 import cached_int8

        path = cached_int8(model, folder, sha256)
    else:
        path = cached_onnx(model, folder, sha256)
    kind = OpenVinoPredictor if runtime == "openvino" else OnnxPredictor
    return kind(model, path, backend=backend, precision=runs)
