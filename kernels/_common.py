"""Launch helpers shared by the Triton kernels."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def kernel_layout(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x`` in a layout the kernels index with flat offsets, and whether it is channels_last.

    Flat index math on a non-contiguous tensor is silently wrong, so anything that is
    neither contiguous nor channels_last is copied to contiguous first."""
    if x.is_contiguous():
        return x, False
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False


def in_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def empty_in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def channel_block(C: int) -> int:
    """Power-of-two channel tile (>= 16) for the channels_last reduction kernels."""
    return max(16, min(128, triton.next_power_of_2(C)))


@triton.jit
def channel_of(offs, C, HW, CHANNELS_LAST: tl.constexpr):
    """Channel index of flat element offsets in an NCHW or NHWC tensor."""
    if CHANNELS_LAST:
        return offs % C
    return (offs // HW) % C


ELEMENTWISE_BLOCK = 1024
ROW_BLOCK = 1024  # elements of one (n, c) plane per program in NCHW reductions
