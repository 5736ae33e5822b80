"""One training iteration recorded once and replayed as a CUDA graph.

A GAN iteration of the papers' models is ~1000+ small kernels whose launch cost (CPU
time in PyTorch's dispatcher, in fastsr's Python op wrappers and in Triton's launcher)
exceeds their run time on a GPU. :class:`GraphedStep` records the whole iteration of one
training phase -- forward, backward, optimiser steps, EMA, GAN bookkeeping -- with
:func:`torch.cuda.graph` and replays it with one launch per iteration, following the
whole-network capture recipe of PyTorch's CUDA Graphs notes: eager warm-up iterations on a
side stream, then one capture on that same stream, then replays with each new batch copied
into static input buffers.

What the recorded step must satisfy (the trainer's graph-ready mode provides it):

* no host synchronisation (no ``.item()``, ``.tolist()``, ``float(tensor)``, no Python
  branch on a tensor value) and the same kernels every call;
* every tensor it reads besides the batch lives at a fixed address: parameters, gradients
  (zeroed with ``zero_grad(set_to_none=False)``, never re-allocated), optimiser state and
  the learning rate (a 0-d tensor that the LR scheduler fills in place between replays;
  Adam/AdamW with ``capturable=True``);
* its outputs are 0-d tensors (the logged scalars); they are packed into one vector inside
  the graph and copied once per replay, so a caller may keep them across iterations.

On a device other than CUDA (``capture=False``) the same step runs eagerly through the same
static buffers: that is the code path the CPU tests compare with the trainer's plain path.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

__all__ = ["GraphedStep"]

Logs = dict[str, torch.Tensor]


class GraphedStep:
    """Warm-up, capture and replay of one training phase's iteration.

    Args:
        fn: ``fn(lr, hr) -> {name: 0-d tensor}``, one full iteration (it updates the models
            in place); called with the static input buffers. It must be graph-safe (module
            docstring).
        capture: record ``fn`` as a CUDA graph (the inputs must then be CUDA tensors);
            False runs ``fn`` eagerly through the same static buffers.
        warmup: eager iterations before the capture (on a side stream when capturing);
            they are real iterations of training. At least 1, so that gradients and the
            optimiser state exist before the capture.
        name: the phase, for the warning of a failed capture.

    Calling it with a batch ``(lr, hr)`` -- (N, 3, h, w) and (N, 3, sh, sw) float tensors,
    any memory format -- runs one iteration and returns its logged scalars as 0-d float32
    tensors on the device (no host sync). The first call fixes the static buffers' shape,
    dtype, device and memory format; a later batch that differs in any of these runs
    eagerly through ``fn`` (with a warning, once).

    Failure: an exception while setting up the warm-up (the side stream) or while
    capturing warns once (naming the phase and the exception), switches this phase to
    eager execution for good and runs the iteration eagerly -- neither has executed any
    of the iteration on the device (a capture records kernels without running them), so
    the iteration is neither lost nor done twice. An exception raised by ``fn`` itself in a
    warm-up iteration is an error of that eager iteration and propagates unchanged, as it
    would without graphs (re-running it could repeat an optimiser step already made).

    Attributes: ``captured`` (a graph is being replayed), ``failure`` (the reason text
    once capture was given up, else None), ``calls`` (iterations run).
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], Logs], *, capture: bool, warmup: int = 3,
                 name: str = "") -> None:
        if not callable(fn):
            raise TypeError(f"GraphedStep: fn must be callable, got {type(fn).__name__}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"GraphedStep: warmup must be an integer >= 1, got {warmup!r}")
        self.fn, self.capture, self.warmup, self.name = fn, bool(capture), warmup, name
        self.calls = 0
        self.failure: str | None = None
        self._graph = None
        self._stream = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._keys: list[str] = []
        self._out: torch.Tensor | None = None
        self._warned_shape = False

    @property
    def captured(self) -> bool:
        return self._graph is not None

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _layout(t: torch.Tensor):
        fmt = torch.channels_last if (t.dim() == 4 and not t.is_contiguous()
                                      and t.is_contiguous(memory_format=torch.channels_last)) \
            else torch.contiguous_format
        return tuple(t.shape), t.dtype, t.device, fmt

    def _fits(self, lr: torch.Tensor, hr: torch.Tensor) -> bool:
        s_lr, s_hr = self._static
        return self._layout(lr) == self._layout(s_lr) and self._layout(hr) == self._layout(s_hr)

    def _load(self, lr: torch.Tensor, hr: torch.Tensor) -> bool:
        """Copy the batch into the static buffers (allocated on the first call); False when
        it does not fit them."""
        if self._static is None:
            self._static = (torch.empty_like(lr, memory_format=self._layout(lr)[3]),
                            torch.empty_like(hr, memory_format=self._layout(hr)[3]))
        elif not self._fits(lr, hr):
            if not self._warned_shape:
                warnings.warn(f"training phase {self.name!r}: a batch of shape {tuple(lr.shape)} / "
                              f"{tuple(hr.shape)} differs from the first one ({tuple(self._static[0].shape)} / "
                              f"{tuple(self._static[1].shape)}, or its dtype, device or layout): such batches run "
                              "without the CUDA graph", stacklevel=3)
                self._warned_shape = True
            return False
        self._static[0].copy_(lr, non_blocking=True)
        self._static[1].copy_(hr, non_blocking=True)
        return True

    # ------------------------------------------------------------------ running
    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> Logs:
        if not self._load(lr, hr):
            return self._eager(lr, hr)
        s_lr, s_hr = self._static
        if not self.capture or self.failure is not None:
            return self._eager(s_lr, s_hr)
        if self._graph is not None:
            self._graph.replay()
            self.calls += 1
            return self._unpack(self._out.clone())
        if self.calls < self.warmup:
            return self._warm(s_lr, s_hr)
        try:
            self._record(s_lr, s_hr)
        except Exception as e:
            self._graph, self._out = None, None
            self._give_up(e, "capture")
            return self._eager(s_lr, s_hr)
        self._graph.replay()  # the capture recorded the iteration without running it
        self.calls += 1
        return self._unpack(self._out.clone())

    def _eager(self, lr, hr) -> Logs:
        out = self.fn(lr, hr)
        self.calls += 1
        return out

    def _side_stream(self):
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=self._static[0].device)
        return self._stream

    def _warm(self, lr, hr) -> Logs:
        try:
            s = self._side_stream()
            cur = torch.cuda.current_stream(lr.device)
            s.wait_stream(cur)
        except Exception as e:  # nothing of the iteration has run yet
            self._give_up(e, "warm-up")
            return self._eager(lr, hr)
        # an error inside fn is an error of this (eager) iteration: it propagates, as it would
        # without graphs, rather than repeating updates that may have been made already
        with torch.cuda.stream(s):
            out = self.fn(lr, hr)
        cur.wait_stream(s)
        self.calls += 1
        return out

    def _record(self, lr, hr) -> None:
        s = self._side_stream()
        s.wait_stream(torch.cuda.current_stream(lr.device))
        graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread may allocate pinned memory meanwhile
        with torch.cuda.graph(graph, stream=s, capture_error_mode="thread_local"):
            out = self.fn(lr, hr)
            keys = list(out)
            packed = torch.stack([out[k].detach().float().reshape(()) for k in keys]) if keys else \
                torch.zeros(0, device=lr.device)
        self._graph, self._keys, self._out = graph, keys, packed

    def _unpack(self, vec: torch.Tensor) -> Logs:
        return {k: vec[i] for i, k in enumerate(self._keys)}

    def _give_up(self, error: BaseException, stage: str) -> None:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        self.failure = f"{stage} failed ({reason})"
        warnings.warn(f"train.cuda_graph: the {self.name or 'training'} phase runs without a CUDA graph: "
                      f"{self.failure}", RuntimeWarning, stacklevel=3)
