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
from safetensors.torch import load_file, save
from torch import nn

from fastsr.errors import CheckpointError
from fastsr.models._utils import build_for_weights, check_tensor_dict
from fastsr.models.registry import check_kwargs, create

__all__ = ["CheckpointError", "atomic_write", "remove_temp_files", "read_checked", "load_weights",
           "check_finite_weights", "save_generator", "read_metadata", "load_generator_weights",
           "export_generator", "load_generator", "generator_from_metadata", "decode_metadata", "model_scale",
           "WEIGHT_GROUPS"]

#: the weight groups of a generator file: the trained weights and their EMA
WEIGHT_GROUPS = ("params", "params_ema")


def atomic_write(path: str | os.PathLike, data) -> None:
    """Write ``data`` to ``path`` atomically: to a temporary file in the same folder (named
    ``.<name>.<random>.tmp``), flushed and fsync'ed, then moved into place with
    ``os.replace``. Parent folders are created. On any error the temporary file is removed
    and ``path`` is left as it was.

    Args:
        data: the file's bytes, or a callable ``write_fn(tmp_path)`` that writes the file.
            Prefer bytes: the operating system's errors then surface as ``OSError``.

    Raises:
        OSError: the file cannot be written (read-only file system, disk full, no
            permission, ...), with the errno of the failure and ``path`` as its file name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if callable(data):
            os.close(fd)
            data(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` leaves in ``folder`` when its process
    is killed mid-write (``.<name>.<random>.tmp``); returns the deleted paths. Only call it
    when no other process writes into ``folder``."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def save_generator(path, params: dict, params_ema: dict | None, metadata: dict) -> None:
    """Write a generator file: ``params`` (and ``params_ema``) state dicts with prefixed keys,
    ``metadata`` values as strings (non-strings JSON-encoded), plus ``format=fastsr``."""
    tensors = {f"params.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    if params_ema is not None:
        tensors.update({f"params_ema.{k}": v.detach().cpu().contiguous() for k, v in params_ema.items()})
    meta = {"format": "fastsr"}
    meta.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()})
    atomic_write(path, save(tensors, metadata=meta))


def read_checked(path, what: str, reader):
    """``reader(path)`` for a fastsr file; a missing file or any error of ``reader`` (the file
    libraries raise their own types) becomes a CheckpointError naming ``what`` and ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return reader(path)
    except Exception as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read {what} {path} (damaged, truncated or of another format?): {detail}") from None


def _raw_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def read_metadata(path) -> dict:
    """The JSON-decoded metadata of a generator file (strings that are not JSON stay strings).

    Raises:
        CheckpointError: missing or unreadable file.
    """
    return decode_metadata(read_checked(path, "checkpoint", _raw_metadata))


def decode_metadata(raw: dict) -> dict:
    """Safetensors string metadata with each value JSON-decoded (strings that are not JSON
    stay strings)."""
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError, ValueError, RecursionError):
            out[k] = v
    return out


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def generator_from_metadata(meta: dict, source) -> tuple[str, dict, int | None]:
    """``(name, kwargs, scale)`` of the generator a fastsr file's decoded metadata
    (:func:`decode_metadata`) describes, each checked before any model is built:
    ``generator`` a JSON object whose ``name`` is a registered model and whose other
    entries are arguments its constructor takes, of the types of their defaults
    (:func:`fastsr.models.registry.check_kwargs`); ``scale`` (None when absent) a positive
    integer.

    Raises:
        CheckpointError: no fastsr metadata, or any of the above not so; the message names
            ``source`` and the value.
    """
    spec = meta.get("generator")
    if meta.get("format") != "fastsr" or spec is None:
        raise CheckpointError(f"{source} is not a fastsr generator checkpoint (no 'generator' metadata)")
    if not isinstance(spec, dict):
        raise CheckpointError(f"{source}: its 'generator' metadata must be a JSON object "
                              f"{{\"name\": ..., **kwargs}}, got {str(spec)[:80]!r}")
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    try:
        check_kwargs(name, kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: its 'generator' metadata builds no model: {e}") from None
    scale = meta.get("scale")
    if scale is not None and not _positive_int(scale):
        raise CheckpointError(f"{source}: its 'scale' metadata must be a positive integer, got {scale!r}")
    return name, kwargs, scale


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


def load_weights(module: nn.Module, state_dict: dict, source) -> nn.Module:
    """Load ``state_dict`` strictly into ``module`` (tensors are cast to the module's
    dtypes) and return it; nothing is loaded when the two do not fit.

    Args:
        source: the file the state dict came from, named in the error.

    Raises:
        CheckpointError: missing or unexpected keys, or tensors of another shape (a
            checkpoint of another architecture or size): the counts and the first few of
            each, with both shapes, and ``source``.
    """
    check_fit(module, state_dict, source)
    module.load_state_dict(state_dict, strict=True)
    return module


def check_fit(module: nn.Module, state_dict: dict, source) -> None:
    """Raise :func:`load_weights`' CheckpointError when ``state_dict`` does not fit
    ``module`` (its entries, keys and shapes only; ``module`` may live on the meta device)."""
    check_tensor_dict(state_dict, str(source), CheckpointError)
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} in the file vs {tuple(own[k].shape)} in the model"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def show(items):
            return ", ".join(items[:3]) + (f", ... ({len(items)} in all)" if len(items) > 3 else "")
        parts = [f"{what}: {show(items)}" for what, items in
                 (("other shapes", shapes), ("missing keys", missing), ("unexpected keys", unexpected)) if items]
        raise CheckpointError(f"{source} does not fit the {type(module).__name__} being loaded (a checkpoint of "
                              f"another architecture or size?): " + "; ".join(parts))


def check_finite_weights(module: nn.Module, source) -> nn.Module:
    """Return ``module`` when every floating-point parameter and buffer is finite.

    Raises:
        CheckpointError: NaN or infinite values (a run that diverged), naming ``source``, the
            number of such tensors and the first few.
    """
    bad = [k for k, v in module.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise CheckpointError(f"{source} holds NaN or infinite weights in {len(bad)} tensor(s) ({shown}): "
                              "the run that wrote it diverged")
    return module


def load_generator(path, weights: str = "auto", device="cpu") -> tuple[nn.Module, int]:
    """Rebuild the generator of a generator file, in eval mode, with float32 parameters
    (``load_state_dict`` casts float16 weights).

    Args:
        path: ``*.safetensors`` written by ``fastsr train`` or shipped in ``fastsr/weights``.
        weights: ``"params"``, ``"params_ema"`` or ``"auto"`` (the EMA when present).
        device: where to put the model.

    Returns:
        ``(model, scale)``: ``scale`` is the model's own (:func:`model_scale`).

    Raises:
        CheckpointError: missing/unreadable file, no fastsr metadata, missing weight group,
            metadata that builds no model (:func:`generator_from_metadata`), a ``scale``
            metadata other than the model's (:func:`model_scale`), or weights that do not
            fit the model (missing / unexpected keys and other shapes listed,
            :func:`load_weights`).
        ValueError: ``weights`` not one of the three values.
    """
    if weights not in ("auto", *WEIGHT_GROUPS):
        raise ValueError(f"load_generator: weights must be 'auto', 'params' or 'params_ema', got {weights!r}")
    path = Path(path)
    name, kwargs, meta_scale = generator_from_metadata(read_metadata(path), path)
    if weights == "auto":
        try:
            sd = load_generator_weights(path, "params_ema")
        except CheckpointError:
            sd = load_generator_weights(path, "params")
    else:
        sd = load_generator_weights(path, weights)
    try:
        model = build_for_weights(lambda: create(name, **kwargs), sd, lambda probe, w: check_fit(probe, w, path))
    except CheckpointError:
        raise
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its generator metadata {dict(name=name, **kwargs)} builds no model for "
                              f"its weights: {e}") from None
    scale = model_scale(model, meta_scale, path)
    load_weights(model, sd, path)
    return model.to(device).eval(), scale


def model_scale(model: nn.Module, meta_scale: int | None, source) -> int:
    """The scale of a generator built from a file: its own ``scale`` attribute, which the
    file's ``scale`` metadata (when given) must equal; the metadata's for a model without
    one.

    Raises:
        CheckpointError: the two differ, or neither says.
    """
    own = getattr(model, "scale", None)
    if _positive_int(own):
        if meta_scale is not None and meta_scale != own:
            raise CheckpointError(f"{source}: its 'scale' metadata ({meta_scale}) is not the scale of the "
                                  f"{type(model).__name__} its 'generator' metadata builds ({own})")
        return own
    if meta_scale is None:
        raise CheckpointError(f"{source}: neither its metadata nor its {type(model).__name__} gives a scale")
    return meta_scale
