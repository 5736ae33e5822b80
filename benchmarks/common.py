"""Shared pieces of the kernel benchmarks (run with ``pytest --benchmark-only``).

Each benchmark records in ``extra_info`` the bytes the fused kernel must move at the least
(``bytes``), so GB/s can be compared with a plain tensor copy of the same bytes
(``benchmarks/kernel_table.py`` prints the table from ``--benchmark-json``).
"""
from __future__ import annotations

import torch


def fwd_bwd(fn, inputs, grad):
    """A closure running ``fn(*inputs)`` forward and backward to every input."""

    def run():
        out = fn(*inputs)
        return torch.autograd.grad(out, inputs, grad)

    return run


def compiled(fn):
    """``torch.compile`` of ``fn`` (inductor, static shapes); compile once before timing."""
    return torch.compile(fn, dynamic=False)


def run_benchmark(benchmark, fn, *, group: str, name: str, nbytes: int, warmup: int = 3):
    for _ in range(warmup):  # also triggers torch.compile before the timed rounds
        fn()
    benchmark.group = group
    benchmark.name = name
    benchmark.extra_info["bytes"] = int(nbytes)
    benchmark.pedantic(fn, rounds=30, iterations=5, warmup_rounds=2)


def copy_fn(nbytes: int):
    """A plain tensor copy moving ``nbytes`` (read + write): the bandwidth ceiling."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)
