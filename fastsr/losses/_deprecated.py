"""The single-term pixel losses that ``fastsr.losses`` used to define, kept for one release
behind a DeprecationWarning (see ``fastsr.losses.__getattr__``). They take their old
arguments, ``loss_weight`` included, and delegate to the modules that replaced them:
:class:`fastsr.nn.L1Loss` (L1, and Charbonnier with ``eps``), ``torch.nn.MSELoss`` and
:class:`fastsr.losses.SSIML1Loss`. New code applies loss weights in the trainer."""
from __future__ import annotations

import torch
from torch import nn

from fastsr import nn as fnn
from fastsr.losses.pixel import SSIML1Loss
from fastsr.ops.l1_loss import REDUCTIONS


def _check_weight(loss_weight, fn: str) -> float:
    if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)):
        raise TypeError(f"{fn}: loss_weight must be a number, got {type(loss_weight).__name__}")
    return float(loss_weight)


class L1Loss(fnn.L1Loss):
    """``loss_weight * fastsr.nn.L1Loss(reduction, fused=fused)``."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", fused: bool = True) -> None:
        super().__init__(reduction, fused=fused)
        self.loss_weight = _check_weight(loss_weight, "L1Loss")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * super().forward(sr, hr)


class CharbonnierLoss(fnn.L1Loss):
    """``loss_weight * fastsr.nn.L1Loss(reduction, eps=eps, fused=fused)``."""

    def __init__(self, eps: float = 1e-3, loss_weight: float = 1.0, reduction: str = "mean",
                 fused: bool = True) -> None:
        super().__init__(reduction, eps=eps, fused=fused)
        self.loss_weight = _check_weight(loss_weight, "CharbonnierLoss")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * super().forward(sr, hr)


class MSELoss(nn.MSELoss):
    """``loss_weight * torch.nn.MSELoss(reduction=reduction)``, refusing different shapes
    (torch would broadcast them)."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"MSELoss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        super().__init__(reduction=reduction)
        self.loss_weight = _check_weight(loss_weight, "MSELoss")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if sr.shape != hr.shape:
            raise ValueError(f"MSELoss: sr and hr must have the same shape, got {tuple(sr.shape)} and "
                             f"{tuple(hr.shape)}")
        return self.loss_weight * super().forward(sr, hr)


class SSIMLoss(SSIML1Loss):
    """``loss_weight * fastsr.losses.SSIML1Loss(alpha, data_range, fused)``."""

    def __init__(self, alpha: float = 1.0, data_range: float = 1.0, loss_weight: float = 1.0,
                 fused: bool = True) -> None:
        super().__init__(alpha, data_range, fused)
        self.loss_weight = _check_weight(loss_weight, "SSIMLoss")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * super().forward(sr, hr)
