"""Pixel losses: L1, MSE, Charbonnier, and SSIM (optionally mixed with L1).

All take ``(sr, hr)`` of the same shape (any floating dtype, typically (N, C, H, W) in
[0, 1]) and return the loss times ``loss_weight``, reduced by ``reduction``
(``"mean"`` over all elements, ``"sum"``, or ``"none"`` for the element-wise map).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastsr import nn as fnn
from fastsr.ops import l1_loss

_REDUCTIONS = ("mean", "sum", "none")


def _check(sr, hr, fn):
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must be floating point, got {t.dtype}")
    if sr.shape != hr.shape:
        raise ValueError(f"{fn}: sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")


def _check_args(reduction, loss_weight, fn):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)):
        raise TypeError(f"{fn}: loss_weight must be a number, got {type(loss_weight).__name__}")


def _reduce(x, reduction):
    return x.mean() if reduction == "mean" else x.sum() if reduction == "sum" else x


class _PixelLoss(nn.Module):
    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        _check_args(reduction, loss_weight, type(self).__name__)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, reduction={self.reduction!r}"


class L1Loss(_PixelLoss):
    """Mean absolute error, l_L1 = 1/(r^2 W H) sum |I_HR - G(I_LR)| (the EM-distance
    paper's content loss, its eq. 11; the sharpness GAN's eq. 3).

    ``fused=True`` uses :func:`fastsr.ops.l1_loss` (gradient computed in the forward pass;
    ``sr`` and ``hr`` must then share dtype and device), ``fused=False`` torch's ``l1_loss``.
    Raises ValueError on different shapes or an unknown reduction.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", fused: bool = True) -> None:
        super().__init__(loss_weight, reduction)
        self.fused = fused

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check(sr, hr, "L1Loss")
        if self.fused:
            return self.loss_weight * l1_loss(sr, hr, self.reduction)
        return self.loss_weight * F.l1_loss(sr, hr, reduction=self.reduction)


class MSELoss(_PixelLoss):
    """Mean squared error, l_MSE = 1/(r^2 W H) sum (I_HR - G(I_LR))^2 (SRGAN eq. 4; the
    EM-distance paper's eq. 10). Raises ValueError on different shapes."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check(sr, hr, "MSELoss")
        return self.loss_weight * F.mse_loss(sr, hr, reduction=self.reduction)


class CharbonnierLoss(_PixelLoss):
    """Charbonnier (differentiable L1), rho(d) = sqrt(d^2 + eps^2), d = sr - hr
    (Lai et al. 2017, LapSRN, eq. 2 with eps = 1e-3). Tends to |d| for |d| >> eps.

    Args:
        eps: > 0 (1e-3 as LapSRN; BasicSR uses sqrt(d^2 + 1e-12)).
        fused: use :func:`fastsr.ops.l1_loss` with ``eps`` (one pass, gradient in the forward).
    """

    def __init__(self, eps: float = 1e-3, loss_weight: float = 1.0, reduction: str = "mean",
                 fused: bool = True) -> None:
        super().__init__(loss_weight, reduction)
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"CharbonnierLoss: eps must be a number > 0, got {eps!r}")
        self.eps = float(eps)
        self.fused = fused

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check(sr, hr, "CharbonnierLoss")
        if self.fused:
            return self.loss_weight * l1_loss(sr, hr, self.reduction, eps=self.eps)
        d = sr - hr
        return self.loss_weight * _reduce(torch.sqrt(d * d + self.eps * self.eps), self.reduction)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, " + super().extra_repr()


class SSIMLoss(nn.Module):
    """alpha * (1 - SSIM) + (1 - alpha) * L1, averaged over the images.

    SSIM is the fused :class:`fastsr.nn.SSIMLoss` (11x11 Gaussian, sigma 1.5, 'valid',
    Wang et al. 2004); ``alpha = 1`` (default) is the pure SSIM loss, ``alpha = 0.84`` the
    mix of Zhao et al. 2017 ("Loss functions for image restoration with neural networks",
    eq. 12, there with MS-SSIM and a Gaussian-weighted L1; here single-scale SSIM and plain
    L1).

    Args:
        alpha: in [0, 1].
        data_range: L of SSIM (1.0 for [0, 1] images).
        loss_weight: multiplies the result.
        fused: use the fused SSIM kernel (else the reference).

    Forward: ``(sr, hr)`` (N, C, H, W) of the same shape, H, W >= 11; returns a scalar.
    Raises ValueError on bad arguments or shapes (the SSIM op's checks).
    """

    def __init__(self, alpha: float = 1.0, data_range: float = 1.0, loss_weight: float = 1.0, fused: bool = True):
        super().__init__()
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"SSIMLoss: alpha must be in [0, 1], got {alpha!r}")
        _check_args("mean", loss_weight, "SSIMLoss")
        self.alpha = float(alpha)
        self.loss_weight = float(loss_weight)
        self.ssim = fnn.SSIMLoss(data_range=data_range, reduction="mean", fused=fused)
        self.l1 = L1Loss()

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check(sr, hr, "SSIMLoss")
        loss = self.alpha * self.ssim(sr, hr)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * self.l1(sr, hr)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, loss_weight={self.loss_weight}"
