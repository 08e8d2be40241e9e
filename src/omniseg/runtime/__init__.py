"""Where a model meets the machine: device and precision choice, the predictor (the one way an
image batch becomes foreground probabilities), and process memory tuning.

Training, evaluation and whole-slide inference all use this package, so a patch gets the same
prediction whichever command produced it; other inference backends plug in behind
:class:`~omniseg.runtime.predictor.Predictor`.
"""

from omniseg.runtime.device import model_device, resolve_device
from omniseg.runtime.precision import PRECISIONS, autocast, native_bf16, resolve_precision
from omniseg.runtime.predictor import (
    Predictor,
    TorchPredictor,
    image_to_tensor,
    inference_mode_of,
    predict_probability,
)

__all__ = [
    "PRECISIONS",
    "Predictor",
    "TorchPredictor",
    "autocast",
    "image_to_tensor",
    "inference_mode_of",
    "model_device",
    "native_bf16",
    "predict_probability",
    "resolve_device",
    "resolve_precision",
]
