"""SRResNet, the SRGAN generator (Ledig et al. 2017), with or without BatchNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule, check_scale, init_icnr
from fastsr.models.registry import register_model
from fastsr.nn import ResidualBlockBN, ResidualBlockNoBN, Upsampler
from fastsr.nn.conv import conv_act, conv_prelu, conv_residual

__all__ = ["SRResNet", "SRResNetBase", "MSRResNet"]

UPSAMPLER_SCALES = (2, 3, 4, 8)


class SRResNetBase(FusedModule):
    """The SRResNet skeleton shared by :class:`SRResNet` and :class:`NonBNResNet`.

    ``conv_first`` (k x k, in -> C) + ``prelu_first`` -> ``body`` (``num_blocks`` residual
    blocks) -> ``conv_body`` (3x3, + ``bn_body`` when ``bn``) + global skip from the head ->
    ``upsampler`` ([conv3x3 C -> 4C, PixelShuffle(2), PReLU] x log2(scale); one r = 3 stage
    for x3) -> ``conv_last`` (k x k, C -> out).

    With ``fused=True`` the head's conv bias + PReLU run as :func:`fastsr.ops.bias_prelu`,
    the global skip of a BN-free model as :func:`fastsr.ops.bias_residual`, the blocks as
    fused :class:`~fastsr.nn.ResidualBlockNoBN` and the sub-pixel stages as
    ``pixel_shuffle_prelu``. The state_dict is identical for ``fused=True`` and ``False``.
    """

    def __init__(
        self,
        scale: int,
        num_blocks: int,
        channels: int,
        bn: bool,
        first_kernel_size: int,
        last_kernel_size: int,
        in_channels: int,
        out_channels: int,
        prelu_shared: bool,
        fused: bool,
        name: str,
        icnr: bool = False,
    ):
        super().__init__()
        check_scale(name, scale, UPSAMPLER_SCALES)
        if num_blocks < 0:
            raise ValueError(f"{name}: num_blocks must be >= 0, got {num_blocks}")
        if channels < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(f"{name}: channel counts must be >= 1, got channels={channels}, "
                             f"in_channels={in_channels}, out_channels={out_channels}")
        self.scale = scale
        self.bn = bn
        self.conv_first = nn.Conv2d(in_channels, channels, first_kernel_size, padding=first_kernel_size // 2)
        self.prelu_first = nn.PReLU(1 if prelu_shared else channels)
        if bn:
            blocks = [ResidualBlockBN(channels, prelu_shared=prelu_shared) for _ in range(num_blocks)]
        else:
            blocks = [ResidualBlockNoBN(channels, prelu_shared=prelu_shared, fused=fused) for _ in range(num_blocks)]
        self.body = nn.Sequential(*blocks)
        self.conv_body = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn_body = nn.BatchNorm2d(channels) if bn else None
        self.upsampler = Upsampler(channels, scale, fused=fused)
        self.conv_last = nn.Conv2d(channels, out_channels, last_kernel_size, padding=last_kernel_size // 2)
        self.fused = fused
        if icnr:
            init_icnr(self)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv, r)]`` of the upsampler's stages (for :func:`fastsr.models.init_icnr`)."""
        return self.upsampler.subpixel_convs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = conv_prelu(x, self.conv_first, self.prelu_first, self.fused)
        res = self.body(feat)
        if self.bn_body is not None:
            feat = feat + self.bn_body(self.conv_body(res))
        else:
            feat = conv_residual(res, self.conv_body, feat, 1.0, self.fused)
        return self.conv_last(self.upsampler(feat))

    def extra_repr(self) -> str:
        return f"scale={self.scale}, bn={self.bn}, fused={self.fused}"


@register_model()
@register_model("srgan_g")
class SRResNet(SRResNetBase):
    """SRResNet / the SRGAN generator (Ledig et al. 2017, "Photo-Realistic Single Image
    Super-Resolution Using a Generative Adversarial Network", Fig. 4).

    conv9x9 3 -> 64 + PReLU; B = 16 residual blocks [conv3x3 64, BN, PReLU, conv3x3 64, BN,
    + skip]; conv3x3 64 + BN + global skip; two sub-pixel stages [conv3x3 64 -> 256,
    PixelShuffle(2), PReLU] for x4; conv9x9 64 -> 3. ``bn=False`` removes every BatchNorm
    (the blocks become :class:`~fastsr.nn.ResidualBlockNoBN`), which is the NonBN generator
    of Zhang et al. 2019 except for its 1x1 last conv (see :class:`NonBNResNet`).

    Args:
        scale: 2, 3, 4 (paper) or 8. x2/x4/x8 use log2(scale) PixelShuffle(2) stages, x3
            one PixelShuffle(3) stage.
        num_blocks: residual blocks B (16 in the paper).
        channels: feature channels (64).
        bn: BatchNorm in the blocks and after ``conv_body`` (True = the paper's SRResNet).
        in_channels, out_channels: image channels (3).
        prelu_shared: one PReLU slope per layer instead of one per channel (the paper does
            not say; per channel by default).
        fused: use fastsr's fused epilogues where the architecture allows (the BN blocks
            are plain PyTorch either way); same state_dict either way.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.

    Shape:
        LR (N, in_channels, H, W) -> SR (N, out_channels, scale*H, scale*W), float32 or
        bfloat16, any layout. The output is linear (no final activation); the value range
        is that of the training targets (fastsr's data pipeline uses [0, 1]; Ledig et al.
        scaled LR to [0, 1] and HR to [-1, 1]).

    Parameters (x4, B = 16, 64 channels, per-channel PReLU): 1,550,659 with BN (~1.55 M,
    the figure usually quoted for SRResNet), 1,546,435 with ``bn=False``.

    Raises:
        ValueError: unsupported ``scale`` or a non-positive channel count.
    """

    def __init__(
        self,
        scale: int = 4,
        num_blocks: int = 16,
        channels: int = 64,
        bn: bool = True,
        in_channels: int = 3,
        out_channels: int = 3,
        prelu_shared: bool = False,
        fused: bool = True,
        icnr: bool = False,
    ):
        super().__init__(scale=scale, num_blocks=num_blocks, channels=channels, bn=bn, first_kernel_size=9,
                         last_kernel_size=9, in_channels=in_channels, out_channels=out_channels,
                         prelu_shared=prelu_shared, fused=fused, name="SRResNet", icnr=icnr)


@register_model()
class MSRResNet(FusedModule):
    """BasicSR's ``MSRResNet`` ("modified SRResNet", the SRResNet baseline of BasicSR and
    ESRGAN's PSNR-oriented comparisons), key for key so its checkpoints load.

    conv_first 3x3 + LeakyReLU(0.1); ``num_block`` BN-free blocks [conv3x3, ReLU, conv3x3, +
    skip] (keys ``body.{i}.conv1/conv2``); ``upconv1`` (+ ``upconv2`` for x4) [conv3x3,
    PixelShuffle, LeakyReLU(0.1)]; conv_hr 3x3 + LeakyReLU(0.1); conv_last 3x3; plus the
    bilinear-upsampled input. Differs from Ledig's SRResNet (:class:`SRResNet`): ReLU /
    LeakyReLU instead of PReLU, no BN, no feature-level global skip, 3x3 head and tail, and
    an image-level residual.

    Args:
        scale: 2, 3 or 4 (as in BasicSR).
        num_in_ch, num_out_ch, num_feat, num_block: 3, 3, 64, 16.
        fused: each block's conv2 bias + skip as :func:`fastsr.ops.bias_residual`; same
            state_dict either way.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.

    Shape: LR (N, 3, H, W) in [0, 1] -> SR (N, 3, scale*H, scale*W).

    Parameters (x4, defaults): 1,517,571.

    Raises:
        ValueError: unsupported ``scale``.
    """

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_block: int = 16, fused: bool = True, icnr: bool = False):
        super().__init__()
        from fastsr.models.baselines import ResidualBlockReLU

        self.scale = check_scale("MSRResNet", scale, (2, 3, 4))
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockReLU(num_feat, res_scale=1.0, fused=fused) for _ in range(num_block)])
        r = 2 if scale == 4 else scale
        self.upconv1 = nn.Conv2d(num_feat, num_feat * r * r, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1) if scale == 4 else None
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.fused = fused
        if icnr:
            init_icnr(self)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(upconv1, r), (upconv2, 2)]`` (for :func:`fastsr.models.init_icnr`)."""
        convs = [(self.upconv1, 2 if self.scale == 4 else self.scale)]
        return convs + ([(self.upconv2, 2)] if self.upconv2 is not None else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fused
        out = self.body(conv_act(x, self.conv_first, "leaky_relu", 0.1, f))
        r = 2 if self.scale == 4 else self.scale
        # LeakyReLU is element-wise, so it commutes with PixelShuffle and runs on the conv output
        out = F.pixel_shuffle(conv_act(out, self.upconv1, "leaky_relu", 0.1, f), r)
        if self.upconv2 is not None:
            out = F.pixel_shuffle(conv_act(out, self.upconv2, "leaky_relu", 0.1, f), 2)
        out = self.conv_last(conv_act(out, self.conv_hr, "leaky_relu", 0.1, f))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
