"""One training iteration of the GAN: :class:`GANStep`.

One iteration (:meth:`GANStep.step`) = one generator update, then ``train.d_steps``
discriminator updates, in BasicSR's order and with **one generator forward**:

1. G step: ``sr = G(lr)`` with gradients; ``l_G = w_pix * pixel + w_lr * lr_consistency +
   w_chk * checkerboard +
   sum w * feature + w_gan * adversarial`` (the adversarial term through D with frozen parameters; the
   relativistic loss also gets ``D(hr)`` detached); backward, optimiser step, EMA update.
2. D step(s): ``d_steps`` updates of D on ``D(hr)`` and ``D(sr.detach())`` -- the same SR
   batch, made by G before its update -- with the loss's ``discriminator_loss`` (WGAN-GP
   penalty on the bare D, BEGAN's k_t update), then ``post_discriminator_step`` (WGAN
   weight clipping).

The first ``train.pretrain_iters`` iterations are the pixel phase: the pixel loss only (MSE
when ``loss.pixel`` is null, SRGAN's SRResNet-MSE initialisation), D untouched. Then the LR
schedulers step (MultiStepLR at absolute iterations).

Discriminators with BatchNorm (``train.d_joint_batch: auto``, the default) see real and
fake images in **one** batch, ``D(cat(hr, sr))``, in both steps. Evaluated separately in
training mode, each BatchNorm layer normalises the real and the fake batch by their own
statistics; where it sits on 1x1 feature maps (layers D6-D11 of the EM-distance paper's
critic) that removes every difference between the batch means, so ``E[D(HR)] - E[D(SR)]``
-- the whole WGAN signal, for the critic and for G -- stays ~1e-7 (measured). Sharing the
statistics keeps the comparison. ``true``/``false`` force it.

``train.d_shift`` (k > 1) shifts the real and the fake batch that D sees by one random offset
(0 .. k-1 pixels down and right, drawn on the device for every D call and shared by both;
the rows and columns moved in from the far border are mirrored), as the translation of
Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training". A
critic whose first layers are strided convolutions sees each output pixel at a fixed phase
of its stride; its input gradient then carries a pattern locked to that phase, which G's
sub-pixel convolution can draw as a grid of period ``scale``. Drawn anew each call, the
offset spreads that pattern over every phase, while a grid G draws stays visible to D at
any offset. With k a multiple of ``scale`` every phase of G's output grid is reached.

Graph mode (:meth:`GANStep.enter_graph_mode`, on by itself with ``train.cuda_graph``):
each phase's whole iteration (G step, D step(s), WGAN clipping or gradient penalty, BEGAN's
k_t, gradient clipping, the Adam/AdamW steps, the EMA, and the learning rate of the
schedule) is recorded once as a CUDA graph and replayed with the batch copied into static
buffers (:class:`fastsr.graphs.GraphedStep`), after 3 eager warm-up iterations that count
as training. The optimisers then hold their learning rates in device tensors (MultiStepLR
fills them in place between replays), gradients are zeroed in place, and autocast runs
without its weight cache. A capture that fails warns once and that phase continues
eagerly; the iteration is not lost.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from fastsr.graphs import GraphedStep
from fastsr.ops._common import output_format
from fastsr.train.builders import Run, hold_lr_in_tensor
from fastsr.train.schema import Config, Resolved

__all__ = ["GANStep", "Phase", "read_back", "random_shift"]


@dataclass
class Phase:
    """A training phase: ``pixel`` (pretraining, no discriminator) or ``adversarial``, and
    in graph mode its :class:`~fastsr.graphs.GraphedStep` (``graph``; None otherwise, and
    once the training has moved on to the next phase, whose graph memory it frees)."""

    name: str
    adversarial: bool
    graph: GraphedStep | None = None


def read_back(logs: dict, flag: torch.Tensor | None = None) -> tuple[dict, bool]:
    """``(logs as floats, flag as bool)`` of device tensors, in one device-to-host copy."""
    keys = list(logs)
    parts = [logs[k].detach().float().reshape(()) for k in keys]
    if flag is not None:
        parts.append(flag.float().reshape(()))
    values = torch.stack(parts).tolist() if parts else []
    return dict(zip(keys, values[:len(keys)])), bool(flag is not None and values[-1])


def random_shift(images, max_shift: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The (N, C, H, W) tensors of ``images`` shifted by one random offset (dy, dx), each
    drawn from 0 .. ``max_shift`` - 1 on their device: ``out[..., i, j] = x[..., i + dy, j + dx]``,
    the indices past the last row or column mirrored back (``2 (H - 1) - i``). Differentiable
    (an index select); no host synchronisation, so it can be recorded in a CUDA graph.

    Raises:
        ValueError: ``max_shift`` < 1 or not below every H and W, or tensors of different
            sizes.
    """
    images = list(images)
    h, w = images[0].shape[-2:]
    if any(x.shape[-2:] != (h, w) for x in images):
        raise ValueError(f"random_shift: images must share H and W, got {[tuple(x.shape) for x in images]}")
    if not 1 <= max_shift < min(h, w):
        raise ValueError(f"random_shift: max_shift must be in [1, {min(h, w) - 1}] for {h} x {w} images, "
                         f"got {max_shift}")
    dev = images[0].device
    offset = torch.randint(0, max_shift, (2,), device=dev, generator=generator)

    def index(n, d):
        i = torch.arange(n, device=dev) + d
        return torch.where(i < n, i, 2 * (n - 1) - i)

    rows, cols = index(h, offset[0]), index(w, offset[1])
    return [x.index_select(-2, rows).index_select(-1, cols) for x in images]


class GANStep:
    """The training iteration of a :class:`~fastsr.train.builders.Run` (module docstring).

    Args:
        run: the models, losses and optimisers (wrapped: :func:`~fastsr.train.builders.wrap_models`).
        config: the checked config (``train.pretrain_iters``, ``d_steps``, ``grad_clip``,
            ``ema_decay``).
        resolved: the device, ``bf16``, the memory format, ``d_joint_batch`` and
            ``cuda_graph`` (graph mode with capture is entered at once when on).
        iteration: iterations done before the first :meth:`step` (a resumed run's).

    Attributes: ``iteration`` (iterations done), ``phases`` (``{"pixel", "adversarial"}`` ->
    :class:`Phase`), ``d_joint_batch``, ``cuda_graph`` (iterations captured and replayed),
    ``graph_ready`` (graph mode, captured or not), ``device``, ``memory_format``, ``bf16``.

    Benchmark use (one full iteration per call, nothing read back)::

        step = trainer.gan_step          # or GANStep(run, config, resolved)
        losses = step.step(lr, hr)       # {"loss_g": 0-d tensor on the device, ...}
    """

    def __init__(self, run: Run, config: Config, resolved: Resolved, iteration: int = 0):
        t = config.train
        self.run, self.iteration = run, iteration
        self.device, self.memory_format, self.bf16 = resolved.device, resolved.memory_format, resolved.bf16
        self.pretrain_iters, self.d_steps, self.d_shift = t.pretrain_iters, t.d_steps, t.d_shift
        self.grad_clip, self.ema_decay = t.grad_clip, t.ema_decay
        self.d_joint_batch, self.cuda_graph, self.graph_ready = resolved.d_joint_batch, False, False
        self.phases = {"pixel": Phase("pixel", False), "adversarial": Phase("adversarial", True)}
        self._mse = torch.nn.MSELoss()  # the pretraining loss when loss.pixel is null
        if resolved.cuda_graph:
            self.enter_graph_mode(capture=True)

    # ------------------------------------------------------------------ modes
    def enter_graph_mode(self, capture: bool) -> None:
        """Graph-ready iterations: the learning rates held in device tensors (Adam/AdamW
        ``capturable`` when ``capture``), gradients zeroed in place, autocast without its
        weight cache, and each phase's iteration run by a :class:`GraphedStep` -- captured
        as a CUDA graph when ``capture``, else eagerly through the same static buffers (the
        path the CPU tests compare with the plain one). Call it before the first iteration."""
        for opt in (self.run.opt_g, self.run.opt_d):
            if opt is not None:
                hold_lr_in_tensor(opt, capturable=capture)
        self.graph_ready, self.cuda_graph = True, bool(capture)

    def autocast(self):
        """The bf16 autocast context of G, D and the feature losses (a no-op when off).
        Graph-ready iterations run it without its cache of cast weights, which a CUDA graph
        replay would not refresh."""
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=not self.graph_ready)
        return contextlib.nullcontext()

    @property
    def phase(self) -> Phase:
        """The phase of the next iteration."""
        adversarial = self.run.gan is not None and self.iteration >= self.pretrain_iters
        return self.phases["adversarial" if adversarial else "pixel"]

    # ------------------------------------------------------------------ the iteration
    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """One full training iteration on one batch; returns its logged losses as 0-d
        float32 tensors on the device: ``loss_g``, ``l_pix``, ... and in the adversarial
        phase ``l_gan``, ``loss_d`` and the GAN loss's statistics (``k_t`` for BEGAN, ...).
        Nothing in it waits for the device (no ``.item()``, no branch on a tensor value),
        so the host runs ahead and queues the next iteration; :func:`read_back` makes floats.

        Args:
            lr: (N, 3, h, w) float LR batch in [0, 1].
            hr: (N, 3, h * scale, w * scale) float HR batch in [0, 1]. Both are moved to
                ``device`` in ``memory_format`` (a no-op when already there).
        """
        lr = lr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        hr = hr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        phase = self.phase
        if self.graph_ready:
            if phase.graph is None:
                for other in self.phases.values():
                    other.graph = None  # phases do not come back: free the other one's graph memory
                phase.graph = GraphedStep(lambda a, b, adv=phase.adversarial: self._iteration(a, b, adv),
                                          capture=self.cuda_graph, name=f"train.cuda_graph: the {phase.name} phase")
            logs = phase.graph(lr, hr)
        else:
            logs = self._iteration(lr, hr, phase.adversarial)
        self.run.sched_g.step()  # fills a tensor LR in place: the next replay reads the new value
        if self.run.sched_d is not None:
            with warnings.catch_warnings():  # D's LR follows absolute iterations, pretraining included
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                self.run.sched_d.step()
        self.iteration += 1
        return logs

    def _iteration(self, lr, hr, adversarial: bool) -> dict:
        """The updates of one iteration (what a CUDA graph records): G step, then D steps."""
        sr, logs = self.generator_update(lr, hr, adversarial)
        if adversarial:
            logs.update(self.discriminator_updates(hr, sr.detach()))
        return {k: v.detach().float().reshape(()) for k, v in logs.items()}

    def _shifted(self, real, fake):
        """``(real, fake)`` both shifted by one random offset (``train.d_shift``, module
        docstring); unchanged when it is 0 or 1."""
        if self.d_shift <= 1:
            return real, fake
        return random_shift((real, fake), self.d_shift)

    def _joint(self, D, real, fake):
        """``D(real)`` and ``D(fake)`` from one forward pass on ``cat(real, fake)``."""
        out = D(torch.cat([real, fake.to(real.dtype)]).contiguous(memory_format=output_format(real))).float()
        return out[: real.shape[0]], out[real.shape[0]:]

    def _clip(self, module) -> None:
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip)

    def _generator_loss(self, sr, lr, hr, adversarial: bool):
        """``(l_G, logs)``: the weighted loss terms of the generator step (under autocast)."""
        r, total, logs = self.run, 0.0, {}
        if r.pixel is not None or not adversarial:
            fn, w = r.pixel if r.pixel is not None else (self._mse, 1.0)
            logs["l_pix"] = fn(sr.float(), hr.float())
            total = total + w * logs["l_pix"]
        if r.lr_consistency is not None:
            fn, w = r.lr_consistency
            logs["l_lr"] = fn(sr.float(), lr.float())
            total = total + w * logs["l_lr"]
        if r.checkerboard is not None:
            fn, w = r.checkerboard
            logs["l_checker"] = fn(sr.float(), hr.float())
            total = total + w * logs["l_checker"]
        if not adversarial:
            return total, logs
        for name, mod, w in r.features:
            logs[f"l_{name}"] = mod(sr.float(), hr)
            total = total + w * logs[f"l_{name}"].float()
        hr_d, sr_d = self._shifted(hr, sr)
        if self.d_joint_batch:
            # real and fake share the BatchNorm statistics (module docstring); D(hr) needs no
            # gradient of its own, only its part in the shared statistics
            real_out, fake_out = self._joint(r.D_frozen, hr_d, sr_d)
            real_out = real_out.detach()
        else:
            fake_out, real_out = r.D_frozen(sr_d).float(), None
            if r.gan.needs_real_for_generator:
                with torch.no_grad():
                    real_out = r.D_frozen(hr_d).float()
        logs["l_gan"] = r.gan.generator_loss(fake_out, real_out, fake=sr_d.float(), real=hr_d)
        return total + r.gan_weight * logs["l_gan"], logs

    def generator_update(self, lr, hr, adversarial: bool):
        """The G step: ``(sr, logs)`` after one update of G (and of its EMA)."""
        r = self.run
        r.opt_g.zero_grad(set_to_none=not self.graph_ready)
        if adversarial:
            r.D.requires_grad_(False)
        with self.autocast():
            sr = r.G_train(lr)
            total, logs = self._generator_loss(sr, lr, hr, adversarial)
        total.backward()
        self._clip(r.G)
        r.opt_g.step()
        logs["loss_g"] = total
        if r.G_ema is not None:
            self._update_ema()
        return sr, logs

    def discriminator_updates(self, hr, fake) -> dict:
        """The ``d_steps`` D steps on ``hr`` and the detached ``fake`` batch; their logs."""
        r, logs = self.run, {}
        fake = fake.to(hr.dtype).contiguous(memory_format=self.memory_format)
        r.D.requires_grad_(True)
        for _ in range(self.d_steps):
            r.opt_d.zero_grad(set_to_none=not self.graph_ready)
            real, fake_d = self._shifted(hr, fake)
            with self.autocast():
                if self.d_joint_batch:
                    real_out, fake_out = self._joint(r.D_train, real, fake_d)
                else:
                    real_out, fake_out = r.D_train(real).float(), r.D_train(fake_d).float()
                # the WGAN-GP penalty's double backward goes through the bare D (not DDP/compiled)
                loss = r.gan.discriminator_loss(real_out, fake_out, real=real, fake=fake_d,
                                                critic=r.D if r.gan.needs_critic else None)
            loss.backward()
            self._clip(r.D)
            r.opt_d.step()
            r.gan.post_discriminator_step(r.D)
            logs["loss_d"] = loss
        for k, v in r.gan.last_stats.items():
            logs["k_t" if k == "k" else k] = v
        return logs

    @torch.no_grad()
    def _update_ema(self) -> None:
        for pe, p in zip(self.run.G_ema.parameters(), self.run.G.parameters()):
            pe.lerp_(p.detach(), 1.0 - self.ema_decay)
        for be, b in zip(self.run.G_ema.buffers(), self.run.G.buffers()):
            be.copy_(b)
