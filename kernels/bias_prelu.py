"""Triton kernels of fastsr::bias_prelu and fastsr::bias_prelu_backward.

    y = PReLU(x + bias[c]);  dz = g if z > 0 else a[c] g;  dbias = sum dz;
    dweight = sum_{z <= 0} g z

Forward is one elementwise pass. Backward writes dx and per-program partial sums of dbias
and dweight in the same pass (NCHW: one program per (plane, block of pixels); channels_last:
one program per (block of pixels, block of channels)), which a deterministic torch sum
finishes. Arithmetic is in float32 for fp32/bf16/fp16 storage.
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
def _fwd_kernel(x_ptr, b_ptr, a_ptr, y_ptr, numel, C, HW, a_stride,
                CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    c = channel_of(offs, C, HW, CHANNELS_LAST)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + c * a_stride, mask=mask, other=0.0).to(tl.float32)
    z = x + b
    y = tl.where(z > 0, z, a * z)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_nchw_kernel(g_ptr, x_ptr, b_ptr, a_ptr, dx_ptr, pb_ptr, pw_ptr, C, HW, a_stride, nblk,
                     BLOCK: tl.constexpr):
    plane = tl.program_id(0)
    blk = tl.program_id(1)
    c = plane % C
    cols = blk * BLOCK + tl.arange(0, BLOCK)
    mask = cols < HW
    offs = plane.to(tl.int64) * HW + cols
    b = tl.load(b_ptr + c).to(tl.float32)
    a = tl.load(a_ptr + c * a_stride).to(tl.float32)
    z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + b
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    pos = z > 0
    d = tl.where(pos, g, a * g)
    tl.store(dx_ptr + offs, d.to(dx_ptr.dtype.element_ty), mask=mask)
    d = tl.where(mask, d, 0.0)
    w = tl.where(mask & (z <= 0), g * z, 0.0)
    tl.store(pb_ptr + plane * nblk + blk, tl.sum(d, axis=0))
    tl.store(pw_ptr + plane * nblk + blk, tl.sum(w, axis=0))


@triton.jit
def _bwd_nhwc_kernel(g_ptr, x_ptr, b_ptr, a_ptr, dx_ptr, pb_ptr, pw_ptr, P, C, a_stride,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask = (rows[:, None] < P) & cmask[None, :]
    offs = rows[:, None] * C + cols[None, :]
    b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + cols * a_stride, mask=cmask, other=0.0).to(tl.float32)
    z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + b[None, :]
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    pos = z > 0
    d = tl.where(pos, g, a[None, :] * g)
    tl.store(dx_ptr + offs, d.to(dx_ptr.dtype.element_ty), mask=mask)
    d = tl.where(mask, d, 0.0)
    w = tl.where(mask & (z <= 0), g * z, 0.0)
    tl.store(pb_ptr + pid_p * C + cols, tl.sum(d, axis=0), mask=cmask)
    tl.store(pw_ptr + pid_p * C + cols, tl.sum(w, axis=0), mask=cmask)


def _check(x, bias, weight, op):
    checks.check_activation(x, op, dtypes=checks.CUDA_DTYPES)
    checks.check_channel_param(bias, x, op, "bias")
    checks.check_channel_param(weight, x, op, "weight", allow_shared=True)


def bias_prelu_forward(x: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Triton forward of fastsr::bias_prelu (same contract as the op)."""
    _check(x, bias, weight, "fastsr::bias_prelu")
    x, cl = kernel_layout(x)
    y = empty_in_layout(x, cl)
    numel = x.numel()
    if numel == 0:
        return y
    C, HW = x.shape[1], x.shape[2] * x.shape[3]
    grid = (triton.cdiv(numel, ELEMENTWISE_BLOCK),)
    _fwd_kernel[grid](x, bias.contiguous(), weight.contiguous(), y, numel, C, HW,
                      0 if weight.numel() == 1 else 1, CHANNELS_LAST=cl, BLOCK=ELEMENTWISE_BLOCK)
    return y


def bias_prelu_backward(grad: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor):
    """Triton backward of fastsr::bias_prelu: returns (dx, dbias, dweight)."""
    _check(x, bias, weight, "fastsr::bias_prelu_backward")
    checks.check_same_as(grad, x, "fastsr::bias_prelu_backward", "grad")
    x, cl = kernel_layout(x)
    grad = in_layout(grad, cl)
    dx = empty_in_layout(x, cl)
    N, C, H, W = x.shape
    HW, P = H * W, N * H * W
    a_stride = 0 if weight.numel() == 1 else 1
    b_c, a_c = bias.contiguous(), weight.contiguous()
    if x.numel() == 0:
        pb = pw = x.new_zeros((1, C), dtype=torch.float32)
    elif cl:
        BLOCK_C = channel_block(C)
        BLOCK_P = max(1, 4096 // BLOCK_C)
        grid = (triton.cdiv(P, BLOCK_P), triton.cdiv(C, BLOCK_C))
        pb = x.new_empty((grid[0], C), dtype=torch.float32)
        pw = torch.empty_like(pb)
        _bwd_nhwc_kernel[grid](grad, x, b_c, a_c, dx, pb, pw, P, C, a_stride,
                               BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    else:
        nblk = triton.cdiv(HW, ROW_BLOCK)
        pb = x.new_empty((N, C, nblk), dtype=torch.float32)
        pw = torch.empty_like(pb)
        _bwd_nchw_kernel[(N * C, nblk)](grad, x, b_c, a_c, dx, pb, pw, C, HW, a_stride, nblk,
                                        BLOCK=ROW_BLOCK)
        pb, pw = pb.transpose(0, 1).reshape(C, -1).t(), pw.transpose(0, 1).reshape(C, -1).t()
    dbias = pb.sum(0, dtype=torch.float32).to(bias.dtype)
    dweight = pw.sum(0, dtype=torch.float32)
    if weight.numel() == 1:
        dweight = dweight.sum().reshape(1)
    return dx, dbias, dweight.to(weight.dtype)


#: The fastsr ops these launchers implement on CUDA (registered by fastsr.kernels.register).
CUDA_KERNELS = {
    "bias_prelu": bias_prelu_forward,
    "bias_prelu_backward": bias_prelu_backward,
}
