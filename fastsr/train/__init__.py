"""Training: configs (YAML recipes of the papers, every value check in
:mod:`fastsr.train.config`), builders (config -> models, losses, optimisers, data), the
training state (:mod:`fastsr.train.checkpoint`), the GAN loop (:mod:`fastsr.train.trainer`)
and DDP. Generator weight files are :mod:`fastsr.models.checkpoint`'s format."""
from fastsr._deprecation import moved_names
from fastsr.errors import CheckpointError, ConfigError
from fastsr.train.config import apply_overrides, check_config, list_configs, load_config
from fastsr.train.trainer import Trainer, train

__all__ = ["Trainer", "train", "load_config", "apply_overrides", "list_configs", "check_config", "ConfigError",
           "CheckpointError"]

__getattr__ = moved_names(__name__, {"load_generator_weights": "fastsr.models.checkpoint:load_generator_weights",
                                     "read_metadata": "fastsr.models.checkpoint:read_metadata"})
