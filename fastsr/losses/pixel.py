"""Pixel-loss compositions: the SSIM + L1 mix of Zhao et al. 2017 (over
:class:`fastsr.nn.SSIMLoss` and :class:`fastsr.nn.L1Loss`; the single-term pixel losses are
those modules themselves), the LR-consistency (back-projection) term and the checkerboard
term (the error at the sub-pixel grid's frequencies)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from fastsr import nn as fnn
from fastsr.data.imresize import resize_matrix

__all__ = ["SSIML1Loss", "LRConsistencyLoss"]


class SSIML1Loss(nn.Module):
    """``alpha * (1 - SSIM(sr, hr)) + (1 - alpha) * L1(sr, hr)``, both terms means over the batch.

    SSIM is :class:`fastsr.nn.SSIMLoss` (11x11 Gaussian, sigma 1.5, 'valid', Wang et al.
    2004, eq. 13), L1 is :class:`fastsr.nn.L1Loss`. ``alpha = 1`` (default) is the pure SSIM
    loss, ``alpha = 0.84`` the mix of Zhao et al. 2017 ("Loss functions for image restoration
    with neural networks", eq. 12, there with MS-SSIM and a Gaussian-weighted L1; here
    single-scale SSIM and plain L1).

    Args:
        alpha: in [0, 1].
        data_range: L of SSIM (1.0 for [0, 1] images).
        fused: both terms use the fused kernels (``True``) or the plain-PyTorch references
            (``False``); setting ``fused`` later sets both. No parameters or buffers: the
            state_dict is empty either way.

    Forward: ``(sr, hr)`` (N, C, H, W) of the same shape, dtype and device, H, W >= 11,
    float32/bfloat16 (or float64 with ``fused=False``); returns a 0-D tensor, 0 for
    identical images.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or bad ``data_range`` (at construction); shape
            or device mismatch (at call, the ops' checks).
        TypeError: non-tensor or unsupported dtype (at call).
    """

    def __init__(self, alpha: float = 1.0, data_range: float = 1.0, fused: bool = True):
        super().__init__()
        if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"SSIML1Loss: alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.ssim = fnn.SSIMLoss(data_range=data_range, reduction="mean", fused=fused)
        self.l1 = fnn.L1Loss(reduction="mean", fused=fused)

    @property
    def fused(self) -> bool:
        return self.ssim.fused and self.l1.fused

    @fused.setter
    def fused(self, value: bool) -> None:
        self.ssim.fused = self.l1.fused = bool(value)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        loss = self.alpha * self.ssim(sr, hr)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * self.l1(sr, hr)
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, fused={self.fused}"


def _check_sr_lr(owner: str, sr, lr, s: int, second: str = "lr") -> None:
    """The checks of a loss on ``(sr, lr)``: floating (N, C, H, W) tensors on one device, sr
    ``s`` times lr's size (the errors its docstring names; ``s = 1``: one shape)."""
    for name, t in (("sr", sr), (second, lr)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{owner}: {name} must be a floating-point tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{owner}: {name} must be (N, C, H, W), got shape {tuple(t.shape)}")
    if sr.shape[:2] != lr.shape[:2] or sr.shape[-2:] != (lr.shape[-2] * s, lr.shape[-1] * s):
        raise ValueError(f"{owner}: sr must be lr's size times {s}, got sr {tuple(sr.shape)} "
                         f"and lr {tuple(lr.shape)}" if s > 1 else
                         f"{owner}: sr and hr must have one shape, got {tuple(sr.shape)} and {tuple(lr.shape)}")
    if sr.device != lr.device:
        raise ValueError(f"{owner}: sr and {second} must be on one device, got {sr.device} and {lr.device}")


def _check_scale(owner: str, scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ValueError(f"{owner}: scale must be an integer >= 2, got {scale!r}")
    return scale


class LRConsistencyLoss(nn.Module):
    """``MSE(down(sr), lr)``: how far the SR image, taken back through the bicubic
    degradation, is from the LR input it was made from (the back-projection idea of
    "Deep Back-Projection Networks for Super-Resolution", Haris et al. 2018, used here as a
    training loss).

    ``down`` is MATLAB ``imresize(sr, 1/scale)`` (antialiased bicubic,
    :func:`fastsr.data.imresize`), the degradation that makes fastsr's LR training inputs.
    For that linear degradation the MMSE estimate ``E[HR | LR]`` satisfies
    ``down(E[HR | LR]) = LR`` exactly, so the term does not move the optimum of an MSE-trained
    generator; it weights the low-frequency part of the error, which a pixel loss
    dominated by irrecoverable detail learns slowly. An SR image whose local means drift from
    the LR's (a level-dependent colour cast) is penalised directly. Only meaningful when the
    training LR is made by the bicubic degradation (``data.degradation: bicubic``).

    Args:
        scale: the SR factor (integer >= 2).

    Forward: ``(sr, lr)`` with sr (N, C, scale*h, scale*w) and lr (N, C, h, w), floating
    point in [0, 1], same dtype and device; returns a 0-D float32 tensor (float64 for float64
    inputs), the mean over all LR pixels; 0 when ``down(sr) == lr``.

    Raises:
        ValueError: ``scale`` not an integer >= 2 (at construction); shapes that are not
            4-D or whose sizes are not ``scale`` times apart, or a device mismatch (at call).
        TypeError: non-floating-point inputs (at call).
    """

    def __init__(self, scale: int):
        super().__init__()
        self.scale = _check_scale("LRConsistencyLoss", scale)
        self._mats: dict = {}

    def _matrix(self, n: int, like: torch.Tensor) -> torch.Tensor:
        key = (n, like.device, like.dtype)
        m = self._mats.get(key)
        if m is None:
            if len(self._mats) > 64:
                self._mats.clear()
            m = self._mats[key] = resize_matrix(n, n // self.scale, 1.0 / self.scale).to(like.device, like.dtype)
        return m

    def forward(self, sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        _check_sr_lr("LRConsistencyLoss", sr, lr, self.scale)
        x = sr if sr.dtype == torch.float64 else sr.float()
        down = self._matrix(sr.shape[-2], x) @ x @ self._matrix(sr.shape[-1], x).t()
        return torch.nn.functional.mse_loss(down, lr.to(x.dtype))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class CheckerboardLoss(nn.Module):
    """The energy of the period-``scale`` component of the error ``sr - hr``, in 8-bit levels
    squared: a loss on the frequencies where a sub-pixel convolution draws its checkerboard
    (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution").

    ``D = 255 (sr - hr)`` per channel is cut into blocks of ``block`` x ``block`` pixels on
    the LR grid, and the loss is the mean over blocks and channels of the energy of their
    Hann-windowed period-``scale`` component (:func:`fastsr.metrics.block_energies`, the
    measure of :func:`fastsr.metrics.checkerboard_energy`). It is the squared error
    restricted to the ``scale**2 - 1`` grid frequencies of each block, so it is 0 at
    ``sr = hr`` and leaves real detail alone; a pattern the generator repeats in every
    ``scale`` x ``scale`` cell keeps its whole energy, where an error without such a pattern
    (white noise of variance v) keeps about ``v * scale**2 / block**2``. A GAN term pushes
    the generator to add high frequencies, and through the ``scale**2`` phase kernels of its
    sub-pixel convolution part of them comes out as a faint grid on flat areas, too small
    for the pixel loss to weigh; this term weighs it.

    Args:
        scale: the SR factor (integer >= 2).
        block: block side in HR pixels, a multiple of ``scale`` and >= ``2 * scale``
            (default ``8 * scale``); the rows and columns that do not fill a block are left out.
        max_gradient: only the blocks of ``hr`` whose mean Y gradient is at most this many
            8-bit levels per pixel (:func:`fastsr.metrics.smooth_blocks`; the flat areas
            where a grid shows and the error is otherwise small); None: every block. A batch
            without such a block gives 0.

    Forward: ``(sr, hr)`` of one shape (N, C, H, W), floating point, [0, 1], same device;
    returns a 0-D float32 tensor (float64 for float64 inputs).

    Raises:
        ValueError: ``scale`` or ``block`` out of range (at construction); shapes that are
            not 4-D, differ, or are smaller than one block, or a device mismatch (at call).
        TypeError: non-floating-point inputs (at call).
    """

    def __init__(self, scale: int, block: int | None = None, max_gradient: float | None = None):
        super().__init__()
        self.scale = _check_scale("CheckerboardLoss", scale)
        if max_gradient is not None and (isinstance(max_gradient, bool) or not isinstance(max_gradient, (int, float))
                                         or not (math.isfinite(max_gradient) and max_gradient >= 0)):
            raise ValueError(f"CheckerboardLoss: max_gradient must be None or a finite number >= 0, got "
                             f"{max_gradient!r}")
        self.max_gradient = max_gradient
        block = 8 * scale if block is None else block
        if isinstance(block, bool) or not isinstance(block, int) or block % scale or block < 2 * scale:
            raise ValueError(f"CheckerboardLoss: block must be a multiple of scale={scale} and >= {2 * scale}, "
                             f"got {block!r}")
        self.block = block

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        from fastsr.metrics.checkerboard import block_energies, smooth_blocks

        _check_sr_lr("CheckerboardLoss", sr, hr, 1, "hr")
        H, W, b = sr.shape[-2], sr.shape[-1], self.block
        if H < b or W < b:
            raise ValueError(f"CheckerboardLoss: sr ({H} x {W}) is smaller than one block of {b} x {b} pixels")
        x = sr if sr.dtype == torch.float64 else sr.float()
        energy = block_energies((x - hr.to(x.dtype)) * 255.0, b, self.scale).mean(dim=1)  # (N, nh, nw)
        if self.max_gradient is None:
            return energy.mean()
        with torch.no_grad():
            mask = smooth_blocks(hr.detach().float().clamp(0, 1), b, self.max_gradient, 1.0, quantize=False)
        return (energy * mask).sum() / mask.sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, block={self.block}, max_gradient={self.max_gradient}"
