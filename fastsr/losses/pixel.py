"""Pixel-loss compositions: the SSIM + L1 mix of Zhao et al. 2017 (over
:class:`fastsr.nn.SSIMLoss` and :class:`fastsr.nn.L1Loss`; the single-term pixel losses are
those modules themselves) and the LR-consistency (back-projection) term."""
from __future__ import annotations

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
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
            raise ValueError(f"LRConsistencyLoss: scale must be an integer >= 2, got {scale!r}")
        self.scale = scale
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
        for name, t in (("sr", sr), ("lr", lr)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"LRConsistencyLoss: {name} must be a floating-point tensor, got "
                                f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
            if t.dim() != 4:
                raise ValueError(f"LRConsistencyLoss: {name} must be (N, C, H, W), got shape {tuple(t.shape)}")
        s = self.scale
        if sr.shape[:2] != lr.shape[:2] or sr.shape[-2:] != (lr.shape[-2] * s, lr.shape[-1] * s):
            raise ValueError(f"LRConsistencyLoss: sr must be lr's size times {s}, got sr {tuple(sr.shape)} "
                             f"and lr {tuple(lr.shape)}")
        if sr.device != lr.device:
            raise ValueError(f"LRConsistencyLoss: sr and lr must be on one device, got {sr.device} and {lr.device}")
        x = sr if sr.dtype == torch.float64 else sr.float()
        down = self._matrix(sr.shape[-2], x) @ x @ self._matrix(sr.shape[-1], x).t()
        return torch.nn.functional.mse_loss(down, lr.to(x.dtype))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
