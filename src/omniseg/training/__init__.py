"""Training stage: partially labelled Dice + BCE, cross-scale semi-supervision, DDP, resume."""

from omniseg.training.config import TrainConfig
from omniseg.training.config_loading import dump_train_config, load_train_config
from omniseg.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "dump_train_config", "load_train_config", "train"]
