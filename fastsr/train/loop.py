"""The fit loop of :meth:`fastsr.train.Trainer.fit`, in the run / advance / on_advance_end
shape of Lightning's loops.

* :meth:`FitLoop.run`: ``on_run_start`` (config file, log trimmed, data loader, progress
  bar), then ``advance`` (one :meth:`~fastsr.train.step.GANStep.step` on the next batch)
  and ``on_advance_end`` (log / validate / save at their intervals) until ``train.iters``,
  then ``on_run_end`` (the summary).
* The iterations do not wait for the device: the losses stay there, and a device-side flag
  collects whether any logged loss was NaN or infinite. Both are read back (one sync) only
  every ``log.every`` iterations, before each validation and save, before the save of an
  interrupted run, and at the end; the progress bar counts every iteration and shows the
  losses of those read-backs.
* Stop policy: Ctrl-C (SIGINT) or SIGTERM stops at the next iteration boundary, saves a
  checkpoint and ends with ``status="interrupted"``; a second Ctrl-C aborts at once without
  saving. A non-finite loss raises :class:`~fastsr.errors.NonFiniteLossError` and saves
  nothing, so the newest checkpoint (all of whose losses were finite) is the last good
  state. Any other error between iterations saves a checkpoint of the last finished
  iteration before it propagates (said in a note of the error); an error inside an
  iteration saves nothing (the state may be half-updated).
"""
from __future__ import annotations

import signal
import sys
import threading
import time
import warnings

import torch
from torch.utils.data import DataLoader

from fastsr.data import IterationBatchSampler
from fastsr.errors import NonFiniteLossError
from fastsr.train.config import dump_config
from fastsr.train.distributed import barrier
from fastsr.train.step import read_back

__all__ = ["FitLoop", "StopSignal"]


class StopSignal:
    """SIGINT/SIGTERM -> ``requested``: stop at the next iteration boundary; a second SIGINT
    aborts (KeyboardInterrupt). Handlers are installed in the main thread only."""

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


class FitLoop:
    """One :meth:`run` of a :class:`~fastsr.train.Trainer` from its ``iteration`` to
    ``train.iters`` (module docstring). It calls the trainer's ``gan_step.step``,
    ``validate`` and ``save``, and writes through its ``run_dir``."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.config = trainer.config
        self.status, self.last_val = "finished", {}
        self.bar = None
        self.in_step = False

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        """Train to ``train.iters``; returns :meth:`on_run_end`'s summary."""
        self.on_run_start()
        try:
            with StopSignal() as self.stop:
                try:
                    while self.iteration < self.trainer.total and self._running():
                        self.advance()
                        self.on_advance_end()
                except Exception as e:
                    self.on_error(e)
                    raise
                if self.status == "interrupted":
                    self.on_interrupt()
        finally:
            if self.bar is not None:
                self.bar.close()
        return self.on_run_end()

    @property
    def iteration(self) -> int:
        return self.trainer.gan_step.iteration

    def on_run_start(self) -> None:
        tr, c = self.trainer, self.config
        changes = tr.run_dir.start(dump_config(c.raw), tr.start_iter)
        if changes:
            shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
            warnings.warn(f"{tr.out}: resuming at iteration {tr.start_iter} with a config that differs from the "
                          f"run's config.yaml: {shown} (recorded in log.jsonl)", stacklevel=2)
        dev = tr.device
        sampler = IterationBatchSampler(len(tr.train_set), c.data.batch_size, c.train.seed, self.iteration,
                                        tr.total, tr.dist.rank, tr.dist.world)
        nw = c.data.num_workers
        loader = DataLoader(tr.train_set, batch_sampler=sampler, num_workers=nw, pin_memory=dev.type == "cuda",
                            generator=torch.Generator().manual_seed(c.train.seed),
                            multiprocessing_context="fork" if nw > 0 and sys.platform == "linux" else None)
        if tr.progress and tr.dist.is_main:
            from tqdm import tqdm

            self.bar = tqdm(total=tr.total, initial=self.iteration, desc=c.name, unit="it", dynamic_ncols=True,
                            file=sys.stderr)
        self.start = self.checked = self.iteration
        self.logs = {}
        # "some logged loss was NaN/inf" per iteration, collected without a host sync
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)
        self.t0 = time.perf_counter()
        tr.G_train.train()
        if tr.D is not None:
            tr.D_train.train()
        self.batches = iter(loader)

    def _running(self) -> bool:
        """False once a stop was requested (``status`` becomes ``interrupted``)."""
        if self.stop.requested:
            self.status = "interrupted"
        return not self.stop.requested

    # ------------------------------------------------------------------ advance
    def advance(self) -> None:
        """One iteration on the next batch; its losses stay on the device."""
        try:
            batch = next(self.batches)
        except RuntimeError:
            if self.stop.requested:  # a DataLoader worker died of the same Ctrl-C
                self.status = "interrupted"
                return
            raise
        self.in_step = True
        self.logs = self.trainer.gan_step.step(batch["lr"], batch["hr"])
        if self.logs:
            self.bad.logical_or_(~torch.isfinite(torch.stack(list(self.logs.values()))).all())
        self.in_step = False
        if self.bar is not None:
            self.bar.update(1)

    def read_back(self) -> dict:
        """The last iteration's losses as floats (one sync).

        Raises:
            NonFiniteLossError: a logged loss since the previous read-back was NaN or infinite.
        """
        logs, nonfinite = read_back(self.logs, self.bad)
        if nonfinite:
            raise self.trainer.non_finite_error(self.iteration, logs, self.checked)
        self.checked = self.iteration
        return logs

    def on_advance_end(self) -> None:
        """Log, validate and save at their intervals (and at the last iteration)."""
        if self.status == "interrupted":
            return
        it, lg, tr = self.iteration, self.config.log, self.trainer
        log_now, val_now, save_now = (it % n == 0 or it == tr.total for n in (lg.every, lg.val_every, lg.save_every))
        if not (log_now or val_now or save_now):
            return
        logs = self.read_back()
        if log_now:
            self._log_losses(it, logs)
        if val_now:
            if tr.dist.is_main:
                self._validate(it)
            barrier(tr.dist)
        if save_now:
            tr.save(it)
            barrier(tr.dist)

    def _log_losses(self, it: int, logs: dict) -> None:
        tr = self.trainer
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss_g", "loss_d", "l_pix")})
        phase = "gan" if tr.gan is not None and it - 1 >= tr.gan_step.pretrain_iters else "pixel"
        tr.run_dir.log({"iter": it, "phase": phase, "lr_g": float(tr.opt_g.param_groups[0]["lr"]), **logs,
                        "time": round(time.perf_counter() - self.t0, 3)})

    def _validate(self, it: int) -> None:
        self.last_val = self.trainer.validate()
        self.trainer.run_dir.log({"iter": it, **self.last_val})
        if self.bar is not None:
            v = self.last_val
            err = " ".join(f"{x:+.2f}" for x in v["val_mean_error"])
            self.bar.write(f"iter {it}: val PSNR {v['val_psnr']:.2f} dB (bicubic {v['val_psnr_bicubic']:.2f}), "
                           f"SSIM {v['val_ssim']:.4f}, mean error R G B {err} levels")

    # ------------------------------------------------------------------ ends
    def on_error(self, error: Exception) -> None:
        """Save the last finished iteration before ``error`` propagates (module docstring)."""
        if not self.in_step and not isinstance(error, NonFiniteLossError):
            self.trainer.save_on_error(error, self.iteration, self.bad)

    def on_interrupt(self) -> None:
        """Save the state of an interrupted run, unless a loss since the last read-back was
        non-finite (never save a state that came after one)."""
        if self.iteration > self.checked:
            self.read_back()
        self.trainer.save(self.iteration)

    def on_run_end(self) -> dict:
        """``status`` ("finished" | "interrupted"), ``iteration``, ``seconds``,
        ``sec_per_iter`` and the last validation metrics."""
        seconds = time.perf_counter() - self.t0
        done = self.iteration - self.start
        return {"status": self.status, "iteration": self.iteration, "seconds": seconds,
                "sec_per_iter": seconds / done if done else float("nan"), **self.last_val}
