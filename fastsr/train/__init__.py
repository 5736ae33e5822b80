"""Training: configs (YAML recipes of the papers, :mod:`fastsr.train.config`) checked once
into typed records (:mod:`fastsr.train.schema`), builders (config -> models, losses,
optimisers, data), one GAN iteration (:class:`GANStep`, :mod:`fastsr.train.step`), the fit
loop (:mod:`fastsr.train.loop`), the run folder (:mod:`fastsr.train.run_dir`), the training
state (:mod:`fastsr.train.checkpoint`), the :class:`Trainer` that wires them, and DDP.
Generator weight files are :mod:`fastsr.models.checkpoint`'s format."""
from fastsr._deprecation import moved_names
from fastsr.errors import CheckpointError, ConfigError
from fastsr.train.config import apply_overrides, check_config, list_configs, load_config
from fastsr.train.schema import Config, parse
from fastsr.train.step import GANStep
from fastsr.train.trainer import Trainer, train

__all__ = ["Trainer", "train", "load_config", "apply_overrides", "list_configs", "check_config", "ConfigError",
           "CheckpointError", "GANStep", "Config", "parse"]

__getattr__ = moved_names(__name__, {"load_generator_weights": "fastsr.models.checkpoint:load_generator_weights",
                                     "read_metadata": "fastsr.models.checkpoint:read_metadata"})
