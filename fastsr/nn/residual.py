"""Residual blocks built on the fused conv epilogues."""
from __future__ import annotations

import torch
from torch import nn

from fastsr.nn.conv import conv_prelu, conv_residual


class ResidualBlockNoBN(nn.Module):
    """The BatchNorm-free residual block ``x + res_scale * conv2(PReLU(conv1(x)))``.

    This is the generator block of the NonBN residual GAN (Zhang et al. 2019: SRResNet's
    block with both BN layers removed, conv3x3 64 -> PReLU -> conv3x3 64, + skip) and of the
    sharpness GAN; with ``res_scale=0.1`` it is EDSR's block with PReLU.

    With ``fused=True`` the convolutions run without bias (oneDNN on CPU, cuDNN on GPU) and
    the two epilogues are fused kernels: ``bias_prelu`` after conv1 and ``bias_residual``
    after conv2. ``fused=False`` runs the plain modules. Both read the same parameters
    (``conv1.weight/bias``, ``prelu.weight``, ``conv2.weight/bias``), so the state_dict is
    identical and weights move freely between the two; ``fused`` may be flipped at any time.

    Args:
        channels: number of feature channels C (64 in the papers).
        kernel_size: odd convolution size (3 in the papers); "same" padding.
        res_scale: finite residual scaling (1.0 SRResNet/NonBN, 0.1 EDSR).
        prelu_shared: one PReLU slope for all channels (``nn.PReLU()`` as in SRGAN
            implementations) instead of one per channel.
        fused: use the fused epilogues.

    Shape:
        input (N, C, H, W) float tensor (float32/bfloat16, or float16 on CUDA), contiguous or
        channels_last; output of the same shape, dtype and memory format.
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 3,
        res_scale: float = 1.0,
        prelu_shared: bool = False,
        fused: bool = True,
    ):
        super().__init__()
        if channels < 1:
            raise ValueError(f"ResidualBlockNoBN: channels must be >= 1, got {channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ResidualBlockNoBN: kernel_size must be odd and >= 1, got {kernel_size}")
        pad = kernel_size // 2
        self.res_scale = float(res_scale)
        self.fused = fused
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.prelu = nn.PReLU(1 if prelu_shared else channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = conv_prelu(x, self.conv1, self.prelu, self.fused)
        return conv_residual(t, self.conv2, x, self.res_scale, self.fused)

    def extra_repr(self) -> str:
        return f"res_scale={self.res_scale}, fused={self.fused}"


class ResidualBlockBN(nn.Module):
    """SRResNet's residual block with BatchNorm: ``x + BN(conv2(PReLU(BN(conv1(x)))))``.

    Ledig et al. 2017 (SRGAN), sec. 2.2 / Fig. 4: two conv3x3 64 layers, each followed by
    BatchNorm, PReLU after the first, element-wise sum with the input. The EM-distance GAN
    paper (Zhang et al. 2019, Fig. 4a) and the sharpness GAN (Fig. 3a) call it the original
    block they remove BN from (see :class:`ResidualBlockNoBN`).

    This block has no fused path: BN sits between conv1 and PReLU, so conv1's bias cannot be
    folded into the ``bias_prelu`` epilogue (in training mode BN's batch statistics depend on
    it), and the module is plain PyTorch. It takes no ``fused`` flag.

    Args:
        channels: feature channels C (64 in the paper).
        kernel_size: odd convolution size (3 in the paper), "same" padding.
        prelu_shared: one PReLU slope for all channels instead of one per channel.

    Shape:
        (N, C, H, W) -> (N, C, H, W), same dtype.

    Parameters (C = 64, per-channel PReLU): 2 * (64*64*9 + 64) + 2 * 128 + 64 = 74,176.
    """

    def __init__(self, channels: int = 64, kernel_size: int = 3, prelu_shared: bool = False):
        super().__init__()
        if channels < 1:
            raise ValueError(f"ResidualBlockBN: channels must be >= 1, got {channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ResidualBlockBN: kernel_size must be odd and >= 1, got {kernel_size}")
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.bn1 = nn.BatchNorm2d(channels)
        self.prelu = nn.PReLU(1 if prelu_shared else channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
