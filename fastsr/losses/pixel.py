"""The SSIM + L1 mix of Zhao et al. 2017, a composition of :class:`fastsr.nn.SSIMLoss` and
:class:`fastsr.nn.L1Loss` (the single-term pixel losses are those modules themselves)."""
from __future__ import annotations

import torch
import torch.nn as nn

from fastsr import nn as fnn

__all__ = ["SSIML1Loss"]


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
