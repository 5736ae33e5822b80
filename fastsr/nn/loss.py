"""Pixel losses as drop-in modules built on :mod:`fastsr.ops`."""
from __future__ import annotations

import torch
from torch import nn

from fastsr.ops import l1_loss
from fastsr.ops.l1_loss import _check_eps_and_reduction


class L1Loss(nn.Module):
    """Drop-in for ``torch.nn.L1Loss`` whose backward is a scale of a gradient computed in
    the forward pass (:func:`fastsr.ops.l1_loss`); with ``eps`` it is the Charbonnier loss
    ``sqrt((sr - hr)**2 + eps**2)`` of LapSRN (Lai et al. 2017, eq. 2).

    Args:
        reduction: ``'mean'`` (default), ``'sum'`` or ``'none'``.
        eps: ``None`` (L1) or a finite number > 0 (Charbonnier; LapSRN uses 1e-3).
        fused: use the fused kernel; ``False`` runs the plain-PyTorch reference (same values).

    Shape: ``input`` (SR) and ``target`` (HR) of the same shape, dtype and device, e.g.
    (N, 3, H, W) images in [0, 1]; output 0-D for ``'mean'``/``'sum'``, else input's shape.

    Raises:
        ValueError: unknown ``reduction`` or bad ``eps`` (at construction); shape or device
            mismatch (at call).
        TypeError: unsupported or differing dtypes (at call).

    No parameters or buffers: the state_dict is empty whatever ``fused`` is.
    """

    def __init__(self, reduction: str = "mean", eps: float | None = None, fused: bool = True):
        super().__init__()
        _check_eps_and_reduction(reduction, eps, "fastsr.nn.L1Loss")
        self.reduction = reduction
        self.eps = eps
        self.fused = fused

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(input, target, self.reduction, eps=self.eps, impl="auto" if self.fused else "reference")

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, eps={self.eps}, fused={self.fused}"
