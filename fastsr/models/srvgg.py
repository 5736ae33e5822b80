"""SRVGGNetCompact, Real-ESRGAN's compact VGG-style generator ("realesr-general-x4v3",
"realesr-animevideov3"), key for key Real-ESRGAN's / BasicSR's ``SRVGGNetCompact``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule, init_icnr
from fastsr.models.registry import register_model
from fastsr.nn.conv import conv_act, conv_prelu, conv_residual

__all__ = ["SRVGGNetCompact", "SRVGG_ACTIVATIONS"]

#: act_type -> module constructor (per-channel PReLU, ReLU, LeakyReLU with slope 0.1)
SRVGG_ACTIVATIONS = ("prelu", "relu", "leakyrelu")


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(negative_slope=0.1)


@register_model()
@register_model("realesr_compact")
class SRVGGNetCompact(FusedModule):
    """Real-ESRGAN's compact generator (Wang et al. 2021, "Real-ESRGAN: Training Real-World
    Blind Super-Resolution with Pure Synthetic Data", released as ``SRVGGNetCompact``).

    ``body``: conv3x3 in -> F, activation, ``num_conv`` x [conv3x3 F -> F, activation],
    conv3x3 F -> out*s*s; then PixelShuffle(s) plus the nearest-upsampled input (the
    network learns the residual over nearest-neighbour upscaling). Every layer works at LR
    resolution. Keys ``body.{i}.weight`` / ``body.{i}.bias`` (convs at even ``i``, PReLU
    slopes at odd ``i``) as upstream, so Real-ESRGAN files load unchanged.

    With ``fused=True`` and ``act_type="prelu"`` each conv runs without bias and its
    bias + PReLU epilogue is one :func:`fastsr.ops.bias_prelu` kernel; ReLU / LeakyReLU
    layers and ``fused=False`` run the plain modules. The state_dict is identical either way.

    Args:
        scale: upscaling factor s, 1 to 8 (4 in the released models).
        num_in_ch, num_out_ch: image channels (3).
        num_feat: feature channels F (64 in the released models).
        num_conv: hidden F -> F convolutions (32 in realesr-general-x4v3, 16 in
            realesr-animevideov3).
        act_type: ``"prelu"`` (per channel, upstream default), ``"relu"`` or
            ``"leakyrelu"`` (slope 0.1).
        fused: see above.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.

    Shape:
        LR (N, num_in_ch, H, W) in [0, 1] -> SR (N, num_out_ch, s*H, s*W) in about [0, 1]
        (linear output, clamp for display); float32 or bfloat16 (float16 on CUDA).

    Parameters (x4, F = 64, PReLU): 1,213,296 with 32 convs, 621,424 with 16.

    Raises:
        ValueError: ``scale`` not an int in 1..8, ``act_type`` unknown, non-positive
            widths, negative ``num_conv``, or ``num_out_ch != num_in_ch`` (the input is
            added to the output).
    """

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_conv: int = 16, act_type: str = "prelu", fused: bool = True, icnr: bool = False):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 8:
            raise ValueError(f"SRVGGNetCompact: scale must be an int in 1..8, got {scale!r}")
        if act_type not in SRVGG_ACTIVATIONS:
            raise ValueError(f"SRVGGNetCompact: act_type must be one of {SRVGG_ACTIVATIONS}, got {act_type!r}")
        if min(num_in_ch, num_out_ch, num_feat) < 1 or num_conv < 0:
            raise ValueError(f"SRVGGNetCompact: num_in_ch, num_out_ch, num_feat must be >= 1 and num_conv >= 0, "
                             f"got {num_in_ch}, {num_out_ch}, {num_feat}, {num_conv}")
        if num_out_ch != num_in_ch:
            raise ValueError(f"SRVGGNetCompact: num_out_ch ({num_out_ch}) must equal num_in_ch ({num_in_ch}): "
                             "the upsampled input is added to the output")
        self.scale = scale
        self.act_type = act_type
        self.num_conv = num_conv
        body = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            body += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        body.append(nn.Conv2d(num_feat, num_out_ch * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(body)
        self.fused = fused
        if icnr:
            init_icnr(self)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(last conv, scale)]`` (for :func:`fastsr.models.init_icnr`)."""
        return [(self.body[-1], self.scale)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        layers = list(self.body)
        if not self.fused:
            for layer in layers[:-1]:
                out = layer(out)
            out = F.pixel_shuffle(layers[-1](out), self.scale)
            return out + F.interpolate(x, scale_factor=self.scale, mode="nearest").to(out.dtype)
        for conv, act in zip(layers[:-1:2], layers[1::2]):
            if self.act_type == "prelu":
                out = conv_prelu(out, conv, act)
            else:
                out = conv_act(out, conv, "relu" if self.act_type == "relu" else "leaky_relu", 0.1)
        # + nearest-upsampled input == PixelShuffle(conv + input repeated scale^2 times per
        # channel): the add becomes the last convolution's residual epilogue
        skip = x.repeat_interleave(self.scale * self.scale, dim=1)
        return F.pixel_shuffle(conv_residual(out, layers[-1], skip), self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, num_conv={self.num_conv}, act_type={self.act_type!r}, fused={self.fused}"
