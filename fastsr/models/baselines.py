"""CNN baselines named in the papers' comparisons: SRCNN, ESPCN, VDSR, EDSR, RCAN.

EDSR and RCAN use BasicSR's parameter names (``conv_first``, ``body``, ``conv_after_body``,
``upsample``, ``conv_last``) and its mean-shift / ``img_range`` convention, so BasicSR
checkpoints of the same configuration load with :func:`fastsr.models.load_state_dict`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule, check_scale, init_icnr
from fastsr.models.registry import register_model
from fastsr.nn.conv import conv_act, conv_residual

__all__ = ["SRCNN", "ESPCN", "VDSR", "EDSR", "RCAN", "ResidualBlockReLU", "PixelShuffleUpsample"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class _BicubicInput(FusedModule):
    """Shared by SRCNN and VDSR: the network works on the bicubic-upsampled LR image."""

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if not self.upsample_input:
            return x
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)


@register_model()
class SRCNN(_BicubicInput):
    """SRCNN 9-1-5 (Dong et al. 2014/2016): conv9x9 -> 64 + ReLU, conv1x1 64 -> 32 + ReLU,
    conv5x5 32 -> 3, on the bicubic-upsampled image.

    Unlike the paper (valid convolutions, Y channel only) this uses "same" padding and RGB
    so the output has the HR size; ``in_channels=1`` gives the Y-channel model.

    Args:
        scale: 2, 3 or 4; with ``upsample_input=True`` the module bicubic-upsamples the LR
            input by ``scale`` itself (torch bicubic, not MATLAB imresize).
        upsample_input: False when the input is already upsampled (then ``scale`` is only
            recorded).
        in_channels: 3 (RGB) or 1 (Y).
        fused: accepted for the uniform interface; no fastsr fused layer applies here.

    Shape: LR (N, C, H, W) -> (N, C, scale*H, scale*W) (or same size without
        ``upsample_input``), values in [0, 1], linear output.

    Parameters (RGB): 20,099 (8,129 for Y).
    """

    def __init__(self, scale: int = 4, upsample_input: bool = True, in_channels: int = 3, fused: bool = True):
        super().__init__()
        self.scale = check_scale("SRCNN", scale, (2, 3, 4))
        self.upsample_input = upsample_input
        self.conv1 = nn.Conv2d(in_channels, 64, 9, padding=4)
        self.conv2 = nn.Conv2d(64, 32, 1)
        self.conv3 = nn.Conv2d(32, in_channels, 5, padding=2)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._upsample(x)
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


@register_model()
class ESPCN(FusedModule):
    """ESPCN (Shi et al. 2016): conv5x5 -> 64 + tanh, conv3x3 64 -> 32 + tanh,
    conv3x3 32 -> C*r^2, PixelShuffle(r), on the LR image.

    Args:
        scale: 2, 3, 4 or 8 (r).
        in_channels: 3 or 1.
        fused: accepted for the uniform interface; no fastsr fused layer applies here.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.

    Shape: LR (N, C, H, W) -> (N, C, r*H, r*W), values in [0, 1], linear output.

    Parameters (RGB, x4): 37,200.
    """

    def __init__(self, scale: int = 4, in_channels: int = 3, fused: bool = True, icnr: bool = False):
        super().__init__()
        self.scale = check_scale("ESPCN", scale, (2, 3, 4, 8))
        self.conv1 = nn.Conv2d(in_channels, 64, 5, padding=2)
        self.conv2 = nn.Conv2d(64, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, in_channels * scale * scale, 3, padding=1)
        self.fused = fused
        if icnr:
            init_icnr(self)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv3, scale)]`` (for :func:`fastsr.models.init_icnr`)."""
        return [(self.conv3, self.scale)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return F.pixel_shuffle(self.conv3(h), self.scale)


@register_model()
class VDSR(_BicubicInput):
    """VDSR (Kim et al. 2016): ``num_layers`` = 20 conv3x3 layers (64 channels, ReLU after all
    but the last) predicting the residual added to the bicubic-upsampled input.

    Args:
        scale: 2, 3 or 4; see :class:`SRCNN` for ``upsample_input``.
        num_layers: total conv layers (20).
        channels: 64.
        in_channels: 3 (RGB) or 1 (Y, as in the paper).
        fused: the last conv's bias + global residual as one :func:`fastsr.ops.bias_residual`.

    Shape: LR (N, C, H, W) -> (N, C, scale*H, scale*W), values in [0, 1].

    Parameters (RGB, 20 layers): 668,227.
    """

    def __init__(self, scale: int = 4, num_layers: int = 20, channels: int = 64, upsample_input: bool = True,
                 in_channels: int = 3, fused: bool = True):
        super().__init__()
        self.scale = check_scale("VDSR", scale, (2, 3, 4))
        if num_layers < 2:
            raise ValueError(f"VDSR: num_layers must be >= 2, got {num_layers}")
        self.upsample_input = upsample_input
        layers = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU()]
        for _ in range(num_layers - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.conv_last = nn.Conv2d(channels, in_channels, 3, padding=1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._upsample(x)
        return conv_residual(self.body(x), self.conv_last, x, 1.0, self.fused)


class ResidualBlockReLU(nn.Module):
    """EDSR's block ``x + res_scale * conv2(ReLU(conv1(x)))`` (BasicSR ``ResidualBlockNoBN``
    keys ``conv1``/``conv2``). ``fused`` runs conv2's bias + the scaled residual add as one
    :func:`fastsr.ops.bias_residual`; same parameters either way."""

    def __init__(self, channels: int = 64, res_scale: float = 1.0, fused: bool = True):
        super().__init__()
        self.res_scale = float(res_scale)
        self.fused = fused
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_residual(conv_act(x, self.conv1, "relu", fused=self.fused), self.conv2, x, self.res_scale,
                             self.fused)


class PixelShuffleUpsample(nn.Sequential):
    """EDSR/RCAN upsampler (BasicSR ``Upsample``): [conv3x3 C -> 4C, PixelShuffle(2)] x log2(scale),
    or [conv3x3 C -> 9C, PixelShuffle(3)]; no activation. Keys ``0.weight``, ``2.weight``, ..."""

    def __init__(self, scale: int, channels: int):
        layers = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(channels, 4 * channels, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(channels, 9 * channels, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"PixelShuffleUpsample: scale must be 2^n or 3, got {scale}")
        super().__init__(*layers)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv, r)]`` of every stage (for :func:`fastsr.models.init_icnr`)."""
        return [(m, nxt.upscale_factor) for m, nxt in zip(self, list(self)[1:]) if isinstance(nxt, nn.PixelShuffle)]


class _MeanShift(FusedModule):
    """BasicSR's ``(x - mean) * img_range`` in, ``x / img_range + mean`` out."""

    def _setup_mean(self, img_range: float, rgb_mean: Sequence[float], in_channels: int) -> None:
        self.img_range = float(img_range)
        mean = torch.tensor(rgb_mean if in_channels == 3 else [0.0] * in_channels).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)

    def _norm(self, x):
        return (x - self.mean.to(x.dtype)) * self.img_range

    def _denorm(self, x):
        return x / self.img_range + self.mean.to(x.dtype)


@register_model()
class EDSR(_MeanShift):
    """EDSR (Lim et al. 2017), baseline size by default: 16 residual blocks of 64 channels
    [conv3x3, ReLU, conv3x3, x res_scale, + skip], no BN; conv_after_body + global skip;
    sub-pixel upsampler without activation; conv_last. BasicSR ``EDSR`` keys and
    normalisation (``img_range`` 255, DIV2K RGB mean); the large EDSR is
    ``num_feat=256, num_block=32, res_scale=0.1``.

    Args:
        scale: 2, 3, 4 or 8.
        num_feat, num_block, res_scale: 64, 16, 1.0 (baseline).
        in_channels, out_channels: 3.
        img_range, rgb_mean: input normalisation (BasicSR defaults).
        fused: conv2 epilogues of the blocks and the global skip as
            :func:`fastsr.ops.bias_residual`; same state_dict either way.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.

    Shape: LR (N, 3, H, W) in [0, 1] -> SR (N, 3, scale*H, scale*W) in about [0, 1].

    Parameters (baseline x4): 1,517,571.
    """

    def __init__(self, scale: int = 4, num_feat: int = 64, num_block: int = 16, res_scale: float = 1.0,
                 in_channels: int = 3, out_channels: int = 3, img_range: float = 255.0,
                 rgb_mean: Sequence[float] = DIV2K_RGB_MEAN, fused: bool = True, icnr: bool = False):
        super().__init__()
        self.scale = check_scale("EDSR", scale, (2, 3, 4, 8))
        self._setup_mean(img_range, rgb_mean, in_channels)
        self.conv_first = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockReLU(num_feat, res_scale, fused) for _ in range(num_block)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = PixelShuffleUpsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, 1, 1)
        self.fused = fused
        if icnr:
            init_icnr(self)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv, r)]`` of the upsampler (for :func:`fastsr.models.init_icnr`)."""
        return self.upsample.subpixel_convs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(self._norm(x))
        x = conv_residual(self.body(x), self.conv_after_body, x, 1.0, self.fused)
        return self._denorm(self.conv_last(self.upsample(x)))


class ChannelAttention(nn.Module):
    """RCAN's channel attention: x * sigmoid(conv1x1(ReLU(conv1x1(avgpool(x))))).
    Keys ``attention.1`` / ``attention.3`` as in BasicSR."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1), nn.ReLU(),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel attention block: x + res_scale * CA(conv(ReLU(conv(x))))."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16, res_scale: float = 1.0):
        super().__init__()
        self.res_scale = res_scale
        self.rcab = nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(num_feat, num_feat, 3, 1, 1), ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.rcab(x)


class ResidualGroup(nn.Module):
    """RCAN residual group: x + conv(RCAB x num_block (x)); the conv's bias + skip fused."""

    def __init__(self, num_feat: int, num_block: int, squeeze_factor: int = 16, res_scale: float = 1.0,
                 fused: bool = True):
        super().__init__()
        self.fused = fused
        self.residual_group = nn.Sequential(*[RCAB(num_feat, squeeze_factor, res_scale) for _ in range(num_block)])
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_residual(self.residual_group(x), self.conv, x, 1.0, self.fused)


@register_model()
class RCAN(_MeanShift):
    """RCAN (Zhang et al. 2018): ``num_group`` residual groups of ``num_block`` residual
    channel-attention blocks (RCAB), long skip, sub-pixel upsampler. The paper's size is
    10 groups x 20 blocks (default); smaller configs keep the same block structure.
    BasicSR ``RCAN`` keys and normalisation.

    Args:
        scale: 2, 3, 4 or 8.
        num_feat, num_group, num_block, squeeze_factor, res_scale: 64, 10, 20, 16, 1.0.
        fused: the group convs' and ``conv_after_body``'s bias + skip as
            :func:`fastsr.ops.bias_residual`.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.

    Shape: LR (N, 3, H, W) in [0, 1] -> SR (N, 3, scale*H, scale*W) in about [0, 1].

    Parameters (paper size, x4): 15,592,355.
    """

    def __init__(self, scale: int = 4, num_feat: int = 64, num_group: int = 10, num_block: int = 20,
                 squeeze_factor: int = 16, res_scale: float = 1.0, in_channels: int = 3, out_channels: int = 3,
                 img_range: float = 255.0, rgb_mean: Sequence[float] = DIV2K_RGB_MEAN, fused: bool = True,
                 icnr: bool = False):
        super().__init__()
        self.scale = check_scale("RCAN", scale, (2, 3, 4, 8))
        self._setup_mean(img_range, rgb_mean, in_channels)
        self.conv_first = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualGroup(num_feat, num_block, squeeze_factor, res_scale, fused)
                                    for _ in range(num_group)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = PixelShuffleUpsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, 1, 1)
        self.fused = fused
        if icnr:
            init_icnr(self)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv, r)]`` of the upsampler (for :func:`fastsr.models.init_icnr`)."""
        return self.upsample.subpixel_convs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(self._norm(x))
        x = conv_residual(self.body(x), self.conv_after_body, x, 1.0, self.fused)
        return self._denorm(self.conv_last(self.upsample(x)))
