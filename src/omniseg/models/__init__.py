"""Networks: the Omni-Seg scale-aware model, its variants, weights I/O and checkpoint import."""

from omniseg.models.config import HeadSpec, InferenceSettings, ModelConfig
from omniseg.models.network import OmniSeg, count_parameters, foreground_probability
from omniseg.models.pretrained import load_pretrained, save_pretrained
from omniseg.models.registry import create_model, list_models, model_config

__all__ = [
    "HeadSpec",
    "InferenceSettings",
    "ModelConfig",
    "OmniSeg",
    "count_parameters",
    "create_model",
    "foreground_probability",
    "list_models",
    "load_pretrained",
    "model_config",
    "save_pretrained",
]
