"""SwinIR ("SwinIR: Image Restoration Using Swin Transformer", Liang et al. 2021, sec. 3.1,
Fig. 2): conv_first shallow features, residual Swin Transformer blocks (RSTB: Swin layers
+ a conv, with a residual), conv_after_body with a long skip, and the reconstruction tail
of the task (sec. 3.1, "image reconstruction": pixel-shuffle for classical SR, one
conv + pixel-shuffle for lightweight SR, nearest + conv for real-world SR, a residual conv
for denoising / JPEG).

Parameter and buffer names are the reference implementation's (``network_swinir.py``), so
its checkpoints load and :meth:`state_dict` loads back into it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fastsr.models.registry import register_model
from fastsr.models.swin import (Mlp, ShiftedWindows, SwinSRBase, WindowAttention, layer_spec, residual_conv,
                                to_image, to_tokens)

__all__ = ["SwinIR", "SwinTransformerBlock", "RSTB"]


class SwinTransformerBlock(ShiftedWindows):
    """Swin v1 block (pre-norm): x + W-MSA(LN(x)), then x + MLP(LN(x)); (shifted) window
    attention with a relative position bias. Tokens (B, H*W, dim) -> same."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, resolution):
        super().__init__()
        window = self._init_windows(window, shift, resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.windowed(self.norm1(x), size, self.attn)
        return x + self.mlp(self.norm2(x))


class _Blocks(nn.Module):
    """The ``residual_group`` of an RSTB: its ``blocks``, alternately unshifted / shifted."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer Block (SwinIR eq. 6-7): x + conv(Swin layers(x)).
    ``make_block(i)`` builds block ``i``; ``conv`` is the 1conv / 3conv residual conv."""

    def __init__(self, make_block, depth: int, conv: nn.Module):
        super().__init__()
        self.residual_group = _Blocks([make_block(i) for i in range(depth)])
        self.conv = conv

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return to_tokens(self.conv(to_image(self.residual_group(x, size), *size))) + x


@register_model()
class SwinIR(SwinSRBase):
    """SwinIR (Liang et al. 2021), reference-compatible.

    Args:
        scale: upscaling factor (the reference's ``upscale``): 2^n or 3 for
            ``pixelshuffle``, any for ``pixelshuffledirect``, 2 / 4 / 8 for ``nearest+conv``;
            1 for ``upsampler=""``.
        in_chans: image channels (3 RGB; 1 for the gray denoising / JPEG models).
        embed_dim: transformer width (180 classical, 60 lightweight, 240 real-world large).
        depths, num_heads: blocks and attention heads of each RSTB.
        window_size: attention window side (8; 7 for the JPEG models).
        mlp_ratio: MLP hidden width / embed_dim (2).
        img_size: training patch size; it fixes the stored ``attn_mask`` buffers (other
            input sizes compute their mask).
        img_range: 1.0, or 255.0 for the JPEG models (values are scaled by it inside).
        upsampler: ``"pixelshuffle"``, ``"pixelshuffledirect"``, ``"nearest+conv"`` or ``""``.
        resi_connection: ``"1conv"`` or ``"3conv"``.
        num_feat: channels of the pixelshuffle / nearest+conv tails (64).
        patch_norm: a LayerNorm on the embedded tokens (``patch_embed.norm``).
        fused: fastsr's fused conv epilogues (conv_after_body, the residual tail).

    Shape: LR (N, in_chans, H, W) in [0, 1] -> (N, in_chans, scale*H, scale*W), any H, W
        (reflect-padded to a multiple of ``window_size`` and cropped back, as the reference).

    Raises:
        ValueError: unknown upsampler / resi_connection, a scale the tail cannot give,
            mismatched depths / num_heads.
    """

    def __init__(self, scale: int = 4, in_chans: int = 3, embed_dim: int = 180, depths: Sequence[int] = (6,) * 6,
                 num_heads: Sequence[int] = (6,) * 6, window_size: int = 8, mlp_ratio: float = 2.0,
                 img_size: int = 64, img_range: float = 1.0, upsampler: str = "pixelshuffle",
                 resi_connection: str = "1conv", num_feat: int = 64, patch_norm: bool = True, fused: bool = True):
        super().__init__()
        layer_spec("SwinIR", depths, num_heads, embed_dim)
        self._build_frame("SwinIR", in_chans, embed_dim, scale, upsampler, img_range, resi_connection, num_feat,
                          window_size)
        self.window_size, self.embed_dim = window_size, embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.norm = nn.LayerNorm(embed_dim) if patch_norm else None
        res = (img_size, img_size)

        def block(heads):
            return lambda i: SwinTransformerBlock(embed_dim, heads, window_size, (i % 2) * (window_size // 2),
                                                  mlp_ratio, res)

        self.layers = nn.ModuleList(
            RSTB(block(h), d, residual_conv(embed_dim, resi_connection))
            for d, h in zip(depths, num_heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.fused = fused

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        t = to_tokens(x)
        if self.patch_embed.norm is not None:
            t = self.patch_embed.norm(t)
        for layer in self.layers:
            t = layer(t, size)
        return to_image(self.norm(t), *size)

