"""A step recorded once and replayed as a CUDA graph: a training iteration, or a model's
forward on fixed-size inference tiles.

The papers' models on a GPU are ~1000+ small kernels per training iteration (a few hundred
per forward) whose launch cost (CPU time in PyTorch's dispatcher, in fastsr's op wrappers,
in Triton's launcher) exceeds their run time. :class:`GraphedStep` records one call with
:func:`torch.cuda.graph` and replays it with one launch, following the whole-network capture
recipe of PyTorch's CUDA Graphs notes: eager warm-up calls on a side stream, then one capture
on that same stream, then replays with each new input copied into static buffers.
:class:`GraphedModule` keeps one :class:`GraphedStep` per input shape for inference.

What a recorded step must satisfy (the trainer's graph-ready mode provides it for training;
a generator in eval mode under ``torch.no_grad`` / ``inference_mode`` satisfies it):

* no host synchronisation (no ``.item()``, ``.tolist()``, ``float(tensor)``, no Python
  branch on a tensor value) and the same kernels every call;
* every tensor it reads besides its inputs lives at a fixed address: parameters, gradients
  (zeroed with ``zero_grad(set_to_none=False)``, never re-allocated), optimiser state and
  the learning rate (a 0-d tensor that the LR scheduler fills in place between replays;
  Adam/AdamW with ``capturable=True``); weights loaded in place (``load_state_dict``) are
  seen by later replays, replaced ``Parameter`` objects are not;
* its outputs are tensors (a tensor, or a dict / list / tuple of them); 0-d outputs of one
  dtype (the logged losses) are packed into one vector inside the graph and copied once
  per replay, others are copied one by one, so a caller may keep them across calls.

On a device other than CUDA (``capture=False``) the same step runs eagerly through the same
static buffers: that is the code path the CPU tests compare with the trainer's plain path.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = ["GraphedStep", "GraphedModule"]


class GraphedStep:
    """Warm-up, capture and replay of one step: a training phase's iteration, or a forward.

    Args:
        fn: ``fn(*inputs) -> tensors`` (e.g. ``fn(lr, hr) -> {name: 0-d tensor}``, one full
            training iteration that updates the models in place); called with the static
            input buffers. It must be graph-safe (module docstring).
        capture: record ``fn`` as a CUDA graph (the inputs must then be CUDA tensors);
            False runs ``fn`` eagerly through the same static buffers.
        warmup: eager iterations before the capture (on a side stream when capturing);
            they are real iterations of training. At least 1, so that gradients and the
            optimiser state exist before the capture.
        name: what the step is (e.g. the training phase), for the warnings.

    Calling it with tensors (e.g. a batch ``(lr, hr)``: (N, 3, h, w) and (N, 3, sh, sw) float
    tensors, any memory format) runs one step and returns ``fn``'s outputs, without a host
    sync. The first call fixes the static buffers' shape, dtype, device and memory format; a
    later call whose inputs differ in any of these runs eagerly through ``fn`` (with a
    warning, once).

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

    def __init__(self, fn: Callable[..., Any], *, capture: bool, warmup: int = 3,
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
        self._static: tuple[torch.Tensor, ...] | None = None
        self._spec = None  # pytree structure of fn's outputs
        self._out: tuple[torch.Tensor, ...] | None = None  # the graph's output tensors (leaves)
        self._packed = False  # _out is one vector of fn's 0-d outputs
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

    def _fits(self, inputs: tuple) -> bool:
        return len(inputs) == len(self._static) and all(
            self._layout(a) == self._layout(b) for a, b in zip(inputs, self._static))

    def _load(self, inputs: tuple) -> bool:
        """Copy the inputs into the static buffers (allocated on the first call); False when
        they do not fit them."""
        if self._static is None:
            self._static = tuple(torch.empty_like(t, memory_format=self._layout(t)[3]) for t in inputs)
        elif not self._fits(inputs):
            if not self._warned_shape:
                shapes = lambda ts: " / ".join(str(tuple(t.shape)) for t in ts)  # noqa: E731
                warnings.warn(f"{self.name or 'graphed step'}: inputs of shape {shapes(inputs)} differ from the first "
                              f"ones ({shapes(self._static)}, or their dtype, device or layout): such calls run "
                              "without the CUDA graph", stacklevel=3)
                self._warned_shape = True
            return False
        for buf, t in zip(self._static, inputs):
            buf.copy_(t, non_blocking=True)
        return True

    # ------------------------------------------------------------------ running
    def __call__(self, *inputs: torch.Tensor) -> Any:
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise TypeError(f"GraphedStep: inputs must be tensors, got {[type(t).__name__ for t in inputs]}")
        if not self._load(inputs):
            return self._eager(*inputs)
        static = self._static
        if not self.capture or self.failure is not None:
            return self._eager(*static)
        if self._graph is not None:
            return self._replay()
        if self.calls < self.warmup:
            return self._warm(*static)
        try:
            self._record(*static)
        except Exception as e:
            self._graph, self._out = None, None
            self._give_up(e, "capture")
            return self._eager(*static)
        return self._replay()  # the capture recorded the step without running it

    def _eager(self, *inputs) -> Any:
        out = self.fn(*inputs)
        self.calls += 1
        return out

    def _side_stream(self):
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=self._static[0].device)
        return self._stream

    def _warm(self, *inputs) -> Any:
        try:
            s = self._side_stream()
            cur = torch.cuda.current_stream(inputs[0].device)
            s.wait_stream(cur)
        except Exception as e:  # nothing of the step has run yet
            self._give_up(e, "warm-up")
            return self._eager(*inputs)
        # an error inside fn is an error of this (eager) call: it propagates, as it would
        # without graphs, rather than repeating updates that may have been made already
        with torch.cuda.stream(s):
            out = self.fn(*inputs)
        cur.wait_stream(s)
        self.calls += 1
        return out

    def _record(self, *inputs) -> None:
        s = self._side_stream()
        s.wait_stream(torch.cuda.current_stream(inputs[0].device))
        graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread may allocate pinned memory meanwhile
        with torch.cuda.graph(graph, stream=s, capture_error_mode="thread_local"):
            leaves, spec = tree_flatten(self.fn(*inputs))
            if not all(isinstance(t, torch.Tensor) for t in leaves):
                raise TypeError("GraphedStep: fn must return tensors (or a dict / list / tuple of them)")
            leaves = [t.detach() for t in leaves]
            packed = len(leaves) > 1 and all(t.dim() == 0 and t.dtype == leaves[0].dtype for t in leaves)
            out = (torch.stack(leaves),) if packed else tuple(leaves)
        self._graph, self._spec, self._out, self._packed = graph, spec, out, packed

    def _replay(self) -> Any:
        self._graph.replay()
        self.calls += 1
        copies = [t.clone() for t in self._out]
        leaves = list(copies[0].unbind()) if self._packed else copies
        return tree_unflatten(leaves, self._spec)

    def _give_up(self, error: BaseException, stage: str) -> None:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        self.failure = f"{stage} failed ({reason})"
        warnings.warn(f"{self.name or 'graphed step'} runs without a CUDA graph: {self.failure}", RuntimeWarning,
                      stacklevel=3)


class GraphedModule(nn.Module):
    """Inference wrapper replaying ``module``'s forward as CUDA graphs, one per input shape.

    Meant for the fixed-size tiles of :func:`fastsr.evaluate.upscale_image`: every tile of
    an image (and of every image at least one tile large) has one shape, so after the first
    tile of a shape (an eager warm-up) each tile is one graph replay. Only calls without
    autograd (``torch.no_grad`` / ``inference_mode``) on CUDA tensors are graphed; others run
    ``module`` itself. The graph key is the input's shape, dtype, device and layout plus the
    autocast and inference-mode state, so an fp32 recompute of a tile under another autocast
    setting gets its own graph. At most ``max_graphs`` shapes keep a graph (the least
    recently used is dropped: each holds its activations' memory).

    Args:
        module: the model (e.g. a generator in eval mode); its parameters are this wrapper's
            (``module.`` prefix in ``state_dict``).
        max_graphs: shapes with a live graph (>= 1).

    Shape:
        as ``module``: one tensor in, one tensor (or tensors) out, a fresh copy per call.

    Raises:
        ValueError: ``max_graphs`` < 1.
        TypeError: ``module`` is not an ``nn.Module``.

    A capture that fails warns once and runs that shape eagerly from then on
    (:class:`GraphedStep`).
    """

    def __init__(self, module: nn.Module, max_graphs: int = 4):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"GraphedModule: module must be an nn.Module, got {type(module).__name__}")
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"GraphedModule: max_graphs must be an integer >= 1, got {max_graphs!r}")
        self.module = module
        self.max_graphs = max_graphs
        self._steps: OrderedDict = OrderedDict()

    @staticmethod
    def _key(x: torch.Tensor) -> tuple:
        dev = x.device.type
        return (*GraphedStep._layout(x), torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev),
                torch.is_inference_mode_enabled())

    @staticmethod
    def _graphable(x) -> bool:
        """Whether a call on ``x`` is replayed: a CUDA tensor, without autograd."""
        return isinstance(x, torch.Tensor) and x.device.type == "cuda" and not torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> Any:
        if not self._graphable(x):
            return self.module(x)
        key = self._key(x)
        step = self._steps.pop(key, None)
        if step is None:
            step = GraphedStep(self.module, capture=True, warmup=1, name=f"the model at input {tuple(x.shape)}")
            while len(self._steps) >= self.max_graphs:
                self._steps.popitem(last=False)
        self._steps[key] = step  # most recently used last
        return step(x)
