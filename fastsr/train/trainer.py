"""The GAN super-resolution training loop (pixel pretraining, adversarial phase, DDP).

One iteration (:meth:`Trainer.train_step`) = one generator update, then ``train.d_steps``
discriminator updates, in BasicSR's order and with **one generator forward**:

1. G step: ``sr = G(lr)`` with gradients; ``l_G = w_pix * pixel + w_lr * lr_consistency +
   sum w * feature + w_gan * adversarial`` (the adversarial term through D with frozen parameters; the
   relativistic loss also gets ``D(hr)`` detached); backward, optimiser step, EMA update.
2. D step(s): ``d_steps`` updates of D on ``D(hr)`` and ``D(sr.detach())`` -- the same SR
   batch, made by G before its update -- with the loss's ``discriminator_loss`` (WGAN-GP
   penalty on the bare D, BEGAN's k_t update), then ``post_discriminator_step`` (WGAN
   weight clipping).

Discriminators with BatchNorm (``train.d_joint_batch: auto``, the default) see real and
fake images in **one** batch, ``D(cat(hr, sr))``, in both steps. Evaluated separately in
training mode, each BatchNorm layer normalises the real and the fake batch by their own
statistics; where it sits on 1x1 feature maps (layers D6-D11 of the EM-distance paper's
critic) that removes every difference between the batch means, so ``E[D(HR)] - E[D(SR)]``
-- the whole WGAN signal, for the critic and for G -- stays ~1e-7 (measured). Sharing the
statistics keeps the comparison. ``true``/``false`` force it.

The adversarial formulas all live in :mod:`fastsr.losses.gan` (built by
:func:`fastsr.train.builders.build_gan_loss`); the pixel losses are :mod:`fastsr.nn`
modules (or ``torch.nn.MSELoss``), the perceptual and texture losses :mod:`fastsr.losses`
modules. Everything is built by :mod:`fastsr.train.builders` from a config checked by
:func:`fastsr.train.config.check_config`; validation is :func:`fastsr.evaluate.evaluate`. The first ``train.pretrain_iters`` iterations use the pixel
loss only (MSE when ``loss.pixel`` is null, SRGAN's SRResNet-MSE initialisation) and do not
touch D. LRs follow MultiStepLR at absolute iterations.

Speed options (``train`` section; fastsr's recommended settings are the defaults):

* ``fused_optimizer`` (default true): Adam/AdamW with ``fused=True`` (one kernel for all
  parameters, CPU and CUDA); ignored for ``rmsprop``, which has no fused implementation.
* ``tune_allocator`` (default true): :func:`fastsr.perf.tune_allocator` once when the
  Trainer is built (glibc keeps freed memory instead of page-faulting it back each
  iteration; no-op off glibc).
* ``channels_last`` (default ``auto``): G, D and the batches in NHWC. ``auto`` = on for CUDA
  and, on a CPU, only when bf16 autocast is on (:func:`builders.resolve_channels_last` has the
  measurements: in fp32 NCHW is faster on the CPUs measured); ``true`` / ``false`` force it.
* ``bf16`` (default ``auto``): bfloat16 autocast of G, D and the feature losses (the pixel
  losses and the GAN formulas are computed in float32). ``auto`` = on only where the
  hardware computes bf16 natively (:func:`native_bf16`: CUDA devices with bf16 support;
  CPUs with AVX512-BF16 or AMX); ``true`` / ``false`` force it.
* ``compile`` (default false): ``torch.compile`` of G and D (the WGAN-GP penalty's double
  backward runs on the uncompiled D). ``true`` uses torch.compile's defaults (inductor); a
  dict is passed as its keyword arguments (``{mode: max-autotune}``,
  ``{backend: aot_eager}``, ...). Costs compile time at the start.
* ``cuda_graph`` (default ``auto``): each phase's whole iteration (G step, D step(s), WGAN
  clipping or gradient penalty, BEGAN's k_t, gradient clipping, the Adam/AdamW steps, the
  EMA, and the learning rate of the schedule) is recorded once as a CUDA graph and
  replayed with the batch copied into static buffers (:mod:`fastsr.graphs`), one
  graph per phase (pixel pretraining, adversarial), after 3 eager warm-up iterations
  that count as training. It removes the per-kernel launch cost that dominates the
  papers' small models on a GPU. ``auto`` = on for CUDA with one process, ``compile``
  off, adam/adamw and no model with data-dependent control flow
  (:func:`builders.resolve_cuda_graph` gives the reasons); ``true`` forces it (a
  ConfigError where it cannot work, e.g. on a CPU); ``false`` keeps eager iterations.
  When on, the optimisers are built ``capturable`` with the learning rates in device
  tensors (MultiStepLR fills them in place between replays), gradients are zeroed in
  place, and autocast runs without its weight cache. A capture that fails (an op that
  syncs with the host, an unsupported kernel) warns once with the reason and that phase
  continues eagerly; the iteration is not lost.
* ``model.fused`` (default true): fastsr's fused layers in G (same weights either way).

Reproducibility: seeded torch/numpy/random; the data stream depends only on the seed and the
iteration (:class:`fastsr.data.IterationBatchSampler`), so ``--resume`` replays exactly the
batches an uninterrupted run would see, and the RNG states are restored from the checkpoint.

Multi-process (torchrun): G and D are wrapped in DistributedDataParallel; every process takes
``batch_size / world`` of each global batch; rank 0 alone validates, logs and saves. In the
generator step D is called unwrapped with frozen parameters (no gradient sync needed); the
WGAN-GP penalty also calls D unwrapped (DDP does not support double backward) -- its
parameter gradients then reach DDP's reducer in the same backward pass as the main loss.

Ctrl-C (SIGINT) or SIGTERM: the loop stops at the next iteration boundary, saves a checkpoint
and returns ``status="interrupted"``; a second Ctrl-C aborts at once without saving.

Safety of earlier work:

* A run folder that holds anything is refused unless ``resume`` (continue it) or
  ``overwrite`` (delete its ``config.yaml``, ``log.jsonl`` and ``checkpoints/`` first).
* Every save is one consistent unit for ``--resume``: ``latest.state.pt`` (written
  atomically) holds the generator weights too, so weights and state always come from the same
  iteration; ``latest.safetensors`` (the file ``fastsr eval`` / ``upscale`` read) is
  written after it and repaired from it on resume if a kill came in between. Temporary files
  of interrupted writes are deleted at start.
* On resume, ``log.jsonl`` keeps only the records up to the checkpoint's iteration, so the
  log continues as if the run had not stopped.
* An error between iterations (an unreadable training image, a failed validation) saves a
  checkpoint of the last finished iteration before it propagates.
* A non-finite loss stops training with :class:`fastsr.errors.NonFiniteLossError`; nothing is
  saved after it, so the newest checkpoint (all of whose losses were finite) is the last
  good state, and ``--resume`` continues from it (with e.g. a lower learning rate).
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fastsr.data import IterationBatchSampler
from fastsr.evaluate import evaluate
from fastsr.errors import NonFiniteLossError, UserError
from fastsr.graphs import GraphedStep
from fastsr.models.checkpoint import (atomic_write, load_generator_weights, load_weights, read_metadata,
                                      remove_temp_files, save_generator)
from fastsr.ops._common import output_format
from fastsr.train import builders
from fastsr.train.builders import native_bf16, resolve_bf16
from fastsr.train.checkpoint import CheckpointError, load_state, rng_state, save_state, set_rng_state
from fastsr.train.config import check_config, dump_config
from fastsr.train.distributed import DistInfo, barrier, cleanup_distributed, init_distributed

__all__ = ["Trainer", "train", "make_val_pairs", "native_bf16", "resolve_bf16"]

make_val_pairs = builders.make_val_pairs


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _Stop:
    """SIGINT/SIGTERM -> stop at the next iteration boundary; a second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


class Trainer:
    """Builds everything from a config and runs :meth:`fit`. See the module docstring.

    Args:
        cfg: a config from :func:`fastsr.train.load_config`.
        out_dir: run folder (``config.yaml``, ``log.jsonl``, ``checkpoints/``).
        data_dir: HR image folder (recursive); ``None`` uses :func:`fastsr.data.sample_images`.
        val_dir: HR folder of validation images; default: held-back images (the sample
            photos' validation split, or the last 10 % (at most ``data.val_max_images``)
            of a data folder's sorted files, which are then excluded from training).
        resume: continue from ``out_dir/checkpoints/latest.*``.
        overwrite: start afresh in a run folder that holds an earlier run: its
            ``config.yaml``, ``log.jsonl`` and ``checkpoints/`` are deleted first (other
            files are left). Without ``resume`` or ``overwrite`` a non-empty ``out_dir`` is
            refused.
        init_from: generator weights (fastsr safetensors) to start from (e.g. SRGAN from a
            trained SRResNet); ignored when resuming.
        device: "cpu" | "cuda" | None (auto).
        progress: show a tqdm bar on rank 0.
        data: False builds no data set and no validation images (``data_dir``/``val_dir``
            ignored): the Trainer can then only be driven by :meth:`train_step` on batches
            you pass (benchmarks); :meth:`fit` raises, :meth:`validate` returns ``{}``.

    Raises:
        ConfigError: any bad config value (:func:`fastsr.train.config.check_config`) or
            constructor argument of a model or loss.
        ConfigError: also ``train.cuda_graph: true`` where it cannot work
            (:func:`fastsr.train.builders.resolve_cuda_graph`).
        CheckpointError: ``resume`` without a consistent checkpoint; a bad ``init_from``;
            weights of another architecture or size (``init_from`` or ``resume``).
        UserError: ``out_dir`` holds files and neither ``resume`` nor ``overwrite`` is set;
            both are set; ``out_dir`` is a file.

    Attributes used by drivers of :meth:`train_step`: ``device``, ``memory_format``,
    ``bf16`` (resolved), ``cuda_graph`` (resolved: iterations captured and replayed as CUDA
    graphs, see the module docstring), ``iteration`` (iterations done), ``G``, ``D``, ``gan``.

    ``train.cuda_graph``: on a CUDA device with one process, ``auto`` records each training
    phase's iteration as a CUDA graph after 3 eager warm-up iterations and replays it;
    batches must then keep their shape (a batch of another shape runs eagerly, with a
    warning). ``true`` on a CPU, with DDP, ``train.compile`` or rmsprop is a ConfigError.

    Benchmark use (one full iteration per call, nothing written to ``out_dir``)::

        cfg = load_config("nonbn_wgan_x4", ["train.pretrain_iters=0"])
        tr = Trainer(cfg, tmpdir, data=False, progress=False, device="cpu")
        s, c = cfg["scale"], cfg["data"]["crop_size"]
        hr = torch.rand(cfg["data"]["batch_size"], 3, c, c)
        lr = torch.rand(hr.shape[0], 3, c // s, c // s)
        tr.train_step(lr, hr)   # warm-up (compile, allocator), then time further calls
    """

    def __init__(self, cfg: dict, out_dir, data_dir=None, val_dir=None, resume: bool = False,
                 init_from=None, device: str | None = None, progress: bool = True, data: bool = True,
                 overwrite: bool = False):
        check_config(cfg)
        self.cfg = cfg
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.progress = progress
        self.dist: DistInfo = init_distributed(device)
        if data:
            self._prepare_run_folder(resume, overwrite)
        self.saved_iteration = None
        self.device = dev = self.dist.device
        t = cfg["train"]
        self.scale = int(cfg["scale"])
        _seed_all(int(t["seed"]))
        if t.get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.total = int(t["iters"])
        self.pretrain = int(t.get("pretrain_iters") or 0)
        self.d_steps = int(t.get("d_steps", 1))
        self.bf16 = resolve_bf16(t.get("bf16", "auto"), dev)
        if t.get("tune_allocator", True):
            from fastsr.perf import tune_allocator

            tune_allocator()
        self.train_set, self.val_pairs = None, []
        if data:
            self.train_set, self.val_pairs = builders.build_datasets(cfg, data_dir, val_dir,
                                                                     with_val=self.dist.is_main)
        self._bicubic = None
        self._build_models()
        self.cuda_graph = builders.resolve_cuda_graph(
            t.get("cuda_graph", "auto"), dev, distributed=self.dist.enabled, compiled=bool(t.get("compile")),
            optimizer=t.get("optimizer", "adam"), models=(self.G, self.D))
        self.graph_ready = False
        self._graphs = None
        self._build_optimizers()
        self.start_iter = 0
        if resume:
            self._load(self.ckpt_dir)
        elif init_from is not None:
            load_weights(self.G, load_generator_weights(init_from, "params"), init_from)
            if self.G_ema is not None:
                self.G_ema.load_state_dict(self.G.state_dict())
        self.iteration = self.start_iter
        self._wrap_models()
        if self.cuda_graph:
            self._enter_graph_mode(capture=True)

    _RUN_FILES = ("config.yaml", "log.jsonl", "checkpoints")

    def _prepare_run_folder(self, resume: bool, overwrite: bool) -> None:
        """Refuse a run folder holding earlier work unless ``resume`` or ``overwrite``; with
        ``overwrite`` delete the earlier run's files (rank 0); delete orphan temporary files."""
        out = self.out
        if resume and overwrite:
            raise UserError("resume and overwrite exclude each other: continue the run in "
                            f"{out} or replace it, not both")
        if out.exists() and not out.is_dir():
            raise UserError(f"run folder {out} is a file, not a folder")
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if entries and not resume:
            if not overwrite:
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise UserError(f"run folder {out} is not empty ({shown}): continue that run with --resume, "
                                "replace it with --overwrite, or choose another --out")
            if self.dist.is_main:
                for name in self._RUN_FILES:
                    p = out / name
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    elif p.exists() or p.is_symlink():
                        p.unlink()
        if self.dist.is_main:
            remove_temp_files(self.ckpt_dir)

    # ------------------------------------------------------------------ building
    def _build_models(self) -> None:
        """G, D (+ its joint-batch setting), their init, the losses, the layout and the EMA of G."""
        cfg, t, dev = self.cfg, self.cfg["train"], self.device
        self.g_spec = builders.generator_spec(cfg)
        self.G = builders.build_generator(self.g_spec)
        self.D = builders.build_discriminator(cfg)
        has_bn = self.D is not None and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                            for m in self.D.modules())
        joint = t.get("d_joint_batch", "auto")
        self.d_joint_batch = has_bn if joint == "auto" else bool(joint)
        init = cfg["model"].get("init", "default")
        for m in (self.G, self.D):
            if m is not None:
                builders.init_weights(m, init)
        self.pixel = builders.build_pixel_loss(cfg)
        self.lr_consistency = builders.build_lr_consistency_loss(cfg)
        self.features = builders.build_feature_losses(cfg)
        self.gan, self.gan_weight = builders.build_gan_loss(cfg) or (None, 0.0)
        self._mse = torch.nn.MSELoss()  # the pretraining loss when loss.pixel is null
        self.channels_last = builders.resolve_channels_last(t.get("channels_last", "auto"), dev, self.bf16)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for m in (self.G, self.D):
            if m is not None:
                m.to(dev, memory_format=self.memory_format)
        for m in [m for _, m, _ in self.features] + [self.pixel[0] if self.pixel else None, self.gan]:
            if m is not None:
                m.to(dev)
        self.ema_decay = float(t.get("ema_decay") or 0.0)
        self.G_ema = builders.build_ema(self.G) if self.ema_decay > 0 else None

    def _build_optimizers(self) -> None:
        t = self.cfg["train"]
        self.opt_g = builders.build_optimizer(self.G.parameters(), t["lr_g"], t)
        self.sched_g = builders.build_scheduler(self.opt_g, t)
        self.opt_d = self.sched_d = None
        if self.D is not None:
            self.opt_d = builders.build_optimizer(self.D.parameters(), t["lr_d"], t)
            self.sched_d = builders.build_scheduler(self.opt_d, t)

    def _wrap_models(self) -> None:
        """DDP and torch.compile wrappers: ``G_train`` / ``D_train`` for the updates of each,
        ``D_frozen`` for D in the generator step (parameters frozen, no DDP sync)."""
        self.G_train, self.D_train = self.G, self.D
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            dev = self.device
            ids = [dev.index] if dev.type == "cuda" else None
            self.G_train = DDP(self.G, device_ids=ids)
            if self.D is not None:
                self.D_train = DDP(self.D, device_ids=ids)
        self.G_train, self.D_train, self.D_frozen = builders.compile_models(self.G_train, self.D_train, self.D,
                                                                            self.cfg["train"])

    def _enter_graph_mode(self, capture: bool) -> None:
        """Graph-ready iterations: the learning rates held in device tensors (Adam/AdamW
        ``capturable`` when ``capture``), gradients zeroed in place, autocast without its
        weight cache, and each phase's iteration run by a :class:`GraphedStep` -- captured
        as a CUDA graph when ``capture``, else eagerly through the same static buffers (the
        path the CPU tests compare with the plain one). Call it before the first iteration."""
        for opt in (self.opt_g, self.opt_d):
            if opt is not None:
                builders.hold_lr_in_tensor(opt, capturable=capture)
        self.graph_ready, self.cuda_graph = True, bool(capture)
        self._graphs = {}

    def autocast(self):
        """The bf16 autocast context of G, D and the feature losses (a no-op when off).
        Graph-ready iterations run it without its cache of cast weights, which a CUDA graph
        replay would not refresh."""
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=not self.graph_ready)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ checkpoints
    def _weights_meta(self, iteration: int) -> dict:
        return {"iteration": iteration, "scale": self.scale, "generator": self.g_spec,
                "config": self.cfg.get("name", "")}

    def save(self, iteration: int) -> None:
        """Write G weights (+EMA) and the full training state of ``iteration`` (rank 0).

        Order: ``g_<iter>.safetensors`` (when ``log.keep_weights``), then
        ``latest.state.pt`` -- the unit ``--resume`` reads, holding G too -- then
        ``latest.safetensors``; each file atomically.

        Raises:
            OSError: a file cannot be written (disk full, read-only file system), naming it.
        """
        if not self.dist.is_main:
            return
        meta = self._weights_meta(iteration)
        params = self.G.state_dict()
        ema = self.G_ema.state_dict() if self.G_ema is not None else None
        if self.cfg["log"].get("keep_weights", True):
            save_generator(self.ckpt_dir / f"g_{iteration:07d}.safetensors", params, ema, meta)
        opt_g, sched_g = builders.portable_state(self.opt_g, self.sched_g)
        opt_d, sched_d = builders.portable_state(self.opt_d, self.sched_d) if self.opt_d is not None else (None, None)
        state = {
            "iteration": iteration,
            "generator": {k: v.detach().cpu() for k, v in params.items()},
            "generator_ema": {k: v.detach().cpu() for k, v in ema.items()} if ema is not None else None,
            "discriminator": self.D.state_dict() if self.D is not None else None,
            "opt_g": opt_g, "sched_g": sched_g, "opt_d": opt_d, "sched_d": sched_d,
            "gan": self.gan.state_dict() if self.gan is not None else None,
            "rng": rng_state(),
        }
        save_state(self.ckpt_dir / "latest.state.pt", state)
        save_generator(self.ckpt_dir / "latest.safetensors", params, ema, meta)
        self.saved_iteration = iteration

    def _load(self, ckpt_dir: Path) -> None:
        """Restore the training state of ``ckpt_dir/latest.state.pt`` (and G from it, or from
        ``latest.safetensors`` for states saved without G, whose iterations must match)."""
        wpath, spath = ckpt_dir / "latest.safetensors", ckpt_dir / "latest.state.pt"
        if not spath.is_file() and not wpath.is_file():
            raise CheckpointError(f"nothing to resume: {spath} not found")
        state = load_state(spath)
        it = int(state["iteration"])
        if state.get("generator") is not None:
            load_weights(self.G, state["generator"], spath)
            ema = state.get("generator_ema")
            if self.G_ema is not None:
                load_weights(self.G_ema, ema if ema is not None else self.G.state_dict(), spath)
            if self.dist.is_main and (not wpath.is_file() or int(read_metadata(wpath).get("iteration", -1)) != it):
                # a kill between the two writes of a save: bring the weights file up to the state
                save_generator(wpath, self.G.state_dict(), ema, self._weights_meta(it))
        else:
            meta = read_metadata(wpath)
            if int(meta.get("iteration", -1)) != it:
                raise CheckpointError(f"{wpath} (iteration {meta.get('iteration')}) and {spath} (iteration "
                                      f"{it}) do not match")
            load_weights(self.G, load_generator_weights(wpath, "params"), wpath)
            if self.G_ema is not None:
                try:
                    ema = load_generator_weights(wpath, "params_ema")
                except CheckpointError:
                    ema = self.G.state_dict()
                load_weights(self.G_ema, ema, wpath)
        if self.D is not None:
            if state.get("discriminator") is None:
                raise CheckpointError(f"{spath} holds no discriminator but the config has one")
            load_weights(self.D, state["discriminator"], f"{spath} (discriminator)")
        try:
            if self.D is not None:
                self.opt_d.load_state_dict(state["opt_d"])
                self.sched_d.load_state_dict(state["sched_d"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.sched_g.load_state_dict(state["sched_g"])
            if self.gan is not None and state.get("gan"):
                self.gan.load_state_dict(state["gan"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{spath}: its optimiser / scheduler state does not fit this config: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        set_rng_state(state["rng"])
        self.start_iter = it
        self.saved_iteration = it

    # ------------------------------------------------------------------ steps
    def train_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """One full training iteration on one batch; returns its losses as floats.

        Pixel-pretraining phase (``iteration < train.pretrain_iters``, or no GAN): one G
        update on the pixel loss. Adversarial phase: one G update (the only G forward of
        the iteration), then ``train.d_steps`` D updates on ``sr.detach()`` (see the module
        docstring). Then the LR schedulers step and ``iteration`` increases by one. With
        ``train.cuda_graph`` on, the iteration is a CUDA graph replay (after the warm-up).

        This is :meth:`_step` plus one device-to-host read of all the logged scalars (one
        sync); :meth:`fit` calls :meth:`_step` and reads back only at log points.

        Args:
            lr: (N, 3, h, w) float LR batch in [0, 1].
            hr: (N, 3, h * scale, w * scale) float HR batch in [0, 1]. Both are moved to
                ``self.device`` in ``self.memory_format`` (a no-op when already there).

        Returns:
            ``{"loss_g", "l_pix", ...}`` and in the adversarial phase ``"l_gan"``,
            ``"loss_d"`` and the GAN loss's statistics (``k_t`` for BEGAN, ...).
        """
        return self._readback(self._step(lr, hr))[0]

    def _step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """:meth:`train_step` without the host read: the logged scalars as 0-d float32
        tensors on ``self.device``. Nothing in it waits for the device (no ``.item()``, no
        branch on a tensor value), so the host runs ahead and queues the next iteration."""
        lr = lr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        hr = hr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        adversarial = self.gan is not None and self.iteration >= self.pretrain
        if self._graphs is not None:
            phase = "adversarial" if adversarial else "pixel"
            runner = self._graphs.get(phase)
            if runner is None:
                self._graphs.clear()  # phases do not come back: free the other one's graph memory
                runner = self._graphs[phase] = GraphedStep(
                    lambda a, b, adv=adversarial: self._iteration(a, b, adv), capture=self.cuda_graph,
                    name=f"train.cuda_graph: the {phase} phase")
            logs = runner(lr, hr)
        else:
            logs = self._iteration(lr, hr, adversarial)
        self.sched_g.step()  # fills a tensor LR in place: the next replay reads the new value
        if self.sched_d is not None:
            with warnings.catch_warnings():  # D's LR follows absolute iterations, pretraining included
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                self.sched_d.step()
        self.iteration += 1
        return logs

    def _iteration(self, lr, hr, adversarial: bool) -> dict:
        """The updates of one iteration (what a CUDA graph records): G step, then D steps."""
        sr, logs = self._g_step(lr, hr, adversarial)
        if adversarial:
            logs.update(self._d_steps(hr, sr.detach()))
        return {k: v.detach().float().reshape(()) for k, v in logs.items()}

    @staticmethod
    def _readback(logs: dict, flag: torch.Tensor | None = None) -> tuple[dict, bool]:
        """``(logs as floats, flag as bool)`` in one device-to-host copy."""
        keys = list(logs)
        parts = [logs[k].detach().float().reshape(()) for k in keys]
        if flag is not None:
            parts.append(flag.float().reshape(()))
        values = torch.stack(parts).tolist() if parts else []
        return dict(zip(keys, values[:len(keys)])), bool(flag is not None and values[-1])

    def _g_step(self, lr, hr, adversarial: bool):
        self.opt_g.zero_grad(set_to_none=not self.graph_ready)
        logs = {}
        if adversarial:
            self.D.requires_grad_(False)
        with self.autocast():
            sr = self.G_train(lr)
            total = 0.0
            if self.pixel is not None or not adversarial:
                fn, w = self.pixel if self.pixel is not None else (self._mse, 1.0)
                l_pix = fn(sr.float(), hr.float())
                total = total + w * l_pix
                logs["l_pix"] = l_pix
            if self.lr_consistency is not None:
                fn, w = self.lr_consistency
                l_lr = fn(sr.float(), lr.float())
                total = total + w * l_lr
                logs["l_lr"] = l_lr
            if adversarial:
                for name, mod, w in self.features:
                    l_f = mod(sr.float(), hr)
                    total = total + w * l_f.float()
                    logs[f"l_{name}"] = l_f
                if self.d_joint_batch:
                    # real and fake share the BatchNorm statistics (module docstring); D(hr)
                    # needs no gradient of its own, only its part in the shared statistics
                    real_out, fake_out = self._joint(self.D_frozen, hr, sr)
                    real_out = real_out.detach()
                else:
                    fake_out = self.D_frozen(sr).float()
                    real_out = None
                    if self.gan.needs_real_for_generator:
                        with torch.no_grad():
                            real_out = self.D_frozen(hr).float()
                l_gan = self.gan.generator_loss(fake_out, real_out, fake=sr.float(), real=hr)
                total = total + self.gan_weight * l_gan
                logs["l_gan"] = l_gan
        total.backward()
        self._clip(self.G)
        self.opt_g.step()
        logs["loss_g"] = total
        if self.G_ema is not None:
            self._update_ema()
        return sr, logs

    def _d_steps(self, hr, fake) -> dict:
        fake = fake.to(hr.dtype).contiguous(memory_format=self.memory_format)
        self.D.requires_grad_(True)
        gan, logs = self.gan, {}
        for _ in range(self.d_steps):
            self.opt_d.zero_grad(set_to_none=not self.graph_ready)
            with self.autocast():
                if self.d_joint_batch:
                    real_out, fake_out = self._joint(self.D_train, hr, fake)
                else:
                    real_out = self.D_train(hr).float()
                    fake_out = self.D_train(fake).float()
                # the WGAN-GP penalty's double backward goes through the bare D (not DDP/compiled)
                loss = gan.discriminator_loss(real_out, fake_out, real=hr, fake=fake,
                                              critic=self.D if gan.needs_critic else None)
            loss.backward()
            self._clip(self.D)
            self.opt_d.step()
            gan.post_discriminator_step(self.D)
            logs["loss_d"] = loss
        for k, v in gan.last_stats.items():
            logs["k_t" if k == "k" else k] = v
        return logs

    @staticmethod
    def _joint(D, real, fake):
        """``D(real)`` and ``D(fake)`` from one forward pass on ``cat(real, fake)``."""
        out = D(torch.cat([real, fake.to(real.dtype)]).contiguous(memory_format=output_format(real))).float()
        return out[: real.shape[0]], out[real.shape[0]:]

    def _clip(self, module) -> None:
        c = float(self.cfg["train"].get("grad_clip") or 0.0)
        if c > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), c)

    @torch.no_grad()
    def _update_ema(self) -> None:
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.lerp_(p.detach(), 1.0 - self.ema_decay)
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Mean Y-channel PSNR/SSIM (crop_border=scale) of G (EMA when kept) and of bicubic,
        and G's mean colour error ``[R, G, B]`` (``val_mean_error``, mean SR - HR in 8-bit
        levels), on the validation pairs (:func:`fastsr.evaluate.evaluate`; bicubic is
        measured once)."""
        if not self.val_pairs:
            return {}
        model = self.G_ema if self.G_ema is not None else self.G
        res = evaluate(model, self.val_pairs, self.scale, bf16=self.bf16, memory_format=self.memory_format,
                       bicubic=self._bicubic is None).mean()
        if self._bicubic is None:
            self._bicubic = (res["bicubic_psnr"], res["bicubic_ssim"])
        return {"val_psnr": res["psnr"], "val_ssim": res["ssim"],
                "val_psnr_bicubic": self._bicubic[0], "val_ssim_bicubic": self._bicubic[1],
                "val_mean_error": [round(v, 4) for v in res["mean_error_rgb"]]}

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _trim_log(self, iteration: int) -> None:
        """Keep the records of ``log.jsonl`` up to ``iteration`` (the checkpoint resumed
        from; all of them are dropped for 0), and drop a line cut short by a kill."""
        path = self.out / "log.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("iter"), int) and rec["iter"] <= iteration:
                keep.append(line + "\n")
        atomic_write(path, "".join(keep).encode())

    def _non_finite(self, it: int, logs: dict, since: int | None = None) -> NonFiniteLossError:
        """The error for a non-finite loss found by the read-back of iteration ``it``; ``logs``
        are that iteration's losses, ``since`` the iteration of the previous read-back (the
        first non-finite value came after it)."""
        shown = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
        if since is not None and since < it - 1:
            where = (f"found at iteration {it} ({shown}; the first non-finite value came after iteration {since}, "
                     "where the losses were last read back)")
        else:
            where = f"at iteration {it} ({shown})"
        if self.saved_iteration is not None:
            kept = (f"the newest checkpoint, iteration {self.saved_iteration} in {self.ckpt_dir}, is the last good "
                    "state: continue from it with --resume, e.g. with a lower train.lr_g / train.lr_d or with "
                    "train.grad_clip")
        else:
            kept = (f"no checkpoint had been saved yet (the first save comes at iteration "
                    f"{self.cfg['log']['save_every']}): start again with a lower train.lr_g / train.lr_d or with "
                    "train.grad_clip")
        return NonFiniteLossError(f"non-finite loss {where}: training stopped; {kept}")

    def _save_on_error(self, error: BaseException, it: int, bad: torch.Tensor | None = None) -> None:
        """Save iteration ``it`` (finished, so consistent) before ``error`` propagates, and say
        so in a note of the error; nothing is saved when the device-side flag ``bad`` says a
        loss since the start was non-finite."""
        if not self.dist.is_main or it in (self.saved_iteration, self.start_iter):
            return  # nothing new since the last save or the start
        try:
            if bad is not None and bool(bad):
                error.add_note(f"no checkpoint saved: a loss up to iteration {it} was non-finite")
                return
        except Exception:
            return  # the device itself failed: its state cannot be trusted
        try:
            self.save(it)
        except Exception as e:
            error.add_note(f"saving a checkpoint of iteration {it} failed too: {e}")
            return
        error.add_note(f"training stopped after iteration {it}; checkpoint saved in {self.ckpt_dir} "
                       "(continue with --resume)")

    def fit(self) -> dict:
        """Train from ``start_iter`` to ``train.iters``. Returns a summary dict with ``status``
        ("finished" | "interrupted"), ``iteration``, ``seconds``, ``sec_per_iter`` and the last
        validation metrics.

        The iterations do not wait for the device: the losses stay there, and a device-side
        flag collects whether any logged loss was NaN or infinite. Both are read back (one
        sync) only every ``log.every`` iterations, before each validation and save, before
        the save of an interrupted run, and at the end; the progress bar counts every
        iteration and shows the losses of those read-backs.

        Raises:
            NonFiniteLossError: a NaN or infinite loss, found at the next read-back (the
                message names that iteration and, when read-backs are further apart than
                one iteration, the previous read-back after which it came). No checkpoint
                is saved once it happened, so the newest one (named in the message) is the
                last good state.
            Exception: any other error between iterations (an unreadable training image, a
                full disk) propagates after a checkpoint of the last finished iteration is
                saved (see the error's note); an error inside an iteration saves nothing.
        """
        cfg, t, lg = self.cfg, self.cfg["train"], self.cfg["log"]
        dev = self.dist.device
        if self.train_set is None:
            raise RuntimeError("Trainer(..., data=False) has no data set: drive it with train_step(lr, hr)")
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump_config(cfg))
            self._trim_log(self.start_iter)
        sampler = IterationBatchSampler(len(self.train_set), int(cfg["data"]["batch_size"]), int(t["seed"]),
                                        self.iteration, self.total, self.dist.rank, self.dist.world)
        nw = int(cfg["data"]["num_workers"])
        loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=nw, pin_memory=dev.type == "cuda",
                            generator=torch.Generator().manual_seed(int(t["seed"])),
                            multiprocessing_context="fork" if nw > 0 and sys.platform == "linux" else None)
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=self.total, initial=self.iteration, desc=cfg.get("name", "train"), unit="it",
                       dynamic_ncols=True, file=sys.stderr)
        it = start = self.iteration
        status, last_val = "finished", {}
        # Losses stay on the device between read-backs: ``bad`` collects "some logged loss
        # was NaN/inf" per iteration without a host sync; it is read with the losses at log
        # points, before validations and saves, and at the end.
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        checked, logs_t = it, {}

        def read_back() -> dict:
            nonlocal checked
            logs, nonfinite = self._readback(logs_t, bad)
            if nonfinite:
                raise self._non_finite(it, logs, checked)
            checked = it
            return logs

        t0 = time.perf_counter()
        self.G_train.train()
        if self.D is not None:
            self.D_train.train()
        with _Stop() as stop:
            batches = iter(loader)
            in_step = False
            try:
                while it < self.total:
                    if stop.requested:
                        status = "interrupted"
                        break
                    try:
                        batch = next(batches)
                    except RuntimeError:
                        if stop.requested:  # a DataLoader worker died of the same Ctrl-C
                            status = "interrupted"
                            break
                        raise
                    adversarial = self.gan is not None and it >= self.pretrain
                    in_step = True
                    logs_t = self._step(batch["lr"], batch["hr"])
                    if logs_t:
                        bad.logical_or_(~torch.isfinite(torch.stack(list(logs_t.values()))).all())
                    in_step = False
                    it = self.iteration
                    if bar is not None:
                        bar.update(1)
                    log_now = it % int(lg["every"]) == 0 or it == self.total
                    val_now = it % int(lg["val_every"]) == 0 or it == self.total
                    save_now = it % int(lg["save_every"]) == 0 or it == self.total
                    if not (log_now or val_now or save_now):
                        continue
                    logs = read_back()
                    if log_now:
                        if bar is not None:
                            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()
                                             if k in ("loss_g", "loss_d", "l_pix")})
                        lr_g = self.opt_g.param_groups[0]["lr"]
                        self._log({"iter": it, "phase": "gan" if adversarial else "pixel",
                                   "lr_g": float(lr_g), **logs, "time": round(time.perf_counter() - t0, 3)})
                    if val_now:
                        if self.dist.is_main:
                            last_val = self.validate()
                            self._log({"iter": it, **last_val})
                            if bar is not None:
                                err = " ".join(f"{v:+.2f}" for v in last_val["val_mean_error"])
                                bar.write(f"iter {it}: val PSNR {last_val['val_psnr']:.2f} dB "
                                          f"(bicubic {last_val['val_psnr_bicubic']:.2f}), "
                                          f"SSIM {last_val['val_ssim']:.4f}, mean error R G B {err} levels")
                        barrier(self.dist)
                    if save_now:
                        self.save(it)
                        barrier(self.dist)
            except Exception as e:
                if bar is not None:
                    bar.close()
                # inside train_step the state may be half-updated, after a non-finite loss it is bad
                if not in_step and not isinstance(e, NonFiniteLossError):
                    self._save_on_error(e, it, bad)
                raise
            if status == "interrupted":
                if it > checked:
                    try:
                        read_back()  # never save a state that came after a non-finite loss
                    except NonFiniteLossError:
                        if bar is not None:
                            bar.close()
                        raise
                self.save(it)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        done = it - start
        return {"status": status, "iteration": it, "seconds": seconds,
                "sec_per_iter": seconds / done if done else float("nan"), **last_val}

    def close(self) -> None:
        cleanup_distributed(self.dist)


def train(cfg: dict, out_dir, **kwargs) -> dict:
    """Build a :class:`Trainer` (``kwargs``: its arguments, e.g. ``resume``, ``overwrite``)
    and run it; returns :meth:`Trainer.fit`'s summary."""
    trainer = Trainer(cfg, out_dir, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
