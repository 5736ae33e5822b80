"""Triton kernels of fastsr::bias_residual, fastsr::bias_residual_backward and
fastsr::channel_sum.

    y = residual + scale (x + bias[c]);  dx = scale g;  dbias[c] = scale sum g

Backward and channel_sum share one kernel (WRITE_DX selects whether dx is written) that
stores per-program partial channel sums, finished by a torch sum.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsr.kernels._common import (
    ELEMENTWISE_BLOCK,
    ROW_BLOCK,
    channel_block,
    channel_of,
    empty_in_layout,
    in_layout,
    kernel_layout,
)
from fastsr.ops import _common as checks


@triton.jit
def _fwd_kernel(x_ptr, b_ptr, r_ptr, y_ptr, numel, C, HW, scale,
                CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    c = channel_of(offs, C, HW, CHANNELS_LAST)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, (r + scale * (x + b)).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sum_nchw_kernel(g_ptr, dx_ptr, p_ptr, HW, nblk, scale, WRITE_DX: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0)
    blk = tl.program_id(1)
    cols = blk * BLOCK + tl.arange(0, BLOCK)
    mask = cols < HW
    offs = plane.to(tl.int64) * HW + cols
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if WRITE_DX:
        tl.store(dx_ptr + offs, (scale * g).to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(p_ptr + plane * nblk + blk, tl.sum(g, axis=0))


@triton.jit
def _sum_nhwc_kernel(g_ptr, dx_ptr, p_ptr, P, C, scale, WRITE_DX: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask = (rows[:, None] < P) & cmask[None, :]
    offs = rows[:, None] * C + cols[None, :]
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if WRITE_DX:
        tl.store(dx_ptr + offs, (scale * g).to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(p_ptr + pid_p * C + cols, tl.sum(g, axis=0), mask=cmask)


def bias_residual_forward(x, bias, residual, scale):
    """Triton forward of fastsr::bias_residual (same contract as the op)."""
    op = "fastsr::bias_residual"
    checks.check_activation(x, op, dtypes=checks.CUDA_DTYPES)
    checks.check_channel_param(bias, x, op, "bias")
    checks.check_same_as(residual, x, op, "residual")
    checks.check_finite(scale, op, "scale")
    x, cl = kernel_layout(x)
    residual = in_layout(residual, cl)
    y = empty_in_layout(x, cl)
    numel = x.numel()
    if numel == 0:
        return y
    grid = (triton.cdiv(numel, ELEMENTWISE_BLOCK),)
    _fwd_kernel[grid](x, bias.contiguous(), residual, y, numel, x.shape[1], x.shape[2] * x.shape[3],
                      float(scale), CHANNELS_LAST=cl, BLOCK=ELEMENTWISE_BLOCK)
    return y


def _scale_and_sum(g, scale, write_dx, dtype):
    g, cl = kernel_layout(g)
    N, C, H, W = g.shape
    HW, P = H * W, N * H * W
    dx = empty_in_layout(g, cl) if write_dx else g  # g is only a placeholder when not written
    if g.numel() == 0:
        partial = g.new_zeros((1, C), dtype=torch.float32)
    elif cl:
        BLOCK_C = channel_block(C)
        BLOCK_P = max(1, 4096 // BLOCK_C)
        grid = (triton.cdiv(P, BLOCK_P), triton.cdiv(C, BLOCK_C))
        partial = g.new_empty((grid[0], C), dtype=torch.float32)
        _sum_nhwc_kernel[grid](g, dx, partial, P, C, float(scale), WRITE_DX=write_dx,
                               BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    else:
        nblk = triton.cdiv(HW, ROW_BLOCK)
        partial = g.new_empty((N, C, nblk), dtype=torch.float32)
        _sum_nchw_kernel[(N * C, nblk)](g, dx, partial, HW, nblk, float(scale), WRITE_DX=write_dx,
                                        BLOCK=ROW_BLOCK)
        partial = partial.transpose(0, 1).reshape(C, -1).t()
    return dx, (partial.sum(0) * scale).to(dtype)


def bias_residual_backward(grad, bias, scale):
    """Triton backward of fastsr::bias_residual: returns (dx = scale * grad, dbias)."""
    op = "fastsr::bias_residual_backward"
    checks.check_activation(grad, op, "grad", dtypes=checks.CUDA_DTYPES)
    checks.check_channel_param(bias, grad, op, "bias")
    checks.check_finite(scale, op, "scale")
    return _scale_and_sum(grad, scale, True, bias.dtype)


def channel_sum(x, scale, dtype):
    """Triton fastsr::channel_sum: ``scale * x.sum((0, 2, 3))`` in ``dtype``."""
    checks.check_activation(x, "fastsr::channel_sum", dtypes=checks.CUDA_DTYPES)
    checks.check_finite(scale, "fastsr::channel_sum", "scale")
    return _scale_and_sum(x, scale, False, dtype)[1]


#: The fastsr ops these launchers implement on CUDA (registered by fastsr.kernels.register).
CUDA_KERNELS = {
    "bias_residual": bias_residual_forward,
    "bias_residual_backward": bias_residual_backward,
    "channel_sum": channel_sum,
}
