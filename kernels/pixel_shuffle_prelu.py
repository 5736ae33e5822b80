"""Triton kernels of fastsr::pixel_shuffle_prelu and fastsr::pixel_shuffle_prelu_backward.

    y[n, c, h*r + i, w*r + j] = PReLU(x[n, c*r*r + i*r + j, h, w]; a[c])
    dx = unshuffle(g * (1 if v > 0 else a[c]));  dweight[c] = sum_{v <= 0} g * v

Every program walks a block of *output* elements (contiguous in y and g) and gathers /
scatters the matching x / dx elements, whose index follows from the output index in the
NCHW or channels_last layout (the output takes the layout of x). The backward writes dx and
per-program dweight partial sums in the same pass (NCHW: one program per (output plane,
block); channels_last: one program per (block of output pixels, block of channels)),
which a deterministic torch sum finishes. Arithmetic in float32 for fp32/bf16/fp16 storage.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsr.kernels._common import ELEMENTWISE_BLOCK, ROW_BLOCK, channel_block, in_layout, kernel_layout


@triton.jit
def _source_index(n, c, oh, ow, C, H, W, R: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """Flat index in x of the element that lands at output (n, c, oh, ow)."""
    h = oh // R
    i = oh % R
    w = ow // R
    j = ow % R
    cin = c * (R * R) + i * R + j
    if CHANNELS_LAST:
        return ((n * H + h) * W + w) * (C * R * R) + cin
    return ((n * (C * R * R) + cin) * H + h) * W + w


@triton.jit
def _fwd_kernel(x_ptr, a_ptr, y_ptr, numel, C, H, W, a_stride,
                R: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    Wr = W * R
    Hr = H * R
    if CHANNELS_LAST:
        c = offs % C
        t = offs // C
        ow = t % Wr
        t = t // Wr
        oh = t % Hr
        n = t // Hr
    else:
        ow = offs % Wr
        t = offs // Wr
        oh = t % Hr
        t = t // Hr
        c = t % C
        n = t // C
    src = _source_index(n, c, oh, ow, C, H, W, R, CHANNELS_LAST)
    v = tl.load(x_ptr + src, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + c * a_stride, mask=mask, other=0.0).to(tl.float32)
    y = tl.where(v > 0, v, a * v)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_nchw_kernel(g_ptr, x_ptr, a_ptr, dx_ptr, pw_ptr, C, H, W, a_stride, nblk,
                     R: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0)  # n*C + c of the output
    blk = tl.program_id(1)
    n = plane // C
    c = plane % C
    Wr = W * R
    HWr = H * R * Wr
    o = blk * BLOCK + tl.arange(0, BLOCK)
    mask = o < HWr
    oh = o // Wr
    ow = o % Wr
    src = _source_index(n.to(tl.int64), c, oh, ow, C, H, W, R, False)
    a = tl.load(a_ptr + c * a_stride).to(tl.float32)
    g = tl.load(g_ptr + plane.to(tl.int64) * HWr + o, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(x_ptr + src, mask=mask, other=0.0).to(tl.float32)
    d = tl.where(v > 0, g, a * g)
    tl.store(dx_ptr + src, d.to(dx_ptr.dtype.element_ty), mask=mask)
    w = tl.where(mask & (v <= 0), g * v, 0.0)
    tl.store(pw_ptr + plane * nblk + blk, tl.sum(w, axis=0))


@triton.jit
def _bwd_nhwc_kernel(g_ptr, x_ptr, a_ptr, dx_ptr, pw_ptr, P, C, H, W, a_stride,
                     R: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)  # output pixels (n, oh, ow)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = rows < P
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
    Wr = W * R
    Hr = H * R
    ow = rows % Wr
    t = rows // Wr
    oh = t % Hr
    n = t // Hr
    src = _source_index(n[:, None], cols[None, :], oh[:, None], ow[:, None], C, H, W, R, True)
    a = tl.load(a_ptr + cols * a_stride, mask=cmask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + rows[:, None] * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    v = tl.load(x_ptr + src, mask=mask, other=0.0).to(tl.float32)
    d = tl.where(v > 0, g, a[None, :] * g)
    tl.store(dx_ptr + src, d.to(dx_ptr.dtype.element_ty), mask=mask)
    w = tl.where(mask & (v <= 0), g * v, 0.0)
    tl.store(pw_ptr + pid_p * C + cols, tl.sum(w, axis=0), mask=cmask)


def _check(x, weight, upscale_factor, op):
    from fastsr.ops.pixel_shuffle_prelu import _check as check

    check(x, weight, upscale_factor, op)


def pixel_shuffle_prelu_forward(x: torch.Tensor, weight: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    """Triton forward of fastsr::pixel_shuffle_prelu (same contract as the op)."""
    _check(x, weight, upscale_factor, "fastsr::pixel_shuffle_prelu")
    r = upscale_factor
    x, cl = kernel_layout(x)
    N, Cin, H, W = x.shape
    C = Cin // (r * r)
    fmt = torch.channels_last if cl else torch.contiguous_format
    y = torch.empty((N, C, H * r, W * r), dtype=x.dtype, device=x.device, memory_format=fmt)
    numel = y.numel()
    if numel == 0:
        return y
    grid = (triton.cdiv(numel, ELEMENTWISE_BLOCK),)
    _fwd_kernel[grid](x, weight.contiguous(), y, numel, C, H, W, 0 if weight.numel() == 1 else 1,
                      R=r, CHANNELS_LAST=cl, BLOCK=ELEMENTWISE_BLOCK)
    return y


def pixel_shuffle_prelu_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, upscale_factor: int):
    """Triton backward of fastsr::pixel_shuffle_prelu: returns (dx, dweight)."""
    from fastsr.ops.pixel_shuffle_prelu import _check_grad

    op = "fastsr::pixel_shuffle_prelu_backward"
    _check(x, weight, upscale_factor, op)
    _check_grad(grad, x, upscale_factor, op)
    r = upscale_factor
    x, cl = kernel_layout(x)
    grad = in_layout(grad, cl)
    dx = torch.empty_like(x, memory_format=torch.channels_last if cl else torch.contiguous_format)
    N, Cin, H, W = x.shape
    C = Cin // (r * r)
    a_stride = 0 if weight.numel() == 1 else 1
    a_c = weight.contiguous()
    if x.numel() == 0:
        pw = x.new_zeros((1, C), dtype=torch.float32)
    elif cl:
        P = N * H * r * W * r
        BLOCK_C = channel_block(C)
        BLOCK_P = max(1, 4096 // BLOCK_C)
        grid = (triton.cdiv(P, BLOCK_P), triton.cdiv(C, BLOCK_C))
        pw = x.new_empty((grid[0], C), dtype=torch.float32)
        _bwd_nhwc_kernel[grid](grad, x, a_c, dx, pw, P, C, H, W, a_stride,
                               R=r, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    else:
        nblk = triton.cdiv(H * r * W * r, ROW_BLOCK)
        pw = x.new_empty((N, C, nblk), dtype=torch.float32)
        _bwd_nchw_kernel[(N * C, nblk)](grad, x, a_c, dx, pw, C, H, W, a_stride, nblk,
                                        R=r, BLOCK=ROW_BLOCK)
        pw = pw.transpose(0, 1).reshape(C, -1).t()
    dweight = pw.sum(0, dtype=torch.float32)
    if weight.numel() == 1:
        dweight = dweight.sum().reshape(1)
    return dx, dweight.to(weight.dtype)


#: The fastsr ops these launchers implement on CUDA (registered by fastsr.kernels.register).
CUDA_KERNELS = {
    "pixel_shuffle_prelu": pixel_shuffle_prelu_forward,
    "pixel_shuffle_prelu_backward": pixel_shuffle_prelu_backward,
}
