"""The checkerboard of a sub-pixel upsampler: the energy of the period-``scale`` pattern that
SR adds to smooth regions of an image.

A sub-pixel convolution (ESPCN's PixelShuffle) computes each of the ``scale**2`` output
phases -- the pixel (y, x) has phase (y mod scale, x mod scale) -- with its own kernel. When
these kernels disagree, flat areas come out with a fixed ``scale`` x ``scale`` pattern
repeated over the image (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts";
Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"). Its measure here:

1. ``D = Y(SR) - Y(bicubic)``, the Y channel (BT.601, :func:`fastsr.metrics.rgb_to_ycbcr`) on
   the [0, 255] scale, 8-bit quantised like :func:`fastsr.metrics.psnr`. Bicubic
   (MATLAB ``imresize``) is phase-free on smooth content, so ``D`` holds what SR added.
2. **Smooth regions**: the image is cut into blocks of ``block`` x ``block`` HR pixels
   (default ``8 * scale``) on the grid of the LR pixels (origin at (0, 0)); a block is smooth
   when the mean gradient magnitude of the HR Y channel over it,
   ``mean(sqrt(dY/dx**2 + dY/dy**2))`` with central differences (one-sided at the image
   border), is at most ``max_gradient`` 8-bit levels per pixel.
3. In each smooth block, the Hann-windowed mean of ``D`` over the pixels of each phase,
   ``m[a, b] = sum w D / sum w`` over pixels with phase (a, b), ``w(y, x) = h(y) h(x)``,
   ``h(n) = sin(pi (n + 1/2) / block)**2``; the period-``scale`` component is
   ``p = m - mean(m)`` and the block's energy ``mean(p**2)``. The window makes a slow ramp
   of ``D`` leak almost nothing into ``p``; since the window's sum over every phase is the
   same, ``m`` of a pure period-``scale`` pattern ``q`` is exactly ``q`` and its energy
   exactly ``mean(q**2) - mean(q)**2`` (its energy at the harmonics ``k * block / scale``
   of the block's discrete Fourier transform, DC excluded).
4. The image's **checkerboard energy** is the mean of the smooth blocks' energies, in
   8-bit levels squared (its square root is the RMS amplitude of the pattern in levels);
   NaN when the image has no smooth block.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fastsr.metrics.psnr_ssim import _Image, prepare_y

__all__ = ["periodic_component", "block_energies", "smooth_blocks", "checkerboard_energy"]


def _check_int(fn: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _hann(n: int, dtype, device) -> torch.Tensor:
    k = torch.arange(n, dtype=dtype, device=device)
    return torch.sin(math.pi * (k + 0.5) / n) ** 2


def periodic_component(x: torch.Tensor, period: int, window: bool = False) -> torch.Tensor:
    """The period-``period`` pattern of ``x``: the mean of each of the ``period**2`` phases
    minus the mean of these means (step 3 of the module docstring).

    Args:
        x: (..., H, W) floating tensor, H and W multiples of ``period``.
        period: the pattern's period in pixels (the SR scale).
        window: weight the pixels by the separable Hann window ``h(y) h(x)`` over (H, W)
            (H, W at least 2 * ``period``), which keeps slow ramps out of the result.

    Returns:
        (..., period, period) tensor, same dtype: ``p[..., a, b]`` for phase (a, b); zero
        when ``x`` is constant over each ``period`` x ``period`` cell (a nearest-neighbour
        upsampled image).

    Raises:
        ValueError: ``period`` not an int >= 1, H or W not a multiple of it, x not at
            least 2-D or not floating point.
    """
    period = _check_int("periodic_component", "period", period, 1)
    if x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"periodic_component: x must be a floating tensor (..., H, W), got {x.dtype} "
                         f"{tuple(x.shape)}")
    H, W = x.shape[-2:]
    if H % period or W % period or H == 0 or W == 0:
        raise ValueError(f"periodic_component: H and W must be positive multiples of period={period}, got {H}x{W}")
    cells = x.unflatten(-2, (H // period, period)).unflatten(-1, (W // period, period))  # (..., h, a, w, b)
    if window:
        if H < 2 * period or W < 2 * period:
            raise ValueError(f"periodic_component: window=True needs H, W >= 2 * period, got {H}x{W}")
        wy = _hann(H, x.dtype, x.device).view(H // period, period, 1, 1)
        wx = _hann(W, x.dtype, x.device).view(W // period, period)
        w = wy * wx
        phase = (cells * w).sum(dim=(-4, -2)) / w.sum(dim=(-4, -2))
    else:
        phase = cells.mean(dim=(-4, -2))
    return phase - phase.mean(dim=(-2, -1), keepdim=True)


def block_energies(d: torch.Tensor, block: int, period: int) -> torch.Tensor:
    """The energy ``mean(p**2)`` of the Hann-windowed period-``period`` component of each
    ``block`` x ``block`` block of ``d`` (step 3 of the module docstring).

    Args:
        d: (..., H, W) floating tensor; the blocks start at (0, 0) and the rows and columns
            that do not fill one are left out.
        block: block side, a multiple of ``period`` and >= ``2 * period``.
        period: the pattern's period (the SR scale).

    Returns:
        (..., H // block, W // block) tensor, same dtype.
    """
    H, W = d.shape[-2:]
    nh, nw = H // block, W // block
    blocks = d[..., : nh * block, : nw * block].unflatten(-2, (nh, block)).unflatten(-1, (nw, block))
    return periodic_component(blocks.transpose(-3, -2), period, window=True).pow(2).mean(dim=(-2, -1))


def _gradient(y: torch.Tensor) -> torch.Tensor:
    """|grad y| of (N, 1, H, W) by central differences (one-sided at the border)."""
    gy = torch.gradient(y, dim=-2)[0] if y.shape[-2] > 1 else torch.zeros_like(y)
    gx = torch.gradient(y, dim=-1)[0] if y.shape[-1] > 1 else torch.zeros_like(y)
    return torch.sqrt(gx * gx + gy * gy)


def smooth_blocks(hr: _Image, block: int, max_gradient: float = 1.0, data_range: float | None = None,
                  *, quantize: bool = True) -> torch.Tensor:
    """Which ``block`` x ``block`` blocks of ``hr`` are smooth (step 2 of the module docstring).

    Args:
        hr: (N, 3 or 1, H, W) or (C, H, W) tensor in [0, ``data_range``], or an HWC / HW
            numpy array (as :func:`fastsr.metrics.psnr`).
        block: block side in pixels; the last rows / columns that do not fill a block are
            not used.
        max_gradient: largest mean gradient magnitude of a smooth block, in 8-bit levels of
            Y per pixel.
        quantize: round float inputs to 8 bits first.

    Returns:
        bool tensor (N, H // block, W // block).

    Raises:
        ValueError: ``block`` not an int >= 1 or larger than the image, ``max_gradient``
            negative or not finite; the errors of :func:`fastsr.metrics.psnr`.
    """
    block = _check_int("smooth_blocks", "block", block, 1)
    if isinstance(max_gradient, bool) or not isinstance(max_gradient, (int, float)) or not (
            math.isfinite(max_gradient) and max_gradient >= 0):
        raise ValueError(f"smooth_blocks: max_gradient must be a finite number >= 0, got {max_gradient!r}")
    y = prepare_y(hr, data_range, quantize, "hr", "smooth_blocks")
    H, W = y.shape[-2:]
    if H < block or W < block:
        raise ValueError(f"smooth_blocks: block={block} is larger than the {H}x{W} image")
    g = _gradient(y)[..., : H // block * block, : W // block * block]
    g = g.unflatten(-2, (H // block, block)).unflatten(-1, (W // block, block)).mean(dim=(-3, -1))
    return g[:, 0] <= max_gradient


def checkerboard_energy(sr: _Image, bicubic: _Image, hr: _Image, scale: int, *, block: int | None = None,
                        max_gradient: float = 1.0, data_range: float | None = None,
                        quantize: bool = True) -> torch.Tensor:
    """Checkerboard energy of ``sr``: the energy of the period-``scale`` component of
    ``Y(sr) - Y(bicubic)`` on the smooth blocks of ``hr``, in 8-bit levels squared (the
    formula: this module's docstring).

    Args:
        sr, bicubic, hr: images of one shape, as :func:`fastsr.metrics.psnr` takes them
            ((N, C, H, W) / (C, H, W) tensors in [0, ``data_range``] or uint8, or HWC numpy
            arrays; RGB or one channel); ``bicubic`` is the MATLAB-bicubic upscaled LR image
            (:func:`fastsr.evaluate.bicubic_upscale`).
        scale: the SR factor, the period of the pattern (H and W need not be multiples of
            it: whole blocks are used).
        block: block side, a multiple of ``scale``; default ``8 * scale``.
        max_gradient: smoothness threshold of :func:`smooth_blocks` (8-bit levels / pixel).
        quantize: round float inputs to 8 bits first (as the PSNR).

    Returns:
        float64 tensor (N,): per image, the mean block energy (levels**2), NaN where no
        block is smooth.

    Raises:
        ValueError: ``scale`` / ``block`` not positive ints, ``block`` not a multiple of
            ``scale`` or below ``2 * scale``, images of different shapes, and the errors of
            :func:`fastsr.metrics.psnr`.
    """
    scale = _check_int("checkerboard_energy", "scale", scale, 1)
    block = 8 * scale if block is None else _check_int("checkerboard_energy", "block", block, 1)
    if block % scale or block < 2 * scale:
        raise ValueError(f"checkerboard_energy: block must be a multiple of scale={scale} and >= {2 * scale}, "
                         f"got {block}")
    if not (sr.shape == bicubic.shape == hr.shape):
        raise ValueError(f"checkerboard_energy: sr, bicubic and hr must have one shape, got {tuple(sr.shape)}, "
                         f"{tuple(bicubic.shape)}, {tuple(hr.shape)}")
    fn = "checkerboard_energy"
    d = prepare_y(sr, data_range, quantize, "sr", fn) - prepare_y(bicubic, data_range, quantize, "bicubic", fn)
    mask = smooth_blocks(hr, block, max_gradient, data_range, quantize=quantize)
    energy = block_energies(d[:, 0], block, scale)  # (N, nh, nw)
    count = mask.sum(dim=(-2, -1))
    total = torch.where(mask, energy, torch.zeros_like(energy)).sum(dim=(-2, -1))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
