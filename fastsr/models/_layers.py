"""Layers shared by the community architectures of fastsr.models (Omni-SR, SAFMN): the
channel LayerNorm of image tensors and "residual + conv(x)" with the fused epilogue where
the convolution has a bias."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.nn.conv import conv_residual

__all__ = ["LayerNorm2d", "conv_add"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of an image tensor (the "channels_first"
    LayerNorm of ConvNeXt, Omni-SR and SAFMN): ``weight * (x - mean_c) / sqrt(var_c + eps)
    + bias`` with the biased variance, as one ``F.layer_norm`` over a channels-last view.

    Args:
        channels: C.
        eps: added to the variance (1e-6 upstream).

    Shape:
        (N, C, H, W) -> (N, C, H, W) in the channels_last memory format; float32 / bfloat16
        (float16 on CUDA). ``weight`` / ``bias`` (C,).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def conv_add(x: torch.Tensor, conv: nn.Conv2d, residual: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """``residual + conv(x)``: :func:`fastsr.nn.conv_residual` (the bias and the add as one
    fused epilogue) when ``fused`` and ``conv`` has a bias, else the plain sum.

    Args:
        x: (N, C_in, H, W).
        conv: the convolution (zero padding).
        residual: (N, C_out, H', W'), the shape of ``conv(x)``.
        fused: allow the fused epilogue.

    Raises:
        ValueError: shapes that differ.
    """
    if fused and conv.bias is not None:
        return conv_residual(x, conv, residual, 1.0, True)
    return residual + conv(x)
