"""SPAN, the Swift Parameter-free Attention Network (Wan et al. 2024, "Swift Parameter-free
Attention Network for Efficient Super-Resolution", NTIRE 2024 efficient-SR winner), key for
key the released code (``conv_1``, ``block_1`` ... ``block_6``, ``conv_cat``, ``conv_2``,
``upsampler.0``), so community SPAN checkpoints load and save unchanged."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule
from fastsr.models.registry import register_model
from fastsr.nn.conv import conv_residual

__all__ = ["SPAN", "Conv3XC", "SPAB"]

#: DIV2K RGB mean of the released models (subtracted before scaling by ``img_range``).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def merge_conv3xc(sk: nn.Conv2d, convs: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """The one 3x3 kernel and bias equal to ``convs[2](convs[1](convs[0](pad(x)))) + sk(x)``
    away from the border (SPAN sec. 3.2, structural re-parameterisation): the 1x1 -> 3x3 ->
    1x1 chain composed, plus the 1x1 skip at the kernel's centre.

    Returns:
        ``(weight (C_out, C_in, 3, 3), bias (C_out,))`` in the parameters' dtype.
    """
    w1, w2, w3 = (c.weight for c in convs)
    b1, b2, b3 = (c.bias for c in convs)
    w = torch.einsum("oa,abhw,bi->oihw", w3[:, :, 0, 0], w2, w1[:, :, 0, 0])
    w = w + F.pad(sk.weight, (1, 1, 1, 1))
    b = w3[:, :, 0, 0] @ (torch.einsum("abhw,b->a", w2, b1) + b2) + b3 + sk.bias
    return w, b


class Conv3XC(nn.Module):
    """SPAN's re-parameterisable conv: in training ``1x1 -> 3x3 (valid, on the zero-padded
    input) -> 1x1`` plus a 1x1 skip (``conv.0/1/2``, ``sk``); in eval one 3x3 conv with the
    merged kernel (:func:`merge_conv3xc`), as upstream's eval forward. ``eval_conv`` holds
    that kernel in the files; upstream recomputes it from the branches on every eval call,
    and so does this module (the stored copy is kept only for the state_dict).

    With ``fused``, in training the skip add is the last 1x1 conv's
    :func:`fastsr.ops.bias_residual` epilogue. The merge is not cached: it costs about
    ``C_out * 2C_out * 2C_in * 9`` multiply-adds (8 M for 48 channels), under 1 % of one
    3x3 convolution over a 256 x 256 image, and recomputing it keeps the module traceable by
    ``torch.export`` / ``torch.compile`` and in step with in-place weight updates.
    """

    def __init__(self, c_in: int, c_out: int, gain: int = 2, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_in * gain, 1), nn.Conv2d(c_in * gain, c_out * gain, 3),
                                  nn.Conv2d(c_out * gain, c_out, 1))
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            t = self.conv[1](self.conv[0](F.pad(x, (1, 1, 1, 1))))
            return conv_residual(t, self.conv[2], self.sk(x), 1.0, self.fused)
        w, b = merge_conv3xc(self.sk, self.conv)
        return F.conv2d(x, w, b, 1, 1)


class SPAB(nn.Module):
    """Swift parameter-free attention block: three :class:`Conv3XC` (SiLU after the first two),
    then the parameter-free attention ``(c3 + x) * (sigmoid(c3) - 0.5)`` (SPAN eq. 4-5).
    Returns the block output and ``SiLU(c1(x))`` (SPAN concatenates the last block's): the
    released code applies its SiLU in place, so the tensor it returns as the first conv's
    output is the activated one, and the trained weights expect that."""

    def __init__(self, channels: int, fused: bool = True):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels, 2, fused)
        self.c2_r = Conv3XC(channels, channels, 2, fused)
        self.c3_r = Conv3XC(channels, channels, 2, fused)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = F.silu(self.c1_r(x))
        out3 = self.c3_r(F.silu(self.c2_r(out1)))
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1


@register_model()
class SPAN(FusedModule):
    """SPAN (Wan et al. 2024, "Swift Parameter-free Attention Network for Efficient
    Super-Resolution", Fig. 2), layer for layer the released ``SPAN``.

    ``(x - mean) * img_range`` (unless ``norm=False``) -> conv_1 (:class:`Conv3XC` in -> F)
    -> six :class:`SPAB` -> conv_2 (Conv3XC) on the last block -> conv_cat 1x1 over
    [conv_1, conv_2, block_1, block_6's first conv] (4F -> F) -> upsampler: conv3x3
    F -> out*s^2 and PixelShuffle(s). No output de-normalisation, as upstream.

    Args:
        scale: upscaling factor s, 1 to 8 (2 / 4 in the released models).
        num_in_ch, num_out_ch: image channels (3).
        num_feat: feature channels F (48 in the paper, 52 / 48 / 32 in community models).
        norm: subtract the mean and scale by ``img_range`` first (upstream default). Files of
            models built with ``norm=False`` hold a ``no_norm`` buffer.
        img_range: input scaling (255).
        rgb_mean: per-channel mean (DIV2K's).
        fused: the training-mode skip adds as fused epilogues (see :class:`Conv3XC`); the
            state_dict and the output (up to float rounding) are identical either way.

    Shape:
        LR (N, num_in_ch, H, W) in [0, 1] -> SR (N, num_out_ch, s*H, s*W) in about [0, 1].

    Raises:
        ValueError: ``scale`` not an int in 1..8, non-positive widths, or ``norm`` with
            ``len(rgb_mean) != num_in_ch``.
    """

    NUM_BLOCKS = 6

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 48,
                 norm: bool = True, img_range: float = 255.0, rgb_mean=DIV2K_RGB_MEAN, fused: bool = True):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 8:
            raise ValueError(f"SPAN: scale must be an int in 1..8, got {scale!r}")
        if min(num_in_ch, num_out_ch, num_feat) < 1:
            raise ValueError(f"SPAN: num_in_ch, num_out_ch, num_feat must be >= 1, got {num_in_ch}, {num_out_ch}, "
                             f"{num_feat}")
        if norm and len(rgb_mean) != num_in_ch:
            raise ValueError(f"SPAN: rgb_mean has {len(rgb_mean)} values for {num_in_ch} input channels")
        self.scale, self.norm, self.img_range = scale, bool(norm), float(img_range)
        self.register_buffer("mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        if not norm:  # upstream's marker of an unnormalised model, part of its state_dict
            self.register_buffer("no_norm", torch.zeros(1))
        self.conv_1 = Conv3XC(num_in_ch, num_feat, 2, fused)
        for i in range(1, self.NUM_BLOCKS + 1):
            setattr(self, f"block_{i}", SPAB(num_feat, fused))
        self.conv_cat = nn.Conv2d(num_feat * 4, num_feat, 1)
        self.conv_2 = Conv3XC(num_feat, num_feat, 2, fused)
        self.upsampler = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * scale * scale, 3, 1, 1),
                                       nn.PixelShuffle(scale))
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm:
            x = (x - self.mean.to(x.dtype)) * self.img_range
        feat = self.conv_1(x)
        out, first = feat, None
        for i in range(1, self.NUM_BLOCKS + 1):
            out, first = getattr(self, f"block_{i}")(out)
            if i == 1:
                out_b1 = out
        out = self.conv_cat(torch.cat([feat, self.conv_2(out), out_b1, first], 1))
        return self.upsampler(out)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, norm={self.norm}, img_range={self.img_range}"
