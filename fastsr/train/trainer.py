"""The GAN super-resolution trainer: :class:`Trainer`, the public front of ``fastsr.train``.

It wires the parts: the config checked once into typed records (:mod:`fastsr.train.schema`,
which also resolves each ``auto`` setting for the device), the run folder
(:mod:`fastsr.train.run_dir`), the models, losses and optimisers
(:func:`fastsr.train.builders.build_run`), the training state (:mod:`fastsr.train.checkpoint`),
one iteration (:class:`fastsr.train.step.GANStep`: G step, D steps, pixel pretraining,
CUDA-graph replay) and the fit loop (:class:`fastsr.train.loop.FitLoop`: read-backs, log /
validation / save points, stop and error policy). Validation is
:func:`fastsr.evaluate.evaluate`.

Speed options (``train`` section; fastsr's recommended settings are the defaults):

* ``fused_optimizer`` (default true): Adam/AdamW with ``fused=True`` (one kernel for all
  parameters, CPU and CUDA); ignored for ``rmsprop``, which has no fused implementation.
* ``tune_allocator`` (default true): :func:`fastsr.perf.tune_allocator` once when the
  Trainer is built (glibc keeps freed memory instead of page-faulting it back each
  iteration; no-op off glibc).
* ``winograd`` (default true): on the fused path, 3x3 stride-1 convolutions whose channel
  counts are multiples of 16 run forward and input gradient by Winograd's algorithm on CPUs
  where that kernel is the faster one (:func:`fastsr.nn.use_winograd`; process-wide, set
  when the Trainer is built); false keeps oneDNN's direct convolutions.
* ``channels_last`` (default ``auto``): G, D and the batches in NHWC. ``auto`` = on for CUDA
  and, on a CPU, only when bf16 autocast is on (:func:`schema.resolve_channels_last` has the
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
  (:func:`schema.cuda_graph_blockers` gives the reasons); ``true`` forces it (a
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
  log continues as if the run had not stopped; a config that differs from the run's
  ``config.yaml`` warns and is recorded there (``config_changes``) before ``config.yaml``
  is rewritten. ``fastsr train --resume`` continues with the run's own ``config.yaml``
  (plus the command's overrides), not the recipe's current defaults.
* An error between iterations (an unreadable training image, a failed validation) saves a
  checkpoint of the last finished iteration before it propagates.
* A non-finite loss stops training with :class:`fastsr.errors.NonFiniteLossError`; nothing is
  saved after it, so the newest checkpoint (all of whose losses were finite) is the last
  good state, and ``--resume`` continues from it (with e.g. a lower learning rate).
"""
from __future__ import annotations

import random

import numpy as np
import torch

from fastsr.nn.conv import use_winograd
from fastsr.evaluate import evaluate
from fastsr.errors import NonFiniteLossError
from fastsr.train import builders
from fastsr.train.checkpoint import load_checkpoint, load_init_weights, save_checkpoint
from fastsr.train.distributed import DistInfo, cleanup_distributed, init_distributed
from fastsr.train.loop import FitLoop
from fastsr.train.run_dir import RunDir
from fastsr.train.schema import native_bf16, parse, resolve, resolve_bf16
from fastsr.train.step import GANStep, read_back

__all__ = ["Trainer", "train", "make_val_pairs", "native_bf16", "resolve_bf16"]

make_val_pairs = builders.make_val_pairs


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _Part:
    """A :class:`Trainer` attribute that is the attribute of the same name of one of its
    parts (``run``, ``gan_step`` or ``resolved``)."""

    def __init__(self, part: str):
        self.part = part

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj, value):
        setattr(getattr(obj, self.part), self.name, value)


class Trainer:
    """Builds everything from a config and runs :meth:`fit`. See the module docstring.

    Args:
        cfg: a config from :func:`fastsr.train.load_config` (or a checked
            :class:`~fastsr.train.schema.Config`).
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
            ignored): the Trainer can then only be driven by :meth:`train_step` (or
            ``gan_step.step``) on batches you pass (benchmarks); :meth:`fit` raises,
            :meth:`validate` returns ``{}``.

    Raises:
        ConfigError: any bad config value (:func:`fastsr.train.schema.parse`) or
            constructor argument of a model or loss; ``train.cuda_graph: true`` where it
            cannot work (:func:`fastsr.train.schema.resolve_cuda_graph`).
        CheckpointError: ``resume`` without a consistent checkpoint; a bad ``init_from`` or
            one made for another scale; weights of another architecture or size
            (``init_from`` or ``resume``).
        UserError: ``out_dir`` holds files and neither ``resume`` nor ``overwrite`` is set;
            both are set; ``out_dir`` is a file.

    Parts: ``config`` (the checked :class:`~fastsr.train.schema.Config`; ``cfg`` is its
    dict), ``resolved`` (the ``auto`` settings decided for the device), ``run`` (models,
    losses, optimisers: ``G``, ``D``, ``G_ema``, ``gan``, ``opt_g``, ... are its attributes
    here too), ``gan_step`` (:class:`~fastsr.train.step.GANStep`: ``iteration``,
    ``d_joint_batch``, ``cuda_graph``, ``graph_ready``, its ``phases`` with their CUDA
    graphs), ``run_dir``. Also ``device``, ``memory_format``, ``bf16``, ``channels_last``.

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
        tr.gan_step.step(lr, hr)   # warm-up (compile, allocator), then time further calls
    """

    G, D, G_ema, G_train, D_train, D_frozen = (_Part("run") for _ in range(6))
    gan, gan_weight, pixel, lr_consistency, checkerboard, features = (_Part("run") for _ in range(6))
    opt_g, opt_d, sched_g, sched_d = (_Part("run") for _ in range(4))
    iteration, d_joint_batch, cuda_graph, graph_ready = (_Part("gan_step") for _ in range(4))
    bf16, channels_last, memory_format = (_Part("resolved") for _ in range(3))

    def __init__(self, cfg, out_dir, data_dir=None, val_dir=None, resume: bool = False,
                 init_from=None, device: str | None = None, progress: bool = True, data: bool = True,
                 overwrite: bool = False):
        self.config = c = parse(cfg)
        self.cfg, self.progress = c.raw, progress
        self.dist: DistInfo = init_distributed(device)
        self.run_dir = RunDir(out_dir, self.dist.is_main)
        self.out, self.ckpt_dir = self.run_dir.out, self.run_dir.ckpt_dir
        if data:
            self.run_dir.prepare(resume, overwrite)
        try:
            self._build(c, data_dir, val_dir, resume, init_from, data)
        except BaseException:  # the run folder's lock goes with the half-built trainer
            self.run_dir.release()
            raise

    def _build(self, c, data_dir, val_dir, resume: bool, init_from, data: bool) -> None:
        self.device, self.scale, self.total = self.dist.device, c.scale, c.train.iters
        self.saved_iteration, self.start_iter = None, 0
        self._seed_and_tune()
        self.train_set, self.val_pairs = builders.build_datasets(c, data_dir, val_dir, with_val=self.dist.is_main) \
            if data else (None, [])
        self._bicubic = None
        self.g_spec, G, D = builders.build_models(c)
        self.resolved = resolve(c, self.device, distributed=self.dist.enabled, models=(G, D))
        self.run = builders.build_run(c, self.resolved, G, D, self.g_spec)
        if resume:
            self.start_iter = self.saved_iteration = load_checkpoint(self.ckpt_dir, self.run, self.weights_meta,
                                                                     repair=self.dist.is_main)
        elif init_from is not None:
            load_init_weights(self.run, init_from, c.scale)
        builders.wrap_models(self.run, c, self.dist.enabled)
        self.gan_step = GANStep(self.run, c, self.resolved, iteration=self.start_iter)

    def _seed_and_tune(self) -> None:
        t = self.config.train
        _seed_all(t.seed)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if t.tune_allocator:
            from fastsr.perf import tune_allocator

            tune_allocator()
        use_winograd(bool(t.winograd))

    def autocast(self):
        """The bf16 autocast context of the training step (:meth:`GANStep.autocast`)."""
        return self.gan_step.autocast()

    def train_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """One full training iteration on one batch (:meth:`GANStep.step`); returns its
        losses as floats, read back in one device-to-host copy (one sync). :meth:`fit` reads
        back only at log points."""
        return read_back(self.gan_step.step(lr, hr))[0]

    # ------------------------------------------------------------------ checkpoints
    def weights_meta(self, iteration: int) -> dict:
        """The metadata of the generator weight files saved at ``iteration``."""
        return {"iteration": iteration, "scale": self.scale, "generator": self.g_spec, "config": self.config.name}

    def save(self, iteration: int) -> None:
        """Write G weights (+EMA) and the full training state of ``iteration`` (rank 0;
        :func:`fastsr.train.checkpoint.save_checkpoint`).

        Raises:
            OSError: a file cannot be written (disk full, read-only file system), naming it.
        """
        if not self.dist.is_main:
            return
        save_checkpoint(self.ckpt_dir, self.run, iteration, self.weights_meta(iteration),
                        self.config.log.keep_weights)
        self.saved_iteration = iteration

    def save_on_error(self, error: BaseException, it: int, bad: torch.Tensor | None = None) -> None:
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

    def non_finite_error(self, it: int, logs: dict, since: int | None = None) -> NonFiniteLossError:
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
                    f"{self.config.log.save_every}): start again with a lower train.lr_g / train.lr_d or with "
                    "train.grad_clip")
        return NonFiniteLossError(f"non-finite loss {where}: training stopped; {kept}")

    # ------------------------------------------------------------------ validation and fit
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

    def fit(self) -> dict:
        """Train from ``iteration`` to ``train.iters`` (:class:`fastsr.train.loop.FitLoop`).
        Returns a summary dict with ``status`` ("finished" | "interrupted"), ``iteration``,
        ``seconds``, ``sec_per_iter`` and the last validation metrics.

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
        if self.train_set is None:
            raise RuntimeError("Trainer(..., data=False) has no data set: drive it with train_step(lr, hr)")
        try:
            return FitLoop(self).run()
        finally:
            self.run_dir.release()

    def close(self) -> None:
        self.run_dir.release()
        cleanup_distributed(self.dist)


def train(cfg, out_dir, **kwargs) -> dict:
    """Build a :class:`Trainer` (``kwargs``: its arguments, e.g. ``resume``, ``overwrite``)
    and run it; returns :meth:`Trainer.fit`'s summary."""
    trainer = Trainer(cfg, out_dir, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
