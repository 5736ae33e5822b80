"""Checkpoints: generator weights as safetensors, the full training state as a torch file.

Layout of a run folder ``OUT/checkpoints/``:

* ``latest.safetensors`` (and ``g_<iter>.safetensors`` per save when ``log.keep_weights``):
  the generator. Keys are ``params.<name>`` (the trained weights) and, when an EMA of G is
  kept, ``params_ema.<name>`` -- BasicSR's two groups in one flat safetensors file. The
  metadata holds ``format=fastsr``, ``iteration``, ``scale`` and ``generator`` (the JSON
  ``{"name": ..., **kwargs}`` that rebuilds the model with ``fastsr.models.create``).
* ``latest.state.pt``: the discriminator weights, optimisers, LR schedulers, GAN-loss state
  (BEGAN k_t), RNG states and the iteration, saved with ``torch.save`` and loadable with
  ``weights_only=True``.

Every file is written to a temporary name in the same folder, flushed, fsync'ed and moved
into place with ``os.replace`` (atomic on POSIX), so a kill never leaves a truncated file.
The weights file is replaced before the state file; resuming checks both carry the same
iteration.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["CheckpointError", "atomic_write", "save_generator", "load_generator_weights",
           "read_metadata", "export_generator", "save_state", "load_state", "rng_state", "set_rng_state"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed or inconsistent; the message names it."""


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then atomically move ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_generator(path, params: dict, params_ema: dict | None, metadata: dict) -> None:
    """Write generator ``params`` (and ``params_ema``) with prefixed keys + string metadata."""
    tensors = {f"params.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    if params_ema is not None:
        tensors.update({f"params_ema.{k}": v.detach().cpu().contiguous() for k, v in params_ema.items()})
    meta = {"format": "fastsr"}
    meta.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def export_generator(checkpoint, out, which: str = "params_ema", dtype=None, metadata: dict | None = None) -> Path:
    """Write one weight group of a training checkpoint as a standalone fastsr generator
    file (its tensors as the ``params`` group, optionally cast to ``dtype``, e.g.
    ``torch.float16`` to halve the size of shipped weights), keeping the checkpoint's
    metadata and adding ``metadata``. This is how ``fastsr/weights/*.safetensors`` are made.

    Raises:
        CheckpointError: missing checkpoint or weight group.
    """
    sd = load_generator_weights(checkpoint, which)
    if dtype is not None:
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    meta = read_metadata(checkpoint)
    meta.pop("format", None)
    meta.update(metadata or {})
    meta["exported_from"] = f"{Path(checkpoint).name}:{which}"
    save_generator(out, sd, None, meta)
    return Path(out)


def read_metadata(path) -> dict:
    """The JSON-decoded metadata of a fastsr safetensors checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


def load_generator_weights(path, which: str = "params") -> dict:
    """The state dict of group ``which`` ("params" or "params_ema") of a fastsr checkpoint.

    Raises:
        CheckpointError: missing file, or no tensor in that group.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        flat = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    prefix = which + "."
    sd = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    if not sd:
        groups = sorted({k.split(".", 1)[0] for k in flat})
        raise CheckpointError(f"checkpoint {path} has no {which!r} weights (groups: {groups})")
    return sd


def save_state(path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read training state {path}: {e}") from None


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
    torch.set_rng_state(st["torch"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = st["random"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
