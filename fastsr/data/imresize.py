"""Bicubic resizing with MATLAB ``imresize`` semantics (the SR papers' degradation).

SR benchmarks make LR images with MATLAB ``imresize(hr, 1/scale, 'bicubic')``: Keys' cubic
convolution kernel with a = -0.5, *antialiased* when downsampling (the kernel is stretched by
1/scale so it also low-pass filters), pixel-centre alignment (output pixel x maps to input
coordinate x/scale + 0.5(1 - 1/scale), 1-based), and symmetric (mirror, edge repeated)
boundary handling. PIL/torch bicubic differ (a = -0.75 in torch, no antialias in torch by
default), which changes PSNR by tenths of a dB, so fastsr implements the MATLAB rule itself.

The resize is separable; each axis is one dense (out, in) weight matrix built in float64
with the boundary reflection folded in, so the image is resized by two matrix products.
"""
from __future__ import annotations

import math

import torch

__all__ = ["cubic_kernel", "resize_matrix", "imresize", "imresize_integer"]


def cubic_kernel(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), support [-2, 2]."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_matrix(in_length: int, out_length: int, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """The (out_length, in_length) float64 matrix ``W`` of a 1-D MATLAB bicubic resize.

    ``y = W @ x`` resizes a signal of ``in_length`` samples. Rows sum to 1. ``scale`` is
    out/in (0.25 for x4 downsampling). Boundary samples are mirrored as MATLAB does
    (``[1..n, n..1]`` periodic), folded into the matrix.
    """
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinate of each output centre
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    dist = u[:, None] - idx
    if scale < 1 and antialiasing:
        w = scale * cubic_kernel(dist * scale)
    else:
        w = cubic_kernel(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # Symmetric boundary: index i (1-based) -> aux[(i - 1) mod 2n] with aux = [1..n, n..1].
    period = 2 * in_length
    m = torch.remainder(idx.long() - 1, period)
    src = torch.where(m < in_length, m, period - 1 - m)  # 0-based source sample
    mat = torch.zeros(out_length, in_length, dtype=torch.float64)
    mat.scatter_add_(1, src, w)
    return mat


_CACHE: dict = {}


def _cached_matrix(n_in: int, n_out: int, scale: float, aa: bool) -> torch.Tensor:
    key = (n_in, n_out, float(scale), aa)
    mat = _CACHE.get(key)
    if mat is None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        mat = _CACHE[key] = resize_matrix(n_in, n_out, scale, aa)
    return mat


def imresize(img: torch.Tensor, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """Resize by ``scale`` with MATLAB ``imresize(img, scale, 'bicubic')`` semantics.

    Args:
        img: float tensor (C, H, W) or (N, C, H, W), any value range (SR data is [0, 1]).
        scale: positive factor; output size is ``ceil(H * scale), ceil(W * scale)`` as in
            MATLAB (0.25 for x4 LR generation, 4 for bicubic upsampling).
        antialiasing: widen the kernel when downsampling (MATLAB default True).

    Returns:
        The resized tensor, same dtype and leading dimensions, values *not* clamped or
        rounded (cubic overshoot can leave [0, 1] slightly; clamp/quantise as needed).

    Raises:
        TypeError: ``img`` not a floating tensor. ValueError: bad ``scale`` or shape.
    """
    if not isinstance(img, torch.Tensor) or not img.is_floating_point():
        raise TypeError(f"imresize: img must be a floating-point torch.Tensor, got {type(img).__name__}"
                        + (f" of dtype {img.dtype}" if isinstance(img, torch.Tensor) else ""))
    if img.dim() not in (3, 4):
        raise ValueError(f"imresize: img must be (C, H, W) or (N, C, H, W), got shape {tuple(img.shape)}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"imresize: scale must be a positive finite number, got {scale!r}")
    h, w = img.shape[-2:]
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    # Guard ceil against float error (e.g. 96 * (1/4) is exact, 100 * 0.3 = 30.000000000000004).
    if abs(h * scale - round(h * scale)) < 1e-9:
        out_h = round(h * scale)
    if abs(w * scale - round(w * scale)) < 1e-9:
        out_w = round(w * scale)
    compute = torch.float64 if img.dtype == torch.float64 else torch.float32
    wh = _cached_matrix(h, out_h, scale, antialiasing).to(device=img.device, dtype=compute)
    ww = _cached_matrix(w, out_w, scale, antialiasing).to(device=img.device, dtype=compute)
    x = img.to(compute)
    out = torch.matmul(torch.matmul(wh, x), ww.t())
    return out.to(img.dtype)


def _phase_taps(scale: float) -> tuple[int, torch.Tensor, int]:
    """For an integer factor ``s`` (``scale`` = s or 1/s): ``(step, weights, start)`` of the
    1-D MATLAB bicubic resize as a convolution: output ``j`` of phase ``p`` (``p < s`` when
    upsampling, one phase when downsampling) is ``sum_k weights[p, k] x[base(j) + start + k]``
    with ``base = s j`` (down) or ``j`` (up); ``step`` is the input stride per output."""
    up = scale >= 1
    s = round(scale) if up else round(1 / scale)
    phases = s if up else 1
    kernel_width = 4.0 if up else 4.0 * s
    rows, starts = [], []
    for p in range(phases):
        x = float(s * 8 + p + 1) if up else 9.0  # an interior output (1-based); the taps repeat
        u = x / scale + 0.5 * (1.0 - 1.0 / scale)
        left = math.floor(u - kernel_width / 2)
        taps = math.ceil(kernel_width) + 2
        dist = u - (left + torch.arange(taps, dtype=torch.float64))
        w = cubic_kernel(dist) if up else cubic_kernel(dist / s) / s
        rows.append(w / w.sum())
        base = (x - 1 - p) / s if up else s * (x - 1)
        starts.append(left - 1 - int(base))
    start = min(starts)
    width = max(st + r.numel() for st, r in zip(starts, rows)) - start
    weights = torch.zeros(phases, width, dtype=torch.float64)
    for p, (st, r) in enumerate(zip(starts, rows)):
        weights[p, st - start:st - start + r.numel()] = r
    return (1 if up else s), weights, start


def _resize_last_axis(x: torch.Tensor, scale: float) -> torch.Tensor:
    step, weights, start = _phase_taps(scale)
    n = x.shape[-1]
    n_out = n * weights.shape[0] if step == 1 else n // step
    pad = weights.shape[1] + abs(start) + step
    # MATLAB's symmetric boundary: index i -> aux[i mod 2n], aux = [0..n-1, n-1..0]
    idx = torch.remainder(torch.arange(-pad, n + pad, device=x.device), 2 * n)
    idx = torch.where(idx < n, idx, 2 * n - 1 - idx)
    lead = x.shape[:-1]
    xp = x.index_select(-1, idx).reshape(-1, 1, n + 2 * pad)[..., pad + start:]
    w = weights.to(x.device, x.dtype)[:, None, :]
    if step == 1:  # upsampling: one output channel per phase, interleaved
        y = torch.nn.functional.conv1d(xp, w)[..., :n]
        return y.transpose(1, 2).reshape(*lead, n_out)
    y = torch.nn.functional.conv1d(xp, w, stride=step)[..., :n_out]
    return y.reshape(*lead, n_out)


def imresize_integer(img: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`imresize` for an integer factor (``scale`` = s or 1/s, s >= 2), as strided 1-D
    convolutions: the same values up to float rounding, in time linear in the image size
    (:func:`imresize`'s dense matrices grow with its square), so fit for large images and
    inside models (e.g. the back-projection of :class:`fastsr.models.NonBNResNet`).

    Args:
        img: float tensor (C, H, W) or (N, C, H, W), any layout; downsampling needs H and W
            multiples of s.
        scale: s or 1/s for an integer s >= 2 (4 or 0.25 for x4).

    Returns:
        The resized tensor in img's dtype (computed in float32, float64 for float64 input).

    Raises:
        TypeError: ``img`` not a floating tensor. ValueError: ``scale`` not an integer factor
        or its inverse, a bad shape, or H / W not multiples of s when downsampling.
    """
    if not isinstance(img, torch.Tensor) or not img.is_floating_point():
        raise TypeError(f"imresize_integer: img must be a floating-point torch.Tensor, got {type(img).__name__}")
    if img.dim() not in (3, 4):
        raise ValueError(f"imresize_integer: img must be (C, H, W) or (N, C, H, W), got shape {tuple(img.shape)}")
    ok = isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0
    s = (round(scale) if scale >= 1 else round(1 / scale)) if ok else 0
    if not ok or s < 2 or abs((s if scale >= 1 else 1 / s) - scale) > 1e-9:
        raise ValueError(f"imresize_integer: scale must be an integer s >= 2 or 1/s, got {scale!r}")
    if scale < 1 and (img.shape[-1] % s or img.shape[-2] % s):
        raise ValueError(f"imresize_integer: downsampling by {s} needs H and W multiples of {s}, got "
                         f"{tuple(img.shape[-2:])}")
    compute = torch.float64 if img.dtype == torch.float64 else torch.float32
    x = img.to(compute)
    x = _resize_last_axis(x, scale)
    x = _resize_last_axis(x.transpose(-1, -2), scale).transpose(-1, -2)
    return x.to(img.dtype)
