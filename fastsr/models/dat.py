"""DAT ("Dual Aggregation Transformer for Image Super-Resolution", Chen et al. 2023,
sec. 3.2-3.4): residual groups of transformer blocks alternating spatial window attention
(AS: half the channels in split_size[0] x split_size[1] windows, half in the transposed
rectangles, every fourth block shifted, a dynamic position bias from an MLP) and channel
self-attention (AC: attention between channels, per-head temperature), each with an
adaptive interaction module (a depth-wise conv branch gated by channel / spatial maps,
sec. 3.3), and the spatial-gate feed-forward network (SGFN, sec. 3.4).

Parameter and buffer names are the reference implementation's (``dat_arch.py``). Inputs
of any size work as in the reference: the spatial attention zero-pads its tokens to a
multiple of the larger split and crops back; no image padding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models.registry import register_model
from fastsr.models.swin import (SwinSRBase, layer_spec, relative_position_index, residual_conv, shifted_window_mask,
                                to_image, to_tokens, traced, window_attention, window_partition, window_reverse)

__all__ = ["DAT", "DATB", "position_offsets", "is_shifted"]


def position_offsets(wh: int, ww: int) -> torch.Tensor:
    """((2wh-1)(2ww-1), 2) float32: every (dy, dx) offset inside a wh x ww window, the input
    of the dynamic position bias (DAT's ``rpe_biases``)."""
    g = torch.stack(torch.meshgrid(torch.arange(1 - wh, wh), torch.arange(1 - ww, ww), indexing="ij"))
    return g.flatten(1).transpose(0, 1).float()


def is_shifted(group: int, block: int) -> bool:
    """Whether block ``block`` of residual group ``group`` shifts its windows (the
    reference's rule: blocks 2, 6, 10, ... of even groups, 0, 4, 8, ... of odd groups;
    only the spatial-attention blocks, the even ones, can be shifted)."""
    return (group % 2 == 0 and block > 0 and (block - 2) % 4 == 0) or (group % 2 == 1 and block % 4 == 0)


def _interaction(dim: int, squeeze: int, out: int, pool: bool) -> nn.Sequential:
    """1x1 conv -> BN -> GELU -> 1x1 conv, after a global average pool for the channel map."""
    layers = [nn.AdaptiveAvgPool2d(1)] if pool else []
    return nn.Sequential(*layers, nn.Conv2d(dim, squeeze, 1), nn.BatchNorm2d(squeeze), nn.GELU(),
                         nn.Conv2d(squeeze, out, 1))


class _Interaction(nn.Module):
    """The adaptive interaction module's parameters (DAT sec. 3.3): a depth-wise conv + BN +
    GELU branch on V, a channel map (pool, C -> C/8 -> C) and a spatial map (C -> C/16 -> 1)."""

    def _init_interaction(self, dim: int) -> None:
        self.dwconv = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.BatchNorm2d(dim), nn.GELU())
        self.channel_interaction = _interaction(dim, dim // 8, dim, True)
        self.spatial_interaction = _interaction(dim, dim // 16, 1, False)


class _PosBias(nn.Module):
    """Dynamic position bias (DAT, after CrossFormer): offsets (n, 2) -> Linear -> 3 x
    [LN, ReLU, Linear] -> (n, heads)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, pos_dim)
        for i, out in ((1, pos_dim), (2, pos_dim), (3, heads)):
            setattr(self, f"pos{i}", nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(inplace=True), nn.Linear(pos_dim, out)))

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


class _Windows(nn.Module):
    """One branch of the spatial attention: ``dim`` channels, ``heads`` heads, wh x ww
    windows with the dynamic position bias."""

    def __init__(self, dim: int, heads: int, wh: int, ww: int):
        super().__init__()
        self.heads, self.wh, self.ww, self.scale = heads, wh, ww, (dim // heads) ** -0.5
        self.pos = _PosBias(dim // 4, heads)
        self.register_buffer("rpe_biases", position_offsets(wh, ww))
        self.register_buffer("relative_position_index", relative_position_index(wh, ww))

    def forward(self, q, k, v, mask):
        """q, k, v: (B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = q.shape
        n = self.wh * self.ww

        def split(t):
            return window_partition(t, self.wh, self.ww).view(-1, n, self.heads, c // self.heads).transpose(1, 2)

        bias = self.pos(self.rpe_biases)[self.relative_position_index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        out = window_attention(split(q), split(k), split(v), bias, mask, self.scale)
        return window_reverse(out, self.wh, self.ww, h, w)


class _SpatialAttention(_Interaction):
    """Adaptive spatial attention (AS). Tokens (B, H*W, dim) -> same."""

    def __init__(self, dim: int, heads: int, split: Sequence[int], shifted: bool, img_size: int, qkv_bias: bool):
        super().__init__()
        self.split, self.shifted, self.img_size = tuple(split), shifted, img_size
        self.shift = (split[0] // 2, split[1] // 2)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attns = nn.ModuleList([_Windows(dim // 2, heads // 2, split[0], split[1]),
                                    _Windows(dim // 2, heads // 2, split[1], split[0])])
        masks = self._masks(img_size, img_size, None) if shifted else (None, None)
        self.register_buffer("attn_mask_0", masks[0])
        self.register_buffer("attn_mask_1", masks[1])
        self._init_interaction(dim)
        self._mask_cache: tuple = ()

    def _masks(self, h, w, device):
        (s0, s1), (t0, t1) = self.split, self.shift
        return (shifted_window_mask(h, w, (s0, s1), (t0, t1), device),
                shifted_window_mask(h, w, (s1, s0), (t1, t0), device))

    def _masks_for(self, h, w, device):
        if traced(h, w):
            return self._masks(h, w, device)
        if (h, w) == (self.img_size, self.img_size):
            return self.attn_mask_0, self.attn_mask_1
        if not self._mask_cache or self._mask_cache[0] != (h, w, device):
            self._mask_cache = ((h, w, device), self._masks(h, w, device))
        return self._mask_cache[1]

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        qkv = self.qkv(x)
        v_img = to_image(qkv[..., 2 * c:], h, w)
        m = max(self.split)
        ph, pw = (-h) % m, (-w) % m
        grid = F.pad(to_image(qkv, h, w), (0, pw, 0, ph)).permute(0, 2, 3, 1)  # (B, H', W', 3C)
        hp, wp = h + ph, w + pw
        q, k, v = grid.reshape(b, hp, wp, 3, c).unbind(3)
        halves = [(t[..., : c // 2] for t in (q, k, v)), (t[..., c // 2:] for t in (q, k, v))]
        (t0, t1), outs = self.shift, []
        masks = self._masks_for(hp, wp, x.device) if self.shifted else (None, None)
        for i, (attn, qkv_i, shift) in enumerate(zip(self.attns, halves, ((t0, t1), (t1, t0)))):
            qkv_i = list(qkv_i)
            if self.shifted:
                qkv_i = [torch.roll(t, (-shift[0], -shift[1]), (1, 2)) for t in qkv_i]
            out = attn(*qkv_i, masks[i])
            if self.shifted:
                out = torch.roll(out, shift, (1, 2))
            outs.append(out[:, :h, :w].reshape(b, h * w, c // 2))
        attended = torch.cat(outs, -1)
        conv = self.dwconv(v_img)
        channel = self.channel_interaction(conv).view(b, 1, c)
        spatial = self.spatial_interaction(to_image(attended, h, w))
        return self.proj(attended * torch.sigmoid(channel) + to_tokens(torch.sigmoid(spatial) * conv))


class _ChannelAttention(_Interaction):
    """Adaptive channel attention (AC): attention between the channels of each head,
    cosine similarity times a learned ``temperature``. Tokens (B, H*W, dim) -> same."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._init_interaction(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 4, 1).unbind(0)
        q = F.normalize(q, dim=-1) * self.temperature
        attended = F.scaled_dot_product_attention(q, F.normalize(k, dim=-1), v, scale=1.0)  # (B, heads, d, N)
        attended = attended.permute(0, 3, 1, 2).reshape(b, n, c)
        conv = self.dwconv(v.reshape(b, c, h, w))
        channel = self.channel_interaction(to_image(attended, h, w))
        spatial = self.spatial_interaction(conv).view(b, n, 1)
        return self.proj(attended * torch.sigmoid(spatial) + to_tokens(conv * torch.sigmoid(channel)))


class _SGFN(nn.Module):
    """Spatial-gate feed-forward network: fc1, GELU, half the channels gated by a
    depth-wise conv of the (normalised) other half, fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.sg = nn.Module()
        self.sg.norm = nn.LayerNorm(hidden // 2)
        self.sg.conv = nn.Conv2d(hidden // 2, hidden // 2, 3, 1, 1, groups=hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x1, x2 = self.act(self.fc1(x)).chunk(2, -1)
        return self.fc2(x1 * to_tokens(self.sg.conv(to_image(self.sg.norm(x2), h, w))))


class DATB(nn.Module):
    """Dual aggregation transformer block: x + attn(LN(x)), x + SGFN(LN(x)); spatial
    attention at even ``block`` indices, channel attention at odd ones."""

    def __init__(self, dim: int, heads: int, split: Sequence[int], expansion: float, group: int, block: int,
                 img_size: int, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if block % 2 == 0:
            self.attn = _SpatialAttention(dim, heads, split, is_shifted(group, block), img_size, qkv_bias)
        else:
            self.attn = _ChannelAttention(dim, heads, qkv_bias)
        self.ffn = _SGFN(dim, int(dim * expansion))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), *size)
        return x + self.ffn(self.norm2(x), *size)


class _ResidualGroup(nn.Module):
    def __init__(self, blocks: Sequence[DATB], conv: nn.Module):
        super().__init__()
        self.blocks, self.conv = nn.ModuleList(blocks), conv

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        res = x
        for blk in self.blocks:
            x = blk(x, size)
        return res + to_tokens(self.conv(to_image(x, *size)))


class _ToTokens(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_tokens(x)


@register_model()
class DAT(SwinSRBase):
    """DAT (Chen et al. 2023), reference-compatible.

    Args:
        scale: 2^n or 3 (``pixelshuffle``), any (``pixelshuffledirect``, DAT-light).
        in_chans: image channels.
        embed_dim: width (180 DAT / DAT-S / DAT-2, 60 DAT-light); at least 32 (the
            interaction and position-bias MLPs divide it by 16 and 32).
        depths: blocks per residual group (the reference's ``depth``: [6] * 6).
        num_heads: heads per group (even: half go to each window orientation).
        split_size: the spatial windows (8, 32): split_size[0] x split_size[1] for one
            half of the channels, transposed for the other (DAT-S: (8, 16)).
        expansion_factor: SGFN hidden width / embed_dim (2; 4 in DAT-S).
        img_size: training patch size; it fixes the stored ``attn_mask_0/1`` buffers.
        img_range, upsampler, resi_connection, num_feat: as in :class:`~fastsr.models.SwinIR`.
        qkv_bias: bias of the qkv projections.
        fused: fastsr's fused conv epilogues.

    Shape: LR (N, in_chans, H, W) in [0, 1] -> (N, in_chans, scale*H, scale*W), any H, W.

    Raises:
        ValueError: as :class:`~fastsr.models.SwinIR`; odd heads or embed_dim < 32.
    """

    def __init__(self, scale: int = 4, in_chans: int = 3, embed_dim: int = 180, depths: Sequence[int] = (6,) * 6,
                 num_heads: Sequence[int] = (6,) * 6, split_size: Sequence[int] = (8, 32),
                 expansion_factor: float = 2.0, img_size: int = 64, img_range: float = 1.0,
                 upsampler: str = "pixelshuffle", resi_connection: str = "1conv", num_feat: int = 64,
                 qkv_bias: bool = True, fused: bool = True):
        super().__init__()
        layer_spec("DAT", depths, num_heads, embed_dim)
        if embed_dim < 32 or any(int(h) % 2 for h in num_heads) or len(split_size) != 2:
            raise ValueError(f"DAT: embed_dim must be >= 32, num_heads even and split_size two ints, got "
                             f"embed_dim={embed_dim}, num_heads={list(num_heads)}, split_size={split_size}")
        self._build_frame("DAT", in_chans, embed_dim, scale, upsampler, img_range, resi_connection, num_feat, 1)
        self.embed_dim, self.split_size = embed_dim, tuple(int(s) for s in split_size)
        self.before_RG = nn.Sequential(_ToTokens(), nn.LayerNorm(embed_dim))
        self.layers = nn.ModuleList(
            _ResidualGroup([DATB(embed_dim, heads, self.split_size, expansion_factor, g, j, img_size, qkv_bias)
                            for j in range(depth)], residual_conv(embed_dim, resi_connection))
            for g, (depth, heads) in enumerate(zip(depths, num_heads)))
        self.norm = nn.LayerNorm(embed_dim)
        self.fused = fused

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        t = self.before_RG(x)
        for layer in self.layers:
            t = layer(t, size)
        return to_image(self.norm(t), *size)
