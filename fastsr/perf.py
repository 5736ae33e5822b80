"""Process-level speed settings that fastsr's recommended configuration applies, and the
timing helper every fastsr benchmark uses (:func:`time_fn`).

glibc's malloc returns large freed blocks to the OS (``munmap`` of mmap-ed chunks and
trimming of the heap top); the next iteration of a training loop then page-faults the
same memory back in. On this kind of machine that cost ~160k page faults, ~11 % of an
fp32 GAN iteration. :func:`tune_allocator` keeps freed memory in the process instead, the
runtime equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
import time
from dataclasses import dataclass

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def native_bf16(device) -> bool:
    """Whether ``device`` computes bfloat16 natively: what ``train.bf16: auto`` and the
    inference precision ``auto`` (:func:`fastsr.evaluate.resolve_precision`) turn bf16 on for.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and newer). CPU: AVX512-BF16 or AMX
    (``torch.cpu._is_avx512_bf16_supported()`` / ``_is_amx_tile_supported()``, the
    capability queries oneDNN's bf16 kernels rely on); without them bf16 is emulated and
    slower than float32. Other devices: False.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        for q in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            fn = getattr(torch.cpu, q, None)
            try:
                if fn is not None and fn():
                    return True
            except RuntimeError:
                pass
    return False


def tune_allocator(trim_threshold: int = 1 << 30) -> bool:
    """Stop glibc malloc from giving memory back to the OS between iterations.

    Sets ``M_MMAP_MAX = 0`` (large blocks come from the heap, not fresh mmaps) and
    ``M_TRIM_THRESHOLD = trim_threshold`` bytes (the heap top is kept up to that size).
    Affects allocations made after the call. Memory use stays at its peak instead of
    shrinking between iterations, which is what a training loop wants.

    Returns:
        True when applied (Linux with glibc), False elsewhere (nothing changed).

    Raises:
        ValueError: ``trim_threshold`` not a positive int that fits a C int.
    """
    global _applied
    if not isinstance(trim_threshold, int) or not 0 < trim_threshold < 2**31:
        raise ValueError(f"tune_allocator: trim_threshold must be an int in (0, 2**31), got {trim_threshold!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    _applied = _applied or ok
    return ok


def allocator_tuned() -> bool:
    """Whether :func:`tune_allocator` has been applied in this process."""
    return _applied


# ----------------------------------------------------------------------------- timing
MIB = 1 << 20


@dataclass(frozen=True)
class Timing:
    """Times of repeated calls of one function and their summary, in seconds.

    ``p20_s`` / ``p80_s`` are the 20th / 80th percentiles (linear interpolation between
    the sorted times, numpy's default); with one call every statistic is that call's time.
    ``peak_mib``: peak bytes allocated by torch on a CUDA device during the timed calls, in
    MiB (2**20 bytes); None on a CPU.
    """

    n: int
    min_s: float
    median_s: float
    p20_s: float
    p80_s: float
    times_s: tuple[float, ...]
    device: str = "cpu"
    peak_mib: float | None = None

    @classmethod
    def from_times(cls, times, device: str = "cpu", peak_mib: float | None = None) -> "Timing":
        """Summary of ``times`` (seconds, at least one, each finite and >= 0).

        Raises:
            ValueError: ``times`` empty, or a time negative or not finite.
        """
        ts = tuple(float(t) for t in times)
        if not ts:
            raise ValueError("Timing.from_times: times must hold at least one duration, got none")
        bad = [t for t in ts if not math.isfinite(t) or t < 0]
        if bad:
            raise ValueError(f"Timing.from_times: times must be finite and >= 0 seconds, got {bad[0]!r}")
        s = sorted(ts)
        return cls(n=len(s), min_s=s[0], median_s=_quantile(s, 0.5), p20_s=_quantile(s, 0.2),
                   p80_s=_quantile(s, 0.8), times_s=ts, device=device, peak_mib=peak_mib)

    def summary(self) -> dict:
        """The statistics without the raw times (JSON-ready)."""
        return {"n": self.n, "min_s": self.min_s, "median_s": self.median_s, "p20_s": self.p20_s,
                "p80_s": self.p80_s, "device": self.device, "peak_mib": self.peak_mib}


def _quantile(sorted_times, q: float) -> float:
    pos = q * (len(sorted_times) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_times) - 1)
    return sorted_times[lo] + (sorted_times[hi] - sorted_times[lo]) * (pos - lo)


class WallClock:
    """Host clock around each call: ``start()`` / ``stop()`` per call, ``finish()`` returns
    the durations in seconds. ``clock`` is any monotonic seconds counter (default
    :func:`time.perf_counter`)."""

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self._t0 = 0.0
        self._times: list[float] = []

    def start(self) -> None:
        self._t0 = self._clock()

    def stop(self) -> None:
        self._times.append(self._clock() - self._t0)

    def finish(self) -> list[float]:
        return list(self._times)


class CudaEventClock:
    """CUDA events around each call on the current stream of ``device``; one
    ``torch.cuda.synchronize`` in :meth:`finish`, none between calls, so the host keeps
    queueing work as a training loop does. A call's time is the device time from its start
    event to its end event: the kernels' time when the GPU is the bottleneck, the host's
    launch time when the GPU waits for the host. ``iters`` event pairs are created up
    front (outside the timed calls)."""

    def __init__(self, device, iters: int):
        import torch

        self._device = device
        self._events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                        for _ in range(iters)]
        self._i = 0

    def start(self) -> None:
        self._events[self._i][0].record()

    def stop(self) -> None:
        self._events[self._i][1].record()
        self._i += 1

    def finish(self) -> list[float]:
        import torch

        torch.cuda.synchronize(self._device)
        return [s.elapsed_time(e) / 1e3 for s, e in self._events[:self._i]]  # elapsed_time is in ms


def time_fn(fn, device="cpu", iters: int = 10, warmup: int = 2, clock=None) -> Timing:
    """Time ``iters`` calls of ``fn()`` on ``device`` after ``warmup`` untimed calls.

    CPU: :func:`time.perf_counter` around each call (:class:`WallClock`). CUDA: a pair of
    ``torch.cuda.Event(enable_timing=True)`` around each call and one synchronize after the
    last (:class:`CudaEventClock`); the device is synchronized after the warm-up and its
    peak-memory counter reset, so ``peak_mib`` is the peak of ``torch.cuda.max_memory_allocated``
    over the timed calls, in MiB.

    Args:
        fn: a callable taking no arguments; its result is discarded.
        device: "cpu", "cuda", "cuda:N" or a ``torch.device``.
        iters: timed calls, >= 1.
        warmup: untimed calls first (compilation, autotuning, allocator, cuDNN algorithm
            choice), >= 0.
        clock: an object with ``start()``, ``stop()`` and ``finish() -> list[seconds]`` to
            use instead of the device's clock (tests pass a fake one).

    Returns:
        :class:`Timing` of the ``iters`` calls.

    Raises:
        ValueError: ``fn`` not callable; ``iters`` not an int >= 1 or ``warmup`` not an int
            >= 0; ``device`` not a CPU or CUDA device; a CUDA device when CUDA is not available.
    """
    import torch

    if not callable(fn):
        raise ValueError(f"time_fn: fn must be callable, got {type(fn).__name__}")
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"time_fn: iters must be an int >= 1, got {iters!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"time_fn: warmup must be an int >= 0, got {warmup!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"time_fn: device must be 'cpu' or 'cuda[:N]', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"time_fn: device must be 'cpu' or 'cuda[:N]', got {device!r}")
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"time_fn: device {device!r} requested but CUDA is not available")
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    if clock is None:
        clock = CudaEventClock(dev, iters) if cuda else WallClock()
    for _ in range(iters):
        clock.start()
        fn()
        clock.stop()
    times = clock.finish()
    peak = torch.cuda.max_memory_allocated(dev) / MIB if cuda else None
    return Timing.from_times(times, device=str(dev), peak_mib=peak)
