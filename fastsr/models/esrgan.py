"""The original-architecture ESRGAN generator ("old arch": one ``model`` sequence) for any
number of upsampling stages, and ESRGAN+ (nESRGAN+), key for key the files of the ESRGAN
repository before its rewrite, of the old BasicSR and of ESRGAN+.

The x4 models of that layout also load as :class:`~fastsr.models.RRDBNet` under BasicSR's
key names; :class:`RRDBNetOld` keeps the ``model.N`` names so that the x1 / x2 / x8 / x16
models -- which BasicSR's ``RRDBNet`` cannot express -- and ESRGAN+ load and save unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule
from fastsr.models.registry import register_model
from fastsr.nn.conv import conv_act, conv_residual

__all__ = ["RRDBNetOld", "ResidualDenseBlockOld", "RRDBOld"]


def _conv_lrelu(cin: int, cout: int) -> nn.Sequential:
    """The old ``conv_block``: ``Sequential(conv3x3, LeakyReLU(0.2))`` (keys ``.0.weight``)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.2))


class ResidualDenseBlockOld(nn.Module):
    """ESRGAN's residual dense block in the old key layout (``convj.0``): five 3x3 convs
    with dense connections, LeakyReLU(0.2) after the first four, output ``x + 0.2 * conv5``.

    With ``plus`` (ESRGAN+, Rakotonirina and Rasoanaivo 2020, "ESRGAN+: Further Improving
    Enhanced Super-Resolution Generative Adversarial Network", Fig. 2) two more residual
    paths: ``x2 += conv1x1(x)`` (a bias-free 1x1 conv, key ``conv1x1``) and ``x4 += x2``.

    With ``fused`` conv1..4 + LeakyReLU go through :func:`fastsr.nn.conv_act` and
    ``x + 0.2 * (conv5 + bias)`` is one :func:`fastsr.ops.bias_residual` kernel.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, plus: bool = False, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.conv1x1 = nn.Conv2d(num_feat, num_grow_ch, 1, bias=False) if plus else None
        for j in range(4):
            setattr(self, f"conv{j + 1}", _conv_lrelu(num_feat + j * num_grow_ch, num_grow_ch))
        self.conv5 = nn.Sequential(nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fused
        x1 = conv_act(x, self.conv1[0], "leaky_relu", 0.2, f)
        x2 = conv_act(torch.cat((x, x1), 1), self.conv2[0], "leaky_relu", 0.2, f)
        if self.conv1x1 is not None:
            x2 = x2 + self.conv1x1(x)
        x3 = conv_act(torch.cat((x, x1, x2), 1), self.conv3[0], "leaky_relu", 0.2, f)
        x4 = conv_act(torch.cat((x, x1, x2, x3), 1), self.conv4[0], "leaky_relu", 0.2, f)
        if self.conv1x1 is not None:
            x4 = x4 + x2
        return conv_residual(torch.cat((x, x1, x2, x3, x4), 1), self.conv5[0], x, 0.2, f)


class RRDBOld(nn.Module):
    """Residual-in-residual dense block ``x + 0.2 * RDB3(RDB2(RDB1(x)))`` (keys ``RDB1..3``).

    ``noise_sigma > 0`` (nESRGAN+) adds Gaussian noise ``sigma * out * N(0, 1)`` to the
    block's output in training mode only (no parameters, nothing in the state_dict).
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, plus: bool = False, noise_sigma: float = 0.0,
                 fused: bool = True):
        super().__init__()
        self.noise_sigma = float(noise_sigma)
        self.RDB1 = ResidualDenseBlockOld(num_feat, num_grow_ch, plus, fused)
        self.RDB2 = ResidualDenseBlockOld(num_feat, num_grow_ch, plus, fused)
        self.RDB3 = ResidualDenseBlockOld(num_feat, num_grow_ch, plus, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + 0.2 * self.RDB3(self.RDB2(self.RDB1(x)))
        if self.training and self.noise_sigma:
            out = out + self.noise_sigma * out * torch.randn_like(out)
        return out


class _Trunk(nn.Module):
    """``model.1``: the RRDBs and the trunk conv, ``x + conv(RRDBs(x))`` (keys ``sub.N``)."""

    def __init__(self, blocks: list[nn.Module], conv: nn.Conv2d, fused: bool):
        super().__init__()
        self.sub = nn.Sequential(*blocks, conv)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = x
        for block in list(self.sub)[:-1]:
            feat = block(feat)
        return conv_residual(feat, self.sub[-1], x, 1.0, self.fused)


def _stages(scale: int) -> list[int]:
    """The nearest-upsampling factors of the tail: [2] * log2(scale), or [3] for x3."""
    return [3] if scale == 3 else [2] * int(math.log2(scale))


@register_model()
@register_model("esrgan_old")
class RRDBNetOld(FusedModule):
    """The ESRGAN generator (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative
    Adversarial Networks", Fig. 3-4) in its original key layout, for x1 to x16, and
    ESRGAN+ / nESRGAN+ (Rakotonirina and Rasoanaivo 2020, "ESRGAN+: Further Improving
    Enhanced Super-Resolution Generative Adversarial Network", sec. 2).

    ``model``: 0 conv3x3 in -> F; 1 trunk: ``num_block`` RRDBs (growth ``num_grow_ch``,
    LeakyReLU 0.2, residual scaling 0.2) and a conv, plus the skip; then per stage
    [nearest x2 (x3 for scale 3), conv3x3, LeakyReLU 0.2] at indices 2+3s, 3+3s, 4+3s; then
    the HR conv + LeakyReLU and the last conv 3x3 F -> out. Keys ``model.0``,
    ``model.1.sub.N.RDBk.convj.0``, ``model.1.sub.<num_block>``, ``model.<3+3s>``,
    ``model.<2+3n>``, ``model.<4+3n>`` (``.weight`` / ``.bias``), as the upstream files.

    ``plus=True`` adds ESRGAN+'s residual paths in every dense block (``RDBk.conv1x1``, a
    bias-free 1x1 conv); ``noise_sigma`` is nESRGAN+'s Gaussian noise after each RRDB (0.1 in
    the paper), drawn in training mode only, so inference is deterministic.

    Args:
        scale: 1, 2, 3, 4, 8 or 16 (x3: one nearest-x3 stage; the keys of a x3 model equal a
            x2 model's, so the scale of a x3 file must be given).
        num_in_ch, num_out_ch: image channels (3).
        num_feat: feature channels F (64).
        num_block: RRDBs (23).
        num_grow_ch: growth channels (32).
        plus: ESRGAN+ residual paths.
        noise_sigma: nESRGAN+ noise scale (>= 0; training only).
        fused: conv + LeakyReLU through :func:`fastsr.nn.conv_act` and every
            ``x + s * (conv + bias)`` (dense blocks, trunk) as one fused
            :func:`fastsr.ops.bias_residual`; the state_dict is identical either way.

    Shape:
        LR (N, num_in_ch, H, W) in [0, 1] -> SR (N, num_out_ch, scale*H, scale*W) in about
        [0, 1] (linear output), float32 or bfloat16 (float16 on CUDA).

    Raises:
        ValueError: a scale not in (1, 2, 3, 4, 8, 16), non-positive widths or ``num_block``
            < 1, negative ``noise_sigma``.
    """

    SCALES = (1, 2, 3, 4, 8, 16)

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32, plus: bool = False, noise_sigma: float = 0.0,
                 fused: bool = True):
        super().__init__()
        if isinstance(scale, bool) or scale not in self.SCALES:
            raise ValueError(f"RRDBNetOld: scale must be one of {self.SCALES}, got {scale!r}")
        if min(num_in_ch, num_out_ch, num_feat, num_grow_ch, num_block) < 1:
            raise ValueError(f"RRDBNetOld: num_in_ch, num_out_ch, num_feat, num_grow_ch, num_block must be >= 1, "
                             f"got {num_in_ch}, {num_out_ch}, {num_feat}, {num_grow_ch}, {num_block}")
        if not noise_sigma >= 0:
            raise ValueError(f"RRDBNetOld: noise_sigma must be >= 0, got {noise_sigma!r}")
        self.scale, self.plus, self.noise_sigma = scale, bool(plus), float(noise_sigma)
        blocks = [RRDBOld(num_feat, num_grow_ch, plus, noise_sigma, fused) for _ in range(num_block)]
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1),
                                   _Trunk(blocks, nn.Conv2d(num_feat, num_feat, 3, 1, 1), fused)]
        for r in _stages(scale):
            layers += [nn.Upsample(scale_factor=r, mode="nearest"), *_conv_lrelu(num_feat, num_feat)]
        layers += [*_conv_lrelu(num_feat, num_feat), nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)]
        self.model = nn.Sequential(*layers)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, m = self.fused, self.model
        feat = m[1](m[0](x))
        n = len(_stages(self.scale))
        for s, r in enumerate(_stages(self.scale)):
            up = F.interpolate(feat, scale_factor=r, mode="nearest")
            feat = conv_act(up, m[3 + 3 * s], "leaky_relu", 0.2, f)
        return m[4 + 3 * n](conv_act(feat, m[2 + 3 * n], "leaky_relu", 0.2, f))

    def extra_repr(self) -> str:
        return f"scale={self.scale}, plus={self.plus}, noise_sigma={self.noise_sigma}"
