"""The exception types fastsr raises for mistakes of its user (as opposed to its own bugs).

Everything that a user can get wrong from the command line or a config -- an argument, a
recipe value, a file that is missing, unreadable or of the wrong kind -- raises a subclass
of :class:`UserError`. ``fastsr`` (the CLI) prints these as one line without a traceback;
any other exception is a bug in fastsr or torch and keeps its traceback.

All of them are ``ValueError`` subclasses, so ``except ValueError`` keeps working.
"""
from __future__ import annotations

__all__ = ["UserError", "ConfigError", "CheckpointError", "DataError", "NonFiniteLossError"]


class UserError(ValueError):
    """A mistake in the arguments, config or files given to fastsr; the message names it."""


class ConfigError(UserError):
    """A config file, recipe value or override is invalid; the message names the key or file."""


class CheckpointError(UserError):
    """A checkpoint file is missing, malformed or inconsistent; the message names it."""


class DataError(UserError):
    """An image or image folder given to fastsr is unusable (unreadable, empty, mismatched
    LR/HR pairs, too small); the message names the file or folder."""


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced a NaN or infinite loss (usually a learning rate or loss weight too
    large for the model); the message names the iteration, the losses and the checkpoint
    kept. Also a ``FloatingPointError``."""
