"""HAT ("Activating More Pixels in Image Super-Resolution Transformer", Chen et al. 2023,
sec. 3.2-3.3, Fig. 4): SwinIR's frame whose residual groups (RHAG) are hybrid attention
blocks (HAB: shifted-window self-attention plus a parallel channel-attention conv branch
scaled by ``conv_scale``, eq. 2-3) followed by one overlapping cross-attention block
(OCAB: queries from the windows, keys / values from larger windows overlapping by
``overlap_ratio``, eq. 6).

Parameter and buffer names are the reference implementation's (``hat_arch.py``): the
relative position indices are model-level buffers (``relative_position_index_SA`` /
``_OCA``) and the shifted-window mask is computed at each forward, not stored.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fastsr.models.registry import register_model
from fastsr.models.swin import (Mlp, ShiftedWindows, SwinSRBase, WindowAttention, layer_spec, relative_position_index,
                                residual_conv, shifted_window_mask, to_image, to_tokens, traced,
                                window_attention, window_partition, window_reverse)

__all__ = ["HAT", "HAB", "OCAB", "CAB", "overlap_relative_position_index"]


def overlap_relative_position_index(window: int, overlap_window: int) -> torch.Tensor:
    """(window², overlap_window²) int64: for a query token of a window and a key token of
    its enlarged, centred overlapping window, the row of the
    ``(window + overlap_window - 1)²``-row bias table of their offset."""
    def grid(n):
        return torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)

    rel = (grid(overlap_window)[:, None, :] - grid(window)[:, :, None]).permute(1, 2, 0)
    rel = rel + (window - overlap_window + 1)
    return rel[..., 0] * (window + overlap_window - 1) + rel[..., 1]


class _ChannelAttention(nn.Module):
    """RCAN's channel attention: x * sigmoid(conv(relu(conv(avgpool(x)))))."""

    def __init__(self, dim: int, squeezed: int):
        super().__init__()
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, squeezed, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(squeezed, dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: conv3x3 C -> ``compressed``, GELU, conv3x3 back, then the
    channel attention through ``squeezed`` channels. (B, C, H, W) -> same."""

    def __init__(self, dim: int, compressed: int, squeezed: int):
        super().__init__()
        self.cab = nn.Sequential(nn.Conv2d(dim, compressed, 3, 1, 1), nn.GELU(), nn.Conv2d(compressed, dim, 3, 1, 1),
                                 _ChannelAttention(dim, squeezed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class HAB(ShiftedWindows):
    """Hybrid attention block (HAT eq. 2-3): x + W-MSA(LN(x)) + conv_scale * CAB(LN(x)),
    then x + MLP(LN(x)). The shifted-window mask and the index come from the model.
    Tokens (B, H*W, dim) -> same."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, compressed: int,
                 squeezed: int, conv_scale: float):
        super().__init__()
        window = self._init_windows(window, shift, None, store_mask=False)
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, own_index=False)
        self.conv_block = CAB(dim, compressed, squeezed)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int], index: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        y = self.norm1(x)
        conv = to_tokens(self.conv_block(to_image(y, *size)))
        attn = self.windowed(y, size, lambda w, m: self.attn(w, m, index), mask if self.shift else None)
        x = x + attn + self.conv_scale * conv
        return x + self.mlp(self.norm2(x))


class OCAB(nn.Module):
    """Overlapping cross-attention block (HAT eq. 6): queries from window x window
    windows, keys and values from the centred ``overlap_window`` windows (zero-padded
    unfold), then x + proj(attn) and x + MLP(LN(x)). Tokens (B, H*W, dim) -> same."""

    def __init__(self, dim: int, heads: int, window: int, overlap_window: int, mlp_ratio: float):
        super().__init__()
        self.heads, self.window, self.overlap_window = heads, window, overlap_window
        self.scale = (dim // heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.unfold = nn.Unfold(overlap_window, stride=window, padding=(overlap_window - window) // 2)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((window + overlap_window - 1) ** 2, heads))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int], index: torch.Tensor) -> torch.Tensor:
        (h, w), (b, _, c) = size, x.shape
        ws, ow, heads = self.window, self.overlap_window, self.heads
        q, k, v = self.qkv(self.norm1(x)).view(b, h, w, 3, c).unbind(3)
        q = window_partition(q, ws)
        kv = self.unfold(torch.cat((k, v), -1).permute(0, 3, 1, 2))  # (B, 2C * ow², nW)
        k, v = kv.view(b, 2, c, ow * ow, -1).permute(1, 0, 4, 3, 2).reshape(2, -1, ow * ow, c).unbind(0)

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], heads, c // heads).transpose(1, 2)

        bias = self.relative_position_bias_table[index.reshape(-1)].view(ws * ws, ow * ow, -1).permute(2, 0, 1)
        out = window_attention(split(q), split(k), split(v), bias, None, self.scale)
        x = self.proj(window_reverse(out, ws, ws, h, w).reshape(b, h * w, c)) + x
        return x + self.mlp(self.norm2(x))


class _AttenBlocks(nn.Module):
    """An RHAG's ``residual_group``: the HABs (alternately shifted) and the OCAB."""

    def __init__(self, blocks: Sequence[HAB], overlap_attn: OCAB):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.overlap_attn = overlap_attn

    def forward(self, x, size, rpi_sa, rpi_oca, mask):
        for blk in self.blocks:
            x = blk(x, size, rpi_sa, mask)
        return self.overlap_attn(x, size, rpi_oca)


class _RHAG(nn.Module):
    """Residual hybrid attention group: x + conv(blocks(x))."""

    def __init__(self, group: _AttenBlocks, conv: nn.Module):
        super().__init__()
        self.residual_group, self.conv = group, conv

    def forward(self, x, size, *args):
        return to_tokens(self.conv(to_image(self.residual_group(x, size, *args), *size))) + x


@register_model()
class HAT(SwinSRBase):
    """HAT (Chen et al. 2023), reference-compatible.

    Args:
        scale: 2^n or 3 (the reference's only tail, ``pixelshuffle``).
        in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, img_range, num_feat,
            patch_norm: as in :class:`~fastsr.models.SwinIR` (HAT: window 16, embed 180,
            6 x 6 blocks; HAT-L 12 groups; HAT-S embed 144).
        compress_ratio: CAB's channel compression (3; 24 in HAT-S).
        squeeze_factor: CAB's channel-attention squeeze (30; 24 in HAT-S).
        conv_scale: weight of the CAB branch (0.01).
        overlap_ratio: OCAB's window enlargement (0.5: overlap window 1.5 x window).
        resi_connection: ``"1conv"`` or ``"identity"``.
        upsampler: ``"pixelshuffle"`` (SwinIR's other tails are accepted too).
        fused: fastsr's fused conv epilogues.

    Shape: LR (N, in_chans, H, W) in [0, 1] -> (N, in_chans, scale*H, scale*W), any H, W
        (reflect-padded to a multiple of ``window_size``, cropped back).

    Raises:
        ValueError: as :class:`~fastsr.models.SwinIR`; channel ratios that do not divide
            embed_dim into at least one channel.
    """

    def __init__(self, scale: int = 4, in_chans: int = 3, embed_dim: int = 180, depths: Sequence[int] = (6,) * 6,
                 num_heads: Sequence[int] = (6,) * 6, window_size: int = 16, compress_ratio: float = 3,
                 squeeze_factor: float = 30, conv_scale: float = 0.01, overlap_ratio: float = 0.5,
                 mlp_ratio: float = 2.0, img_range: float = 1.0, upsampler: str = "pixelshuffle",
                 resi_connection: str = "1conv", num_feat: int = 64, patch_norm: bool = True, fused: bool = True):
        super().__init__()
        layer_spec("HAT", depths, num_heads, embed_dim)
        self._build_frame("HAT", in_chans, embed_dim, scale, upsampler, img_range, resi_connection, num_feat,
                          window_size, resi_connections=("1conv", "identity"))
        compressed, squeezed = int(embed_dim // compress_ratio), int(embed_dim // squeeze_factor)
        if compressed < 1 or squeezed < 1:
            raise ValueError(f"HAT: compress_ratio={compress_ratio} / squeeze_factor={squeeze_factor} leave no "
                             f"channels of embed_dim={embed_dim}")
        self.window_size, self.embed_dim = window_size, embed_dim
        overlap = int(window_size * overlap_ratio) + window_size
        self.register_buffer("relative_position_index_SA", relative_position_index(window_size))
        self.register_buffer("relative_position_index_OCA", overlap_relative_position_index(window_size, overlap))
        self.patch_embed = nn.Module()
        self.patch_embed.norm = nn.LayerNorm(embed_dim) if patch_norm else None

        def group(depth, heads):
            blocks = [HAB(embed_dim, heads, window_size, (i % 2) * (window_size // 2), mlp_ratio, compressed,
                          squeezed, conv_scale) for i in range(depth)]
            return _AttenBlocks(blocks, OCAB(embed_dim, heads, window_size, overlap, mlp_ratio))

        self.layers = nn.ModuleList(_RHAG(group(d, h), residual_conv(embed_dim, resi_connection))
                                    for d, h in zip(depths, num_heads))
        self.norm = nn.LayerNorm(embed_dim)
        self._mask_cache: tuple = ()
        self.fused = fused

    def _mask(self, size, device) -> torch.Tensor:
        ws = self.window_size
        if traced(*size):
            return shifted_window_mask(*size, ws, ws // 2, device)
        if not self._mask_cache or self._mask_cache[0] != (size, device):
            self._mask_cache = ((size, device), shifted_window_mask(*size, ws, ws // 2, device))
        return self._mask_cache[1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        mask = self._mask(size, x.device)
        t = to_tokens(x)
        if self.patch_embed.norm is not None:
            t = self.patch_embed.norm(t)
        for layer in self.layers:
            t = layer(t, size, self.relative_position_index_SA, self.relative_position_index_OCA, mask)
        return to_image(self.norm(t), *size)
