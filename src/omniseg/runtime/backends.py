"""Choosing the inference backend: one name -> one :class:`Predictor`."""

from __future__ import annotations

from pathlib import Path

from omniseg.errors import OmnisegError
from omniseg.runtime.precision import resolve_precision
from omniseg.runtime.predictor import Predictor, TorchPredictor, model_device

BACKENDS = ("torch", "onnxruntime", "openvino")


def make_predictor(
    model,
    backend: str = "torch",
    precision: str = "fp32",
    *,
    model_dir: str | Path | None = None,
    sha256: str | None = None,
) -> Predictor:
    """The predictor for ``backend``. ONNX Runtime and OpenVINO run fp32 on the CPU (``auto``
    means fp32 there) from one ONNX export, cached beside ``model_dir`` keyed by ``sha256``."""
    if backend not in BACKENDS:
        raise OmnisegError(f"--backend {backend}: unknown; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        return TorchPredictor(model, precision)
    from omniseg.runtime.onnx_backend import (
        OnnxPredictor,
        OpenVinoPredictor,
        cached_onnx,
        require_openvino,
    )

    if precision == "bf16":
        raise OmnisegError(f"--backend {backend} runs fp32 only; use --precision fp32 or auto")
    resolve_precision(precision, model_device(model))  # names a misspelt precision
    if model_device(model).type != "cpu":
        raise OmnisegError(f"--backend {backend} runs on the CPU; use --device cpu")
    if backend == "openvino":
        require_openvino()  # before a possibly long export
    folder = Path(model_dir) if model_dir is not None else None
    path = cached_onnx(model, folder, sha256)
    return OpenVinoPredictor(model, path) if backend == "openvino" else OnnxPredictor(model, path)
