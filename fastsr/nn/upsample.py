"""Sub-pixel upsampling (ESPCN's PixelShuffle) with PReLU, as in SRGAN."""
from __future__ import annotations

import math

import torch
from torch import nn

from fastsr.ops import pixel_shuffle_prelu


class UpsampleStage(nn.Module):
    """One sub-pixel stage: conv3x3 C -> C*r*r, PixelShuffle(r), PReLU.

    With ``fused=True`` PixelShuffle and PReLU run as one kernel
    (:func:`fastsr.ops.pixel_shuffle_prelu`, one pass forward and one backward instead of
    three); the parameters (``conv``, ``prelu``) are the same either way. The conv keeps its
    bias (oneDNN/cuDNN add it in the convolution). The output has the memory format of the
    conv output, so a channels_last model stays channels_last.

    Shape: (N, C, H, W) -> (N, C, H*r, W*r).
    """

    def __init__(self, channels: int, r: int, kernel_size: int = 3, fused: bool = True):
        super().__init__()
        self.r = r
        self.fused = fused
        self.conv = nn.Conv2d(channels, channels * r * r, kernel_size, padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(r)
        self.prelu = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.fused:
            return pixel_shuffle_prelu(y, self.prelu.weight, self.r)
        return self.prelu(self.shuffle(y))


class Upsampler(nn.Sequential):
    """SRGAN's sub-pixel upsampler: [conv3x3 C -> C*r*r, PixelShuffle(r), PReLU] repeated.

    scale 2, 4, 8 -> log2(scale) stages with r = 2 (SRGAN, the NonBN residual GAN's G4);
    scale 3 -> one stage with r = 3.

    Args:
        channels: feature channels C (64 in the papers).
        scale: 2, 3, 4 or 8.
        kernel_size: conv size (3 in the papers).
        fused: PixelShuffle + PReLU as one fused kernel.

    Shape: (N, C, H, W) -> (N, C, H*scale, W*scale), same dtype.

    Raises:
        ValueError: a scale other than 2, 3, 4, 8.

    State-dict keys: ``{i}.conv.weight``, ``{i}.conv.bias``, ``{i}.prelu.weight`` for stage
    i, identical for ``fused=True`` and ``False``.
    """

    def __init__(self, channels: int = 64, scale: int = 4, kernel_size: int = 3, fused: bool = True):
        if scale == 3:
            stages = [UpsampleStage(channels, 3, kernel_size, fused)]
        elif scale in (2, 4, 8):
            stages = [UpsampleStage(channels, 2, kernel_size, fused) for _ in range(int(math.log2(scale)))]
        else:
            raise ValueError(f"Upsampler: scale must be 2, 3, 4 or 8, got {scale!r}")
        super().__init__(*stages)
        self.scale = scale

    @property
    def fused(self) -> bool:
        return all(stage.fused for stage in self)

    @fused.setter
    def fused(self, value: bool) -> None:
        for stage in self:
            stage.fused = value
