"""Swin2SR ("Swin2SR: SwinV2 Transformer for Compressed Image Super-Resolution and
Restoration", Conde et al. 2022): SwinIR's layout with Swin Transformer V2 blocks ("Swin
Transformer V2: Scaling Up Capacity and Resolution", Liu et al. 2022, sec. 3.1-3.3):
residual post-normalisation, scaled cosine attention with a learned per-head temperature
(clamped at log 100), and a log-spaced continuous relative position bias produced by a
small MLP (``cpb_mlp``) and squashed to 16 * sigmoid.

Parameter and buffer names are the reference implementation's (``network_swin2sr.py``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models.registry import register_model
from fastsr.models.swin import (UPSAMPLERS, Mlp, ShiftedWindows, SwinSRBase, layer_spec, relative_position_index,
                                residual_conv, to_image, to_tokens, window_attention)
from fastsr.models.swinir import RSTB

__all__ = ["Swin2SR", "WindowAttentionV2", "SwinV2Block", "log_relative_coords"]


def log_relative_coords(window: int) -> torch.Tensor:
    """(1, 2w-1, 2w-1, 2) float32: the relative offsets (dy, dx) of a window, scaled to
    [-8, 8] and log-spaced, sign(t) * log2(1 + |t|) / log2(8) (Swin V2, eq. 4)."""
    r = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
    table = table / (window - 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class WindowAttentionV2(nn.Module):
    """Scaled cosine window attention with the continuous position bias (Swin V2).

    ``qkv`` has no bias; ``q_bias`` / ``v_bias`` (k gets none) when ``qkv_bias``.
    Shape: (B * nW, window², dim) -> same.
    """

    def __init__(self, dim: int, heads: int, window: int, qkv_bias: bool = True):
        super().__init__()
        self.heads, self.window = heads, window
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, heads, bias=False))
        self.register_buffer("relative_coords_table", log_relative_coords(window))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        q, k, v = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        temperature = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        q = F.normalize(q, dim=-1) * temperature
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
        pos = table[self.relative_position_index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        return self.proj(window_attention(q, F.normalize(k, dim=-1), v, 16 * torch.sigmoid(pos), mask, 1.0))


class SwinV2Block(ShiftedWindows):
    """Swin V2 block (residual post-norm): x + LN(W-MSA(x)), then x + LN(MLP(x)).
    Tokens (B, H*W, dim) -> same."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, resolution,
                 qkv_bias: bool = True):
        super().__init__()
        window = self._init_windows(window, shift, resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionV2(dim, heads, window, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.norm1(self.windowed(x, size, self.attn))
        return x + self.norm2(self.mlp(x))


class _PatchEmbed(nn.Module):
    """Swin2SR's patch embedding at patch size 1: a 1x1 ``proj`` conv, then tokens (and
    ``norm`` when given)."""

    def __init__(self, dim: int, norm: bool):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = to_tokens(self.proj(x))
        return t if self.norm is None else self.norm(t)


class _RSTB2(RSTB):
    """Swin2SR's RSTB: SwinIR's, with the 1x1 patch-embedding conv after the residual conv."""

    def __init__(self, make_block, depth: int, conv: nn.Module, dim: int):
        super().__init__(make_block, depth, conv)
        self.patch_embed = _PatchEmbed(dim, False)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.patch_embed(self.conv(to_image(self.residual_group(x, size), *size))) + x


@register_model()
class Swin2SR(SwinSRBase):
    """Swin2SR (Conde et al. 2022), reference-compatible.

    Args:
        scale: upscaling factor (2^n or 3 for the pixelshuffle tails, any for
            ``pixelshuffledirect``, 2 / 4 / 8 for ``nearest+conv``, 1 for ``""``).
        in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, img_size, img_range,
            resi_connection, num_feat, patch_norm: as in :class:`~fastsr.models.SwinIR`.
        upsampler: SwinIR's tails, plus ``"pixelshuffle_aux"`` (the compressed-input x4
            model: a bicubic branch and an LR auxiliary output, of which the SR is returned).
        qkv_bias: the ``q_bias`` / ``v_bias`` parameters.
        fused: fastsr's fused conv epilogues.

    Shape: LR (N, in_chans, H, W) in [0, 1] -> (N, in_chans, scale*H, scale*W), any H, W.

    Raises:
        ValueError: as :class:`~fastsr.models.SwinIR`.
    """

    def __init__(self, scale: int = 4, in_chans: int = 3, embed_dim: int = 180, depths: Sequence[int] = (6,) * 6,
                 num_heads: Sequence[int] = (6,) * 6, window_size: int = 8, mlp_ratio: float = 2.0,
                 img_size: int = 64, img_range: float = 1.0, upsampler: str = "pixelshuffle",
                 resi_connection: str = "1conv", num_feat: int = 64, patch_norm: bool = True, qkv_bias: bool = True,
                 fused: bool = True):
        super().__init__()
        layer_spec("Swin2SR", depths, num_heads, embed_dim)
        self._build_frame("Swin2SR", in_chans, embed_dim, scale, upsampler, img_range, resi_connection, num_feat,
                          window_size, (*UPSAMPLERS, "pixelshuffle_aux"))
        if upsampler == "pixelshuffle_aux":
            self.conv_bicubic = nn.Conv2d(in_chans, num_feat, 3, 1, 1)
            self.conv_aux = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
            self.conv_after_aux = nn.Sequential(nn.Conv2d(in_chans, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.window_size, self.embed_dim = window_size, embed_dim
        self.patch_embed = _PatchEmbed(embed_dim, patch_norm)
        res = (img_size, img_size)

        def block(heads):
            return lambda i: SwinV2Block(embed_dim, heads, window_size, (i % 2) * (window_size // 2), mlp_ratio, res,
                                         qkv_bias)

        self.layers = nn.ModuleList(_RSTB2(block(h), d, residual_conv(embed_dim, resi_connection), embed_dim)
                                    for d, h in zip(depths, num_heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.fused = fused

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, size)
        return to_image(self.norm(t), *size)

    def _tail(self, feat: torch.Tensor, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.upsampler != "pixelshuffle_aux":
            return super()._tail(feat, x, size)
        h, w = size[0] * self.upscale, size[1] * self.upscale
        # the reference resizes the padded input to the unpadded output size
        bicubic = self.conv_bicubic(F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False))
        aux = self.conv_aux(self.conv_before_upsample(feat))
        up = self.upsample(self.conv_after_aux(aux))[:, :, :h, :w]
        return self.conv_last(up + bicubic)
