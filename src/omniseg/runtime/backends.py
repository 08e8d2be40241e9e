"""Choosing the inference backend: one name -> one :class:`Predictor`."""

from __future__ import annotations

from pathlib import Path

from omniseg.errors import OmnisegError
from omniseg.runtime.precision import resolve_precision
from omniseg.runtime.predictor import Predictor, TorchPredictor, model_device

BACKENDS = ("torch", "onnxruntime")


def make_predictor(
    model,
    backend: str = "torch",
    precision: str = "fp32",
    *,
    model_dir: str | Path | None = None,
    sha256: str | None = None,
) -> Predictor:
    """The predictor for ``backend``. ONNX Runtime runs fp32 on the CPU (``auto`` means fp32
    there); its export is cached beside ``model_dir`` keyed by ``sha256``."""
    if backend not in BACKENDS:
        raise OmnisegError(f"--backend {backend}: unknown; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        return TorchPredictor(model, precision)
    from omniseg.runtime.onnx_backend import OnnxPredictor, cached_onnx

    if precision == "bf16":
        raise OmnisegError("--backend onnxruntime runs fp32 only; use --precision fp32 or auto")
    resolve_precision(precision, model_device(model))  # names a misspelt precision
    if model_device(model).type != "cpu":
        raise OmnisegError("--backend onnxruntime runs on the CPU; use --device cpu")
    folder = Path(model_dir) if model_dir is not None else None
    return OnnxPredictor(model, cached_onnx(model, folder, sha256))
