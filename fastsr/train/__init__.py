"""Training: configs (YAML recipes of the papers), the GAN loop, checkpoints, DDP."""
from fastsr.train.checkpoint import CheckpointError, load_generator_weights, read_metadata
from fastsr.train.config import ConfigError, apply_overrides, list_configs, load_config
from fastsr.train.trainer import Trainer, train

__all__ = ["Trainer", "train", "load_config", "apply_overrides", "list_configs", "ConfigError",
           "CheckpointError", "load_generator_weights", "read_metadata"]
