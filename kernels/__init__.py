"""Triton GPU kernels of fastsr, one file per op family (installed as ``fastsr.kernels``).

Each module exposes launchers with the signatures of the ``torch.ops.fastsr.*`` ops they
implement, listed in its ``CUDA_KERNELS``; :func:`register` makes them the CUDA kernels of
the op families that ``fastsr._C`` has no compiled CUDA kernel for (``import fastsr`` calls
it on a machine with CUDA and Triton). Importing this package needs Triton; ``import
fastsr`` does not. On a CPU-only machine the kernels run under ``TRITON_INTERPRET=1`` (set
before import) for testing.
"""
from __future__ import annotations

import importlib

from fastsr.ops._common import FAMILIES


def register() -> list[str]:
    """Registers the Triton launchers as the CUDA kernels of every op family that has no
    compiled CUDA kernel in fastsr._C. Returns the names of the ops registered."""
    import torch

    from fastsr.ops._common import COMPILED_CUDA

    done = []
    for family in FAMILIES:
        if family in COMPILED_CUDA:
            continue
        module = importlib.import_module(f"{__name__}.{family}")
        for op, fn in module.CUDA_KERNELS.items():
            torch.library.register_kernel(f"fastsr::{op}", "cuda", fn)
            done.append(op)
    return done
