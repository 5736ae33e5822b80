"""Process-level speed settings that fastsr's recommended configuration applies.

glibc's malloc returns large freed blocks to the OS (``munmap`` of mmap-ed chunks and
trimming of the heap top); the next iteration of a training loop then page-faults the
same memory back in. On this kind of machine that cost ~160k page faults, ~11 % of an
fp32 GAN iteration. :func:`tune_allocator` keeps freed memory in the process instead, the
runtime equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


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
