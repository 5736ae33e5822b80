"""Triton kernels of fastsr::ssim (see fastsr/ops/ssim.py for the formulas and
csrc/cpu/ssim.cpp for the CPU twin).

Forward: one program per (image-channel plane, BLOCK_H x BLOCK_W tile of the SSIM map).
It walks the BLOCK_H + win - 1 input rows of the tile once; each row is filtered
horizontally (win shifted, masked loads) into four BLOCK_W vectors (the moments of x, y,
x^2 + y^2, xy) and added to the tile's four accumulators with the vertical weights
g[r - i] of every output row i (a rank-1 update; weights outside the window are 0). The
SSIM map, its masked tile sum (finished by a deterministic torch sum) and, when asked,
the derivative maps [B, Cxy, A_x, A_y] are computed from the accumulators in registers
and written to a temporary buffer.

Gradient (when asked for; the op returns d ssim[n] / d x[n], the backward is a scale): one
program per (plane, BLOCK_H x BLOCK_W tile of the image): the same walk over the map rows
q of the tile's 'full' (zero-padded, transposed) window, filtering each map row
horizontally and accumulating vertically, then dx = s (G*A_x + 2 x G*B + y G*Cxy), dy
likewise, s = 1 / (C Ho Wo). (The CPU kernel fuses both stages and never stores the maps;
on a GPU the two-launch form keeps each program's working set in registers.)

Arithmetic is in float32 for fp32/bf16/fp16 storage (float64 for float64), taken from the
dtype of the maps buffer. Every tensor is addressed through its strides, so
channels_last and strided inputs need no copy.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsr.ops import _common as checks

BLOCK_H = 16
BLOCK_W = 64


@triton.jit
def _fwd_kernel(x_ptr, y_ptr, g_ptr, maps_ptr, part_ptr,
                C, H, W, Ho, Wo,
                sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                c1, c2, n_th, n_tw,
                WIN: tl.constexpr, GX: tl.constexpr, GY: tl.constexpr, K: tl.constexpr,
                BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    n = plane // C
    c = plane % C
    acc_ty = maps_ptr.dtype.element_ty
    rows = th * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tw * BLOCK_W + tl.arange(0, BLOCK_W)
    xb = x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
    yb = y_ptr + n.to(tl.int64) * syn + c.to(tl.int64) * syc
    # four moments: sigma_x^2 and sigma_y^2 are needed only as their sum (see csrc/cpu/ssim.cpp)
    mx = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)
    my = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)
    eq = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)  # G * (x^2 + y^2)
    ep = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)  # G * (x y)
    for rr in range(0, BLOCK_H + WIN - 1):
        r = th * BLOCK_H + rr  # input row
        hx = tl.zeros([BLOCK_W], dtype=acc_ty)
        hy = tl.zeros([BLOCK_W], dtype=acc_ty)
        hq = tl.zeros([BLOCK_W], dtype=acc_ty)
        hp = tl.zeros([BLOCK_W], dtype=acc_ty)
        for b in range(0, WIN):
            cc = cols + b
            m = (cc < W) & (r < H)
            xv = tl.load(xb + r.to(tl.int64) * sxh + cc * sxw, mask=m, other=0.0).to(acc_ty)
            yv = tl.load(yb + r.to(tl.int64) * syh + cc * syw, mask=m, other=0.0).to(acc_ty)
            gb = tl.load(g_ptr + b)
            gx_ = gb * xv
            gy_ = gb * yv
            hx += gx_
            hy += gy_
            hq += gx_ * xv + gy_ * yv
            hp += gx_ * yv
        a = rr - tl.arange(0, BLOCK_H)  # window offset of this input row for each output row
        wv = tl.load(g_ptr + a, mask=(a >= 0) & (a < WIN), other=0.0)
        mx += wv[:, None] * hx[None, :]
        my += wv[:, None] * hy[None, :]
        eq += wv[:, None] * hq[None, :]
        ep += wv[:, None] * hp[None, :]
    mxx = mx * mx
    myy = my * my
    mxy = mx * my
    a1 = 2.0 * mxy + c1
    b1 = mxx + myy + c1
    a2 = 2.0 * (ep - mxy) + c2
    b2 = (eq - mxx - myy) + c2
    inv = 1.0 / (b1 * b2)
    s = a1 * a2 * inv
    valid = (rows[:, None] < Ho) & (cols[None, :] < Wo)
    tile_sum = tl.sum(tl.sum(tl.where(valid, s, 0.0), axis=1), axis=0)
    tl.store(part_ptr + (plane * n_th + th) * n_tw + tw, tile_sum)
    if K > 0:
        rb1 = b2 * inv
        bm = -s * (b1 * inv)
        cm = 2.0 * a1 * inv
        a2inv = 2.0 * a2 * inv
        hw = Ho * Wo
        base = maps_ptr + plane.to(tl.int64) * K * hw
        offs = rows[:, None] * Wo + cols[None, :]
        tl.store(base + offs, bm, mask=valid)
        tl.store(base + hw + offs, cm, mask=valid)
        if GX:
            ax = my * a2inv - 2.0 * mx * (s * rb1 + bm) - my * cm
            tl.store(base + 2 * hw + offs, ax, mask=valid)
        if GY:
            ay = mx * a2inv - 2.0 * my * (s * rb1 + bm) - mx * cm
            tl.store(base + (K - 1) * hw + offs, ay, mask=valid)


@triton.jit
def _grad_kernel(x_ptr, y_ptr, g_ptr, maps_ptr, dx_ptr, dy_ptr,
                C, H, W, Ho, Wo,
                sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                dxn, dxc, dxh, dxw, dyn, dyc, dyh, dyw,
                inv_count,
                WIN: tl.constexpr, GX: tl.constexpr, GY: tl.constexpr, K: tl.constexpr,
                BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    n = plane // C
    c = plane % C
    acc_ty = maps_ptr.dtype.element_ty
    rows = th * BLOCK_H + tl.arange(0, BLOCK_H)  # image rows p
    cols = tw * BLOCK_W + tl.arange(0, BLOCK_W)  # image cols j
    hw = Ho * Wo
    mb = maps_ptr + plane.to(tl.int64) * K * hw
    acc_b = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)
    acc_c = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)
    acc_ax = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)
    acc_ay = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc_ty)
    for qq in range(0, BLOCK_H + WIN - 1):
        q = th * BLOCK_H - (WIN - 1) + qq  # map row
        hb = tl.zeros([BLOCK_W], dtype=acc_ty)
        hc = tl.zeros([BLOCK_W], dtype=acc_ty)
        hax = tl.zeros([BLOCK_W], dtype=acc_ty)
        hay = tl.zeros([BLOCK_W], dtype=acc_ty)
        for b in range(0, WIN):
            cc = cols - b
            m = (cc >= 0) & (cc < Wo) & (q >= 0) & (q < Ho)
            off = q * Wo + cc
            gb = tl.load(g_ptr + b)
            hb += gb * tl.load(mb + off, mask=m, other=0.0)
            hc += gb * tl.load(mb + hw + off, mask=m, other=0.0)
            if GX:
                hax += gb * tl.load(mb + 2 * hw + off, mask=m, other=0.0)
            if GY:
                hay += gb * tl.load(mb + (K - 1) * hw + off, mask=m, other=0.0)
        a = rows - q
        wv = tl.load(g_ptr + a, mask=(a >= 0) & (a < WIN), other=0.0)
        acc_b += wv[:, None] * hb[None, :]
        acc_c += wv[:, None] * hc[None, :]
        if GX:
            acc_ax += wv[:, None] * hax[None, :]
        if GY:
            acc_ay += wv[:, None] * hay[None, :]
    scale = inv_count
    mask = (rows[:, None] < H) & (cols[None, :] < W)
    r64 = rows.to(tl.int64)[:, None]
    c64 = cols.to(tl.int64)[None, :]
    xv = tl.load(x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc + r64 * sxh + c64 * sxw,
                 mask=mask, other=0.0).to(acc_ty)
    yv = tl.load(y_ptr + n.to(tl.int64) * syn + c.to(tl.int64) * syc + r64 * syh + c64 * syw,
                 mask=mask, other=0.0).to(acc_ty)
    if GX:
        d = scale * (acc_ax + 2.0 * xv * acc_b + yv * acc_c)
        tl.store(dx_ptr + n.to(tl.int64) * dxn + c.to(tl.int64) * dxc + r64 * dxh + c64 * dxw,
                 d.to(dx_ptr.dtype.element_ty), mask=mask)
    if GY:
        d = scale * (acc_ay + 2.0 * yv * acc_b + xv * acc_c)
        tl.store(dy_ptr + n.to(tl.int64) * dyn + c.to(tl.int64) * dyc + r64 * dyh + c64 * dyw,
                 d.to(dy_ptr.dtype.element_ty), mask=mask)


def _window(window_size: int, sigma: float, dtype, device) -> torch.Tensor:
    from fastsr.ops.ssim import gaussian_window

    return gaussian_window(window_size, sigma, dtype, device).contiguous()


def _check(x, y, data_range, window_size, sigma, k1, k2, op):
    from fastsr.ops.ssim import _check_op

    _check_op(x, y, data_range, window_size, sigma, k1, k2, op)


def ssim_forward(x: torch.Tensor, y: torch.Tensor, data_range: float, window_size: int, sigma: float,
                 k1: float, k2: float, grad_x: bool, grad_y: bool):
    """Triton fastsr::ssim (same contract as the op): (ssim (N,), d ssim / dx, d ssim / dy),
    a gradient not asked for being an empty (0,) tensor."""
    _check(x, y, data_range, window_size, sigma, k1, k2, "fastsr::ssim")
    N, C, H, W = x.shape
    Ho, Wo = H - window_size + 1, W - window_size + 1
    K = 2 + int(grad_x) + int(grad_y) if (grad_x or grad_y) else 0
    from fastsr.ops.ssim import _grad_like

    acc = checks.acc_dtype(x.dtype)
    dx, dy = _grad_like(x, grad_x), _grad_like(y, grad_y)
    maps = torch.empty((N, C, K, Ho, Wo), dtype=acc, device=x.device)
    n_th, n_tw = triton.cdiv(Ho, BLOCK_H), triton.cdiv(Wo, BLOCK_W)
    part = torch.empty((N, C * n_th * n_tw), dtype=acc, device=x.device)
    if N > 0:
        g = _window(window_size, sigma, acc, x.device)
        c1 = (k1 * data_range) ** 2
        c2 = (k2 * data_range) ** 2
        _fwd_kernel[(N * C, n_th, n_tw)](
            x, y, g, maps, part, C, H, W, Ho, Wo, *x.stride(), *y.stride(), c1, c2, n_th, n_tw,
            WIN=window_size, GX=bool(grad_x), GY=bool(grad_y), K=K, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W)
        if K:
            dxs = dx.stride() if grad_x else (0, 0, 0, 0)
            dys = dy.stride() if grad_y else (0, 0, 0, 0)
            grid = (N * C, triton.cdiv(H, BLOCK_H), triton.cdiv(W, BLOCK_W))
            _grad_kernel[grid](
                x, y, g, maps, dx if grad_x else maps, dy if grad_y else maps,
                C, H, W, Ho, Wo, *x.stride(), *y.stride(), *dxs, *dys, 1.0 / (C * Ho * Wo),
                WIN=window_size, GX=bool(grad_x), GY=bool(grad_y), K=K, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W)
    value = part.sum(1, dtype=torch.float64) / (C * Ho * Wo)
    return value.to(x.dtype), dx, dy


#: The fastsr ops these launchers implement on CUDA (registered by fastsr.kernels.register).
CUDA_KERNELS = {
    "ssim": ssim_forward,
}
