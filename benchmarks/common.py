"""Shared pieces of the kernel benchmarks (run with ``pytest --benchmark-only``).

Each benchmark records in ``extra_info`` the device it ran on (``device``) and the bytes the
fused kernel must move at the least (``bytes``), so GB/s can be compared with a plain tensor
copy of the same bytes (``benchmarks/kernel_table.py`` prints the table from
``--benchmark-json``).

Devices: every benchmark runs on the CPU, and on CUDA when it is available (``DEVICES``),
with larger shapes there (the paper's training batch 16x64x24x24 and 64x64x96x96).

Timing on CUDA: pytest-benchmark's timer is the host clock read around each round, and a
CUDA call returns once its kernels are queued, so on its own it would measure launch time
only. :func:`measure` therefore times CUDA calls with :func:`fastsr.perf.time_fn`: a CUDA
event pair around each call on the stream and one synchronize after the last, with no host
sync between calls (the host keeps queueing, as in a training loop), warm-up first; its
min / median / p20 / p80 (seconds), the number of calls and the peak memory (MiB) go to
``extra_info["cuda"]``, and these are the numbers ``kernel_table.py`` reports for CUDA rows.
pytest-benchmark's own statistics of a CUDA row come from rounds of one call followed by
``torch.cuda.synchronize()``: the latency of one call from the host, sync included (an upper
bound, never the launch time alone). On the CPU, :func:`measure` is pytest-benchmark as
before.
"""
from __future__ import annotations

import pytest
import torch

from fastsr.perf import time_fn

DEVICES = ("cpu",) + (("cuda",) if torch.cuda.is_available() else ())

#: CUDA event timing of every CUDA row: untimed calls, then timed calls
CUDA_WARMUP, CUDA_ITERS = 10, 100
#: rounds of pytest-benchmark's synchronized host timing of a CUDA row
CUDA_SYNC_ROUNDS = 20


def cases(shapes_by_device: dict) -> list:
    """``pytest.param((device, shape))`` for every available device and its shapes, with ids
    like ``cpu-16x64x24x24``."""
    return [pytest.param((d, s), id=f"{d}-{'x'.join(map(str, s))}")
            for d in DEVICES for s in shapes_by_device[d]]


def fwd_bwd(fn, inputs, grad):
    """A closure running ``fn(*inputs)`` forward and backward to every input."""

    def run():
        out = fn(*inputs)
        return torch.autograd.grad(out, inputs, grad)

    return run


def compiled(fn):
    """``torch.compile`` of ``fn`` (inductor, static shapes); compile once before timing."""
    return torch.compile(fn, dynamic=False)


def measure(benchmark, fn, device: str, pedantic: dict | None = None) -> None:
    """Time ``fn`` (already warmed up / compiled) on ``device`` into ``benchmark``.

    CPU: ``benchmark.pedantic(fn, **pedantic)``, or ``benchmark(fn)`` (pytest-benchmark's
    calibration) when ``pedantic`` is None. CUDA: CUDA events via
    :func:`fastsr.perf.time_fn` into ``extra_info["cuda"]``, then pytest-benchmark's rounds
    of one synchronized call (see the module docstring)."""
    benchmark.extra_info["device"] = device
    if device == "cpu":
        if pedantic is None:
            benchmark(fn)
        else:
            benchmark.pedantic(fn, **pedantic)
        return
    t = time_fn(fn, device, iters=CUDA_ITERS, warmup=CUDA_WARMUP)
    benchmark.extra_info["cuda"] = {**t.summary(), "clock": "cuda events", "gpu": torch.cuda.get_device_name()}

    def synced():
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(synced, rounds=CUDA_SYNC_ROUNDS, iterations=1, warmup_rounds=1)


def run_benchmark(benchmark, fn, *, group: str, name: str, nbytes: int, device: str = "cpu", warmup: int = 3):
    for _ in range(warmup):  # also triggers torch.compile before the timed rounds
        fn()
    benchmark.group = group
    benchmark.name = name
    benchmark.extra_info["bytes"] = int(nbytes)
    measure(benchmark, fn, device, pedantic={"rounds": 30, "iterations": 5, "warmup_rounds": 2})


def copy_fn(nbytes: int, device: str = "cpu"):
    """A plain tensor copy moving ``nbytes`` (read + write): the bandwidth ceiling."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)
