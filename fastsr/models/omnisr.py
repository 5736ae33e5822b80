"""Omni-SR (Wang et al., CVPR 2023, "Omni Aggregation Networks for Lightweight Image
Super-Resolution"), key for key the authors' ``OmniSR`` class (as spandrel 0.4.2 ships it)
so released ``.pth`` files load unchanged and fastsr's state_dict loads back into it.

conv3x3 -> ``res_num`` Omni Self-Attention Groups (OSAG: ``block_num`` OSA blocks, a conv1x1
with the group input added, an Enhanced Spatial Attention) -> conv3x3 + the first conv's
output -> conv3x3 to C*s^2 + PixelShuffle(s). An OSA block is MBConv, then two rounds of
[window self-attention with relative position bias (block-wise, then grid-wise over the
image), gated conv feed-forward, channel self-attention (within windows, then across the
grid), gated conv feed-forward], each with a pre-norm residual.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.errors import DataError
from fastsr.models._layers import LayerNorm2d, conv_add
from fastsr.models._utils import FusedModule, check_scale
from fastsr.models.registry import register_model

__all__ = ["OmniSR"]


def _windows(x: torch.Tensor, w: int, grid: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B * H/w * W/w, w*w, C) tokens of w x w windows: contiguous blocks,
    or (``grid``) pixels H/w apart (upstream's ``b d (x w1) (y w2)`` / ``b d (w1 x) (w2 y)``)."""
    b, c, h, wd = x.shape
    if grid:
        t = x.reshape(b, c, w, h // w, w, wd // w).permute(0, 3, 5, 2, 4, 1)
    else:
        t = x.reshape(b, c, h // w, w, wd // w, w).permute(0, 2, 4, 3, 5, 1)
    return t.reshape(-1, w * w, c)


def _unwindows(t: torch.Tensor, shape: torch.Size, w: int, grid: bool) -> torch.Tensor:
    """Inverse of :func:`_windows`."""
    b, c, h, wd = shape
    t = t.reshape(b, h // w, wd // w, w, w, c)
    if grid:
        return t.permute(0, 5, 3, 1, 4, 2).reshape(shape)
    return t.permute(0, 5, 1, 3, 2, 4).reshape(shape)


class _SpatialMean(nn.Module):
    """(B, C, H, W) -> (B, C): the mean over H, W (upstream's ``Reduce('b c h w -> b c')``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(W2 silu(W1 mean_hw(x)))``, bias-free linear layers C -> C/4 -> C."""

    def __init__(self, dim: int, shrinkage_rate: float = 0.25):
        super().__init__()
        hidden = int(dim * shrinkage_rate)
        self.gate = nn.Sequential(_SpatialMean(), nn.Linear(dim, hidden, bias=False), nn.SiLU(),
                                  nn.Linear(hidden, dim, bias=False), nn.Sigmoid(), nn.Unflatten(1, (dim, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class MBConv(nn.Module):
    """Inverted bottleneck with expansion 1: x + conv1x1(SE(GELU(dwconv3x3(GELU(conv1x1(x))))));
    the last conv's bias and the skip are one fused epilogue when ``fused``."""

    def __init__(self, dim: int, fused: bool = True):
        super().__init__()
        self.fn = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
                                nn.GELU(), SqueezeExcitation(dim), nn.Conv2d(dim, dim, 1))
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in list(self.fn)[:-1]:
            h = layer(h)
        return conv_add(h, self.fn[-1], x, self.fused)


class WindowAttention(nn.Module):
    """Multi-head self-attention in w x w windows (4 heads of C/4) with a learned relative
    position bias (``rel_pos_bias``, (2w-1)^2 x heads, when ``with_pe``); bias-free
    ``to_qkv`` / ``to_out`` linear layers. Fused: ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, window_size: int, with_pe: bool, fused: bool = True):
        super().__init__()
        self.heads = 4
        self.scale = (dim // self.heads) ** -0.5
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False))
        self.rel_pos_bias = nn.Embedding((2 * window_size - 1) ** 2, self.heads) if with_pe else None
        pos = torch.arange(window_size)
        grid = torch.stack(torch.meshgrid(pos, pos, indexing="ij")).flatten(1).t()  # (w*w, 2)
        rel = grid[:, None, :] - grid[None, :, :] + window_size - 1
        self.register_buffer("rel_pos_indices", rel[..., 0] * (2 * window_size - 1) + rel[..., 1], persistent=False)
        self.fused = fused

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B', n, C) tokens of windows of n = w*w pixels -> (B', n, C)."""
        b, n, c = t.shape
        q, k, v = (u.reshape(b, n, self.heads, -1).transpose(1, 2) for u in self.to_qkv(t).chunk(3, dim=-1))
        bias = None
        if self.rel_pos_bias is not None:
            bias = self.rel_pos_bias(self.rel_pos_indices).permute(2, 0, 1).to(q.dtype)  # (heads, n, n)
        if self.fused:  # a mask of the full 4-d shape (a view) takes torch's fused CPU kernel, 3x faster
            mask = None if bias is None else bias.expand(b, -1, -1, -1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        else:
            sim = (q * self.scale) @ k.transpose(-2, -1)
            out = (sim if bias is None else sim + bias).softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))


class PreNormAttention(nn.Module):
    """x + attention(LayerNorm(x)) over the w x w windows (or the grid) of an image."""

    def __init__(self, dim: int, window_size: int, with_pe: bool, grid: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = WindowAttention(dim, window_size, with_pe)
        self.window_size, self.grid = window_size, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = _windows(x, self.window_size, self.grid)
        return _unwindows(t + self.fn(self.norm(t)), x.shape, self.window_size, self.grid)


class GatedFeedForward(nn.Module):
    """conv1x1 C -> 2C, depth-wise conv3x3, GELU(first half) * second half, conv1x1 C -> C
    (all bias-free)."""

    def __init__(self, dim: int):
        super().__init__()
        self.project_in = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(dim * 2, dim * 2, 3, 1, 1, groups=dim * 2, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class ChannelAttention(nn.Module):
    """Transposed (channel) self-attention: 4 heads, L2-normalised q / k over the pixels of
    each w x w window (or, ``grid``, of each grid position across the windows), scaled by a
    learned per-head ``temperature``; qkv by conv1x1 + depth-wise conv3x3, bias-free. The
    attention matrices are only (C/4) x (C/4): explicit matmuls, faster than
    ``F.scaled_dot_product_attention`` on the CPU for them."""

    def __init__(self, dim: int, window_size: int, grid: bool):
        super().__init__()
        self.heads, self.ps, self.grid = 4, window_size, grid
        self.temperature = nn.Parameter(torch.ones(self.heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, 1, 1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        p = self.ps
        t = t.reshape(b, self.heads, c // self.heads, h // p, p, w // p, p)
        if self.grid:  # b (ph pw) head d (h w)
            return t.permute(0, 4, 6, 1, 2, 3, 5).reshape(b, p * p, self.heads, c // self.heads, -1)
        return t.permute(0, 3, 5, 1, 2, 4, 6).reshape(b, -1, self.heads, c // self.heads, p * p)

    def _merge(self, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        b, c, h, w = shape
        p = self.ps
        if self.grid:
            t = t.reshape(b, p, p, self.heads, c // self.heads, h // p, w // p).permute(0, 3, 4, 5, 1, 6, 2)
        else:
            t = t.reshape(b, h // p, w // p, self.heads, c // self.heads, p, p).permute(0, 3, 4, 1, 5, 2, 6)
        return t.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split(t) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        out = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1) @ v
        return self.project_out(self._merge(out, x.shape))


class ConvPreNorm(nn.Module):
    """x + fn(LayerNorm2d(x)) (LayerNorm over the channels of each pixel, eps 1e-6)."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


class OSABlock(nn.Module):
    """The Omni Self-Attention block. ``layer`` is numbered as upstream's ``nn.Sequential``,
    whose entries 1, 3, 7, 9 are parameter-free rearranges (here inside the attention)."""

    def __init__(self, dim: int, window_size: int, with_pe: bool):
        super().__init__()

        def stage(grid: bool) -> list[nn.Module]:
            return [PreNormAttention(dim, window_size, with_pe, grid), ConvPreNorm(dim, GatedFeedForward(dim)),
                    ConvPreNorm(dim, ChannelAttention(dim, window_size, grid)), ConvPreNorm(dim, GatedFeedForward(dim))]

        layers = [MBConv(dim)] + stage(False) + stage(True)
        self.layer = nn.ModuleDict({str(i): m for i, m in zip((0, 2, 4, 5, 6, 8, 10, 11, 12), layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer.values():
            x = layer(x)
        return x


class ESA(nn.Module):
    """Enhanced Spatial Attention (Liu et al. 2020, "Residual Feature Aggregation Network
    for Image Super-Resolution"), as Omni-SR uses it: x * sigmoid(conv4(up(conv3(maxpool7s3(
    conv2_s2(conv1(x))))) + conv_f(conv1(x)))); the ``+ conv_f`` is a fused epilogue."""

    def __init__(self, esa_channels: int, n_feats: int, fused: bool = True):
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c3 = self.conv3(F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3))
        c3 = F.interpolate(c3, x.shape[2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(conv_add(c1_, self.conv_f, c3, self.fused)))


class OSAG(nn.Module):
    """Omni Self-Attention Group: ESA(x + conv1x1(OSA blocks(x)))."""

    def __init__(self, dim: int, bias: bool, block_num: int, window_size: int, pe: bool, fused: bool = True):
        super().__init__()
        self.residual_layer = nn.Sequential(*[OSABlock(dim, window_size, pe) for _ in range(block_num)],
                                            nn.Conv2d(dim, dim, 1, 1, 0, bias=bias))
        self.esa = ESA(max(dim // 4, 16), dim)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in list(self.residual_layer)[:-1]:
            h = block(h)
        return self.esa(conv_add(h, self.residual_layer[-1], x, self.fused))


@register_model()
@register_model("omnisr")
class OmniSR(FusedModule):
    """Omni-SR (Wang et al., CVPR 2023, "Omni Aggregation Networks for Lightweight Image
    Super-Resolution"), the authors' ``OmniSR`` (released: 64 features, 5 groups of 1 block,
    window 8, position bias; 784,604 / 793,259 / 805,376 parameters at x2 / x3 / x4). The
    defaults are the upstream class's (1 group).

    The input is zero-padded on the right / bottom to a multiple of ``window_size`` and the
    output cropped back. With ``fused=True`` the window attention runs as
    ``F.scaled_dot_product_attention`` (torch's fused kernel) and the residual adds after a biased convolution (the MBConv skip, each group's conv1x1
    + input, ESA's ``+ conv_f``, the long skip) are :func:`fastsr.ops.bias_residual`
    epilogues. The state_dict is the same either way.

    Args:
        scale: upscaling factor s, 1 to 8.
        num_in_ch, num_out_ch: image channels (3).
        num_feat: features C, a multiple of 4 (4 attention heads of C/4).
        block_num: OSA blocks per group.
        pe: relative position bias in the window attention.
        window_size: window side w (8); the attention windows are w x w.
        res_num: groups (OSAG).
        bias: biases in the input / output / upsampling convs and each group's conv1x1.
        fused: see above.

    Shape:
        LR (N, num_in_ch, H, W), float32 / bfloat16 (float16 on CUDA), in [0, 1] ->
        SR (N, num_out_ch, s*H, s*W) in about [0, 1]. H and W padded to a multiple of w must be
        at least 15 (ESA's strided conv and 7x7 max-pool).

    Raises:
        ValueError: ``scale`` not in 1..8, ``num_feat`` not a positive multiple of 4, other
            sizes not positive; in ``forward``, an input not (N, num_in_ch, H, W).
        fastsr.errors.DataError (a ValueError): in ``forward``, an input too small (above).
    """

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 block_num: int = 1, pe: bool = True, window_size: int = 8, res_num: int = 1, bias: bool = True,
                 fused: bool = True):
        super().__init__()
        self.scale = check_scale("OmniSR", scale, range(1, 9))
        if num_feat < 4 or num_feat % 4:
            raise ValueError(f"OmniSR: num_feat must be a positive multiple of 4 (4 attention heads), got {num_feat}")
        if min(num_in_ch, num_out_ch, block_num, window_size, res_num) < 1:
            raise ValueError("OmniSR: num_in_ch, num_out_ch, block_num, window_size, res_num must be >= 1, got "
                             f"{num_in_ch}, {num_out_ch}, {block_num}, {window_size}, {res_num}")
        self.num_in_ch, self.window_size = num_in_ch, window_size
        self.input = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=bias)  # first: the image channels are read from it
        self.residual_layer = nn.Sequential(*[OSAG(num_feat, bias, block_num, window_size, pe) for _ in range(res_num)])
        self.output = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=bias)
        self.up = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * scale * scale, 3, padding=1, bias=bias),
                                nn.PixelShuffle(scale))
        self.fused = fused

    #: the smallest LR side: ESA's strided conv and 7x7 max-pool need 15 pixels
    min_input_size = 15

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_in_ch:
            raise ValueError(f"OmniSR: expected input (N, {self.num_in_ch}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[2:]
        m = self.window_size
        ph, pw = -h % m, -w % m
        if min(h + ph, w + pw) < 15:
            raise DataError(f"OmniSR: input {h}x{w} is too small: padded to a multiple of the window ({m}) it must "
                            "be at least 15x15 (ESA's strided conv and 7x7 max-pool)")
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        feat = self.input(x)
        out = conv_add(self.residual_layer(feat), self.output, feat, self.fused)
        return self.up(out)[:, :, : h * self.scale, : w * self.scale]

    def extra_repr(self) -> str:
        return f"scale={self.scale}, window_size={self.window_size}, fused={self.fused}"
