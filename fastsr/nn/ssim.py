"""SSIM as a training loss: ``1 - SSIM(sr, hr)`` (Wang et al. 2004, eq. 13)."""
from __future__ import annotations

import torch
from torch import nn

from fastsr.ops import ssim
from fastsr.ops.l1_loss import REDUCTIONS
from fastsr.ops.ssim import check_params


class SSIMLoss(nn.Module):
    """``1 - SSIM(input, target)`` per image with an 11x11 Gaussian window (sigma 1.5,
    K1 = 0.01, K2 = 0.03, 'valid' filtering), reduced over the batch.

    The SSIM is :func:`fastsr.ops.ssim` (Wang et al. 2004, eq. 13; pytorch-msssim and
    BasicSR conventions): with ``fused=True`` the one-pass C++/Triton kernel, with
    ``fused=False`` the plain-PyTorch reference. The module has no parameters or buffers,
    so its state_dict is empty either way.

    Args:
        data_range: L, the value range of the images (1.0 for [0, 1], 255 for 8-bit).
        window_size: odd Gaussian window side (11).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the N images.
        fused: use the fused kernel (``True``) or the reference (``False``).

    Shape:
        input, target: (N, C, H, W) of the same shape, dtype and device, H and W >=
        ``window_size``; float32/bfloat16/float64 on CPU. Output: a scalar for ``"mean"``
        and ``"sum"``, (N,) for ``"none"``; dtype of ``input``; each term in [0, 2]
        (0 for identical images).

    Raises:
        ValueError: an unknown ``reduction``, or any of :func:`fastsr.ops.ssim`'s errors
            (at construction for the arguments, at call time for the tensors).
    """

    def __init__(self, data_range: float = 1.0, window_size: int = 11, reduction: str = "mean",
                 fused: bool = True):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"SSIMLoss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        check_params(data_range, window_size, 1.5, 0.01, 0.03, "SSIMLoss")  # fail at construction
        self.data_range = float(data_range)
        self.window_size = window_size
        self.reduction = reduction
        self.fused = fused

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = ssim(input, target, self.data_range, self.window_size,
                     impl="auto" if self.fused else "reference")
        loss = 1 - value
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        return (f"data_range={self.data_range}, window_size={self.window_size}, "
                f"reduction={self.reduction!r}, fused={self.fused}")
