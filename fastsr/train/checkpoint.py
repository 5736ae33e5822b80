"""The training state: everything besides the generator weights that ``--resume`` needs.

Layout of a run folder ``OUT/checkpoints/``:

* ``latest.safetensors`` (and ``g_<iter>.safetensors`` per save when ``log.keep_weights``):
  the generator, in fastsr's generator file format (:mod:`fastsr.models.checkpoint`:
  ``params`` and ``params_ema`` groups, metadata with ``generator``, ``scale``,
  ``iteration``).
* ``latest.state.pt``: the discriminator weights, optimisers, LR schedulers, GAN-loss state
  (BEGAN k_t), RNG states and the iteration, saved with ``torch.save`` and loadable with
  ``weights_only=True``.

Every save (:func:`save_checkpoint`) is one consistent unit for ``--resume``:
``latest.state.pt`` (written atomically, :func:`fastsr.models.checkpoint.atomic_write`)
holds the generator weights too, so weights and state always come from the same iteration;
``latest.safetensors`` (the file ``fastsr eval`` / ``upscale`` read) is written after it and
repaired from it on resume (:func:`load_checkpoint`) if a kill came in between. States
written by earlier releases without the generator load with the weights file of the same
iteration.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fastsr._deprecation import moved_names
from fastsr.errors import CheckpointError
from fastsr.models import checkpoint as weight_files  # the generator file format (its names moved from here)
from fastsr.models.checkpoint import atomic_write, load_weights, read_checked
from fastsr.train.builders import Run, portable_state

__all__ = ["CheckpointError", "save_state", "load_state", "rng_state", "set_rng_state", "save_checkpoint",
           "load_checkpoint", "load_init_weights"]


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
        CheckpointError: missing or unreadable file, or one that holds no training state:
            not a dict, or its ``iteration`` not an integer >= 0.
    """
    state = read_checked(path, "training state", lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a training state (a damaged file?)")
    state["iteration"] = _iteration(state.get("iteration"), path)
    return state


def _iteration(value, source) -> int:
    """A saved iteration as an int: an integer >= 0 (or a 0-d integer tensor of one)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{source}: its iteration must be an integer >= 0, got {value!r} (a damaged or "
                              "foreign file?)")
    return value


def _saved_iteration(wpath: Path) -> int | None:
    """The ``iteration`` metadata of a weights file, None when it has none or not an integer."""
    it = weight_files.read_metadata(wpath).get("iteration")
    return it if isinstance(it, int) and not isinstance(it, bool) else None


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


def _cpu(sd: dict | None) -> dict | None:
    return {k: v.detach().cpu() for k, v in sd.items()} if sd is not None else None


def save_checkpoint(ckpt_dir: Path, run: Run, iteration: int, meta: dict, keep_weights: bool) -> None:
    """Write G's weights (+EMA) and the full training state of ``run`` at ``iteration``.

    Order: ``g_<iter>.safetensors`` (when ``keep_weights``), then ``latest.state.pt`` -- the
    unit ``--resume`` reads, holding G too -- then ``latest.safetensors``; each file
    atomically. ``meta``: the weight files' metadata.

    Raises:
        OSError: a file cannot be written (disk full, read-only file system), naming it.
    """
    params = run.G.state_dict()
    ema = run.G_ema.state_dict() if run.G_ema is not None else None
    if keep_weights:
        weight_files.save_generator(ckpt_dir / f"g_{iteration:07d}.safetensors", params, ema, meta)
    opt_g, sched_g = portable_state(run.opt_g, run.sched_g)
    opt_d, sched_d = portable_state(run.opt_d, run.sched_d) if run.opt_d is not None else (None, None)
    state = {
        "iteration": iteration, "generator": _cpu(params), "generator_ema": _cpu(ema),
        "discriminator": run.D.state_dict() if run.D is not None else None,
        "opt_g": opt_g, "sched_g": sched_g, "opt_d": opt_d, "sched_d": sched_d,
        "gan": run.gan.state_dict() if run.gan is not None else None,
        "rng": rng_state(),
    }
    save_state(ckpt_dir / "latest.state.pt", state)
    weight_files.save_generator(ckpt_dir / "latest.safetensors", params, ema, meta)


def _load_generator(run: Run, state: dict, spath: Path, wpath: Path, meta: Callable[[int], dict],
                    repair: bool) -> None:
    """G (and its EMA) from the state, or from the weights file for states saved without G."""
    it = state["iteration"]
    if state.get("generator") is not None:
        load_weights(run.G, state["generator"], spath)
        ema = state.get("generator_ema")
        if run.G_ema is not None:
            load_weights(run.G_ema, ema if ema is not None else run.G.state_dict(), spath)
        if repair and (not wpath.is_file() or _saved_iteration(wpath) != it):
            # a kill between the two writes of a save: bring the weights file up to the state
            weight_files.save_generator(wpath, run.G.state_dict(), ema, meta(it))
        return
    saved = weight_files.read_metadata(wpath)
    if _saved_iteration(wpath) != it:
        raise CheckpointError(f"{wpath} (iteration {saved.get('iteration')!r}) and {spath} (iteration "
                              f"{it}) do not match")
    load_weights(run.G, weight_files.load_generator_weights(wpath, "params"), wpath)
    if run.G_ema is not None:
        try:
            ema = weight_files.load_generator_weights(wpath, "params_ema")
        except CheckpointError:
            ema = run.G.state_dict()
        load_weights(run.G_ema, ema, wpath)


def load_checkpoint(ckpt_dir: Path, run: Run, meta: Callable[[int], dict], repair: bool = True) -> int:
    """Restore ``run`` from ``ckpt_dir/latest.state.pt`` (G from it, or from
    ``latest.safetensors`` for states saved without G, whose iterations must match) and the
    RNG states; returns the iteration. ``repair``: rewrite a weights file older than the
    state (``meta(iteration)``: its metadata); only one process of a run should.

    Raises:
        CheckpointError: nothing to resume, a damaged state (not a dict, an iteration that
            is not an integer >= 0, weights that are not state dicts, a missing RNG or
            optimiser state), files that do not match each other or the config (another
            architecture, no discriminator, other optimisers).
    """
    wpath, spath = ckpt_dir / "latest.safetensors", ckpt_dir / "latest.state.pt"
    if not spath.is_file() and not wpath.is_file():
        raise CheckpointError(f"nothing to resume: {spath} not found")
    state = load_state(spath)
    _load_generator(run, state, spath, wpath, meta, repair)
    if run.D is not None:
        if state.get("discriminator") is None:
            raise CheckpointError(f"{spath} holds no discriminator but the config has one")
        load_weights(run.D, state["discriminator"], f"{spath} (discriminator)")
    try:
        if run.D is not None:
            run.opt_d.load_state_dict(state["opt_d"])
            run.sched_d.load_state_dict(state["sched_d"])
        run.opt_g.load_state_dict(state["opt_g"])
        run.sched_g.load_state_dict(state["sched_g"])
        if run.gan is not None and state.get("gan"):
            run.gan.load_state_dict(state["gan"])
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{spath}: its optimiser / scheduler state does not fit this config: "
                              f"{_first_line(e)}") from None
    try:
        set_rng_state(state["rng"])
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{spath}: its RNG state is missing or damaged: {_first_line(e)}") from None
    return state["iteration"]


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_init_weights(run: Run, path, scale: int) -> None:
    """Start ``run``'s generator (and its EMA) from the ``params`` of the generator file
    ``path`` (``--init-from``, e.g. SRGAN from a trained SRResNet).

    Raises:
        CheckpointError: a missing or unreadable file; a file made for another scale than
            ``scale`` (its ``scale`` or ``generator.scale`` metadata); weights that do not
            fit the generator.
    """
    meta = weight_files.read_metadata(path)
    spec = meta.get("generator")
    saved = meta.get("scale", spec.get("scale") if isinstance(spec, dict) else None)
    if saved is not None and saved != scale:
        raise CheckpointError(f"{path} (init_from) holds a generator for scale {saved!r} but the config's scale is "
                              f"{scale}")
    load_weights(run.G, weight_files.load_generator_weights(path, "params"), path)
    if run.G_ema is not None:
        run.G_ema.load_state_dict(run.G.state_dict())


__getattr__ = moved_names(__name__, {name: f"fastsr.models.checkpoint:{name}" for name in (
    "save_generator", "load_generator_weights", "read_metadata", "export_generator")})
