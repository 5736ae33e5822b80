"""The training state: everything besides the generator weights that ``--resume`` needs.

Layout of a run folder ``OUT/checkpoints/``:

* ``latest.safetensors`` (and ``g_<iter>.safetensors`` per save when ``log.keep_weights``):
  the generator, in fastsr's generator file format (:mod:`fastsr.models.checkpoint`:
  ``params`` and ``params_ema`` groups, metadata with ``generator``, ``scale``,
  ``iteration``).
* ``latest.state.pt``: the discriminator weights, optimisers, LR schedulers, GAN-loss state
  (BEGAN k_t), RNG states and the iteration, saved with ``torch.save`` and loadable with
  ``weights_only=True``.

Both are written atomically (:func:`fastsr.models.checkpoint.atomic_write`). The weights
file is replaced before the state file; resuming checks both carry the same iteration.
"""
from __future__ import annotations

import io
import random

import numpy as np
import torch

from fastsr._deprecation import moved_names
from fastsr.errors import CheckpointError
from fastsr.models.checkpoint import atomic_write, read_checked

__all__ = ["CheckpointError", "save_state", "load_state", "rng_state", "set_rng_state"]


def save_state(path, state: dict) -> None:
    """``torch.save(state)`` to ``path``, atomically (:func:`~fastsr.models.checkpoint.atomic_write`).

    Raises:
        OSError: the file cannot be written (disk full, read-only file system, ...), naming it.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getbuffer())


def load_state(path) -> dict:
    """The training state saved by :func:`save_state` (``weights_only=True``, on the CPU).

    Raises:
        CheckpointError: missing or unreadable file.
    """
    return read_checked(path, "training state", lambda p: torch.load(p, map_location="cpu", weights_only=True))


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and ``random`` RNG states as weights_only-loadable data."""
    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "random": _py_random_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _py_random_state():
    version, internal, gauss = random.getstate()
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def set_rng_state(st: dict) -> None:
    """Restore the RNG states of :func:`rng_state`."""
    torch.set_rng_state(st["torch"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = st["random"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


__getattr__ = moved_names(__name__, {name: f"fastsr.models.checkpoint:{name}" for name in (
    "save_generator", "load_generator_weights", "read_metadata", "export_generator")})
