"""The generator file format: a trained generator as one safetensors file, and loading it.

A generator file holds the keys ``params.<name>`` (the trained weights) and, when an EMA of
the generator was kept, ``params_ema.<name>`` -- BasicSR's two groups in one flat
safetensors file. Its string metadata holds ``format=fastsr`` and JSON values, among them
``scale`` and ``generator`` (the ``{"name": ..., **kwargs}`` that rebuilds the model with
:func:`fastsr.models.create`); training adds ``iteration`` and ``config``, shipping adds
the recipe, command and validation table.

Every file is written to a temporary name in the same folder, flushed, fsync'ed and moved
into place with ``os.replace`` (atomic on POSIX), so a kill never leaves a truncated file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fastsr.errors import CheckpointError
from fastsr.models.registry import create

__all__ = ["CheckpointError", "atomic_write", "read_checked", "save_generator", "read_metadata", "load_generator_weights",
           "export_generator", "load_generator", "WEIGHT_GROUPS"]

#: the weight groups of a generator file: the trained weights and their EMA
WEIGHT_GROUPS = ("params", "params_ema")


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then atomically move ``tmp_path`` to ``path`` (parent
    folders are created). On any error the temporary file is removed and nothing replaced."""
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
    """Write a generator file: ``params`` (and ``params_ema``) state dicts with prefixed keys,
    ``metadata`` values as strings (non-strings JSON-encoded), plus ``format=fastsr``."""
    tensors = {f"params.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    if params_ema is not None:
        tensors.update({f"params_ema.{k}": v.detach().cpu().contiguous() for k, v in params_ema.items()})
    meta = {"format": "fastsr"}
    meta.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_checked(path, what: str, reader):
    """``reader(path)`` for a fastsr file; a missing file or any error of ``reader`` (the file
    libraries raise their own types) becomes a CheckpointError naming ``what`` and ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return reader(path)
    except Exception as e:
        raise CheckpointError(f"cannot read {what} {path}: {e}") from None


def _raw_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def read_metadata(path) -> dict:
    """The JSON-decoded metadata of a generator file (strings that are not JSON stay strings).

    Raises:
        CheckpointError: missing or unreadable file.
    """
    out = {}
    for k, v in read_checked(path, "checkpoint", _raw_metadata).items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


def load_generator_weights(path, which: str = "params") -> dict:
    """The state dict of weight group ``which`` (``"params"`` or ``"params_ema"``) of a
    generator file, tensors as stored (float16 for the shipped weights).

    Raises:
        CheckpointError: missing or unreadable file, or no tensor in that group.
    """
    flat = read_checked(path, "checkpoint", lambda p: load_file(str(p)))
    prefix = which + "."
    sd = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    if not sd:
        groups = sorted({k.split(".", 1)[0] for k in flat})
        raise CheckpointError(f"checkpoint {path} has no {which!r} weights (groups: {groups})")
    return sd


def export_generator(checkpoint, out, which: str = "params_ema", dtype=None, metadata: dict | None = None) -> Path:
    """Write one weight group of a generator file as a standalone generator file (its
    tensors as the ``params`` group, optionally cast to ``dtype``, e.g. ``torch.float16`` to
    halve the size of shipped weights), keeping the metadata and adding ``metadata``. This
    is how ``fastsr/weights/*.safetensors`` are made.

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


def load_generator(path, weights: str = "auto", device="cpu") -> tuple[nn.Module, int]:
    """Rebuild the generator of a generator file, in eval mode, with float32 parameters
    (``load_state_dict`` casts float16 weights).

    Args:
        path: ``*.safetensors`` written by ``fastsr train`` or shipped in ``fastsr/weights``.
        weights: ``"params"``, ``"params_ema"`` or ``"auto"`` (the EMA when present).
        device: where to put the model.

    Returns:
        ``(model, scale)``.

    Raises:
        CheckpointError: missing/unreadable file, no fastsr metadata, missing weight group,
            metadata that builds no model, or weights that do not fit the model (missing /
            unexpected keys listed).
        ValueError: ``weights`` not one of the three values.
    """
    if weights not in ("auto", *WEIGHT_GROUPS):
        raise ValueError(f"load_generator: weights must be 'auto', 'params' or 'params_ema', got {weights!r}")
    path = Path(path)
    meta = read_metadata(path)
    spec = meta.get("generator")
    if meta.get("format") != "fastsr" or not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path} is not a fastsr generator checkpoint (no 'generator' metadata)")
    if weights == "auto":
        try:
            sd = load_generator_weights(path, "params_ema")
        except CheckpointError:
            sd = load_generator_weights(path, "params")
    else:
        sd = load_generator_weights(path, weights)
    kwargs = dict(spec)
    name = kwargs.pop("name")
    try:
        model = create(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its generator metadata {spec} builds no model: {e}") from None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit {name}: missing keys {missing[:10]}, "
                              f"unexpected keys {unexpected[:10]}")
    return model.to(device).eval(), int(meta.get("scale", spec.get("scale", 1)))
