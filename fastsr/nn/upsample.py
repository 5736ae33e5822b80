"""Sub-pixel upsampling (ESPCN's PixelShuffle) with PReLU, as in SRGAN."""
from __future__ import annotations

import math

import torch
from torch import nn

from fastsr.nn.conv import _conv
from fastsr.ops import pixel_shuffle_prelu

__all__ = ["UpsampleStage", "Upsampler", "icnr_"]


@torch.no_grad()
def icnr_(conv: nn.Conv2d, r: int) -> nn.Conv2d:
    """ICNR initialisation of a convolution that feeds ``PixelShuffle(r)``, in place (Aitken
    et al. 2017, "Checkerboard artifact free sub-pixel convolution: A note on sub-pixel
    convolution, resize convolution and convolution resize", sec. 3).

    PixelShuffle(r) sends input channel ``c * r**2 + i * r + j`` to output channel ``c`` at
    sub-pixel offset (i, j). ICNR makes the r**2 kernels (and biases) of each output channel
    equal, so that at initialisation the sub-pixel convolution equals nearest-neighbour
    upsampling followed by one convolution: the r**2 sub-pixel phases of the output see the
    same filter and the output has no period-r (checkerboard) component. (Stacked stages with
    a PReLU between them, as SRGAN's x4, keep each stage free of it; the PReLU of the second
    stage acts on a phase-varying convolution output and leaves a small period-4 residue, most
    of the energy is still removed.) The kernel kept for
    output channel ``c`` is the layer's own current one at ``c * r**2``, so the layer's
    initialisation (PyTorch's default, or ``init_weights(..., "normal")``) is respected; the
    other r**2 - 1 are overwritten with copies.

    Args:
        conv: a ``nn.Conv2d`` with ``out_channels`` divisible by ``r**2``.
        r: the PixelShuffle factor (>= 1; 1 leaves ``conv`` unchanged).

    Returns:
        ``conv``.

    Raises:
        TypeError: ``conv`` is not an ``nn.Conv2d``.
        ValueError: ``r`` is not an int >= 1, or ``out_channels`` is not a multiple of ``r**2``.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"icnr_: conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"icnr_: r must be an int >= 1, got {r!r}")
    n = r * r
    if conv.out_channels % n:
        raise ValueError(f"icnr_: out_channels ({conv.out_channels}) must be a multiple of r**2 = {n}")
    conv.weight.copy_(conv.weight[::n].repeat_interleave(n, dim=0))
    if conv.bias is not None:
        conv.bias.copy_(conv.bias[::n].repeat_interleave(n, dim=0))
    return conv


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

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv, r)]``: the convolution that feeds the PixelShuffle (for :func:`icnr_`)."""
        return [(self.conv, self.r)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return pixel_shuffle_prelu(_conv(x, self.conv), self.prelu.weight, self.r)
        y = self.conv(x)
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

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv, r)]`` of every stage (for :func:`icnr_`)."""
        return [pair for stage in self for pair in stage.subpixel_convs()]

    @property
    def fused(self) -> bool:
        return all(stage.fused for stage in self)

    @fused.setter
    def fused(self, value: bool) -> None:
        for stage in self:
            stage.fused = value
