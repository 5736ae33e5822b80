"""Shared machinery of the Swin-Transformer SR models (SwinIR, Swin2SR, HAT, DAT).

Window attention as in "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows" (Liu et al. 2021, sec. 3.2): the feature map is cut into non-overlapping windows,
self-attention runs inside each window with a learned relative position bias (eq. 4), and
every second block shifts the map by half a window (cyclic ``torch.roll``) so that windows
straddle the previous partition; the attention mask keeps tokens that the roll brought
together from different image regions from attending to each other (-100 before the
softmax, as the reference code does).

:class:`SwinSRBase` holds what the four families share around their transformer body,
with the reference implementations' parameter names so that their checkpoints load and
the state dict loads back: the mean shift and ``img_range``, the reflect padding of the
input to a multiple of the window (cropped from the output), ``conv_first``, the
``1conv`` / ``3conv`` ``conv_after_body`` and the reconstruction tails ``pixelshuffle``
(classical SR), ``pixelshuffledirect`` (lightweight SR), ``nearest+conv`` (real-world SR)
and ``""`` (same-size restoration: denoising, JPEG artefacts).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.errors import UserError
from fastsr.models._utils import FusedModule
from fastsr.nn.conv import conv_act, conv_residual

__all__ = [
    "traced", "pad_to_multiple", "window_partition", "window_reverse", "relative_position_index",
    "shifted_window_mask", "window_attention", "to_tokens", "to_image", "Mlp", "WindowAttention",
    "ShiftedWindows", "SwinSRBase", "residual_conv", "UPSAMPLERS", "DIV2K_RGB_MEAN", "layer_spec",
]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
#: Reconstruction tails: classical SR, lightweight SR, real-world SR, same-size restoration.
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")
#: Value added to the logits of token pairs from different regions of a shifted window.
MASK_VALUE = -100.0


def traced(*sizes) -> bool:
    """True while torch.compile / torch.export traces (symbolic sizes): the masks are then
    computed in the graph, without the size-keyed caches and branches of eager mode."""
    return torch.compiler.is_compiling() or any(isinstance(v, torch.SymInt) for v in sizes)


def pad_to_multiple(x: torch.Tensor, multiple: int | tuple[int, int]) -> torch.Tensor:
    """Reflect-pad (N, C, H, W) at the bottom and right to multiples of ``multiple`` (an int
    or ``(mh, mw)``), as the reference ``check_image_size`` does. Pads wider than the image
    (which one reflect cannot give) continue the reflection (the triangle wave of period
    2(n-1)); a side of 1 pixel is replicated."""
    mh, mw = _pair(multiple)
    h, w = x.shape[-2:]
    # written as multiple * ceil(n / multiple) so that a symbolic size stays divisible
    hp, wp = mh * ((h + mh - 1) // mh), mw * ((w + mw - 1) // mw)
    if traced(h, w):
        return x.index_select(2, _reflect_index(h, hp, x.device)).index_select(3, _reflect_index(w, wp, x.device))
    if (hp, wp) == (h, w):
        return x
    if hp - h < h and wp - w < w:
        return F.pad(x, (0, wp - w, 0, hp - h), mode="reflect")
    return x[:, :, _reflect_index(h, hp, x.device)][..., _reflect_index(w, wp, x.device)]


def _reflect_index(n, total, device) -> torch.Tensor:
    """Source rows of ``n`` rows reflect-padded to ``total``, the reflection repeated as
    needed."""
    period = torch.sym_max(2 * n - 2, 1)
    r = torch.arange(total, device=device) % period
    return torch.where(r < n, r, period - r)


def window_partition(x: torch.Tensor, wh: int, ww: int | None = None) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/wh * W/ww, wh * ww, C): the windows in row-major order of the
    window grid, tokens row-major inside a window."""
    ww = wh if ww is None else ww
    b, h, w, c = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, wh: int, ww: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, wh * ww, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(wh: int, ww: int | None = None) -> torch.Tensor:
    """(wh*ww, wh*ww) int64: for tokens i, j of a window, the row of the
    ``(2wh-1)(2ww-1)``-row bias table that holds their offset (Swin, eq. 4)."""
    ww = wh if ww is None else ww
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


def shifted_window_mask(h: int, w: int, window, shift, device=None) -> torch.Tensor:
    """(nW, wh*ww, wh*ww) float32 mask of a map of H x W tokens rolled by ``-shift``, cut
    into ``window`` windows (ints, or ``(wh, ww)`` / ``(sh, sw)`` for rectangles): 0 where
    both tokens come from the same region of the unrolled map, -100 elsewhere. The regions
    are the reference's slices [0, H-wh), [H-wh, H-sh), [H-sh, H) of the rows and columns
    (a zero shift leaves one region, as the reference's slice(-0, None) does)."""
    (wh, ww), (sh, sw) = _pair(window), _pair(shift)

    def regions(n, win, sft):
        i = torch.arange(n, device=device)
        if sft == 0:
            return torch.zeros_like(i)
        return (i >= n - win).long() + (i >= n - sft).long()

    region = (regions(h, wh, sh)[:, None] * 3 + regions(w, ww, sw)[None, :]).float()
    win = window_partition(region[None, :, :, None], wh, ww).squeeze(-1)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, MASK_VALUE, 0.0)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """softmax(scale * q kᵀ + bias + mask) v over the windows of a batch.

    Args:
        q, k, v: (B * nW, heads, N, head_dim).
        bias: (heads, N, N) relative position bias.
        mask: (nW, N, N) shifted-window mask or None.
        scale: logit scale (head_dim^-0.5 in Swin v1, 1 for cosine attention).

    Returns:
        (B * nW, N, heads * head_dim).
    """
    bn, heads, n, _ = q.shape
    attn_mask = bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn_mask = (attn_mask + mask.unsqueeze(1)).unsqueeze(0).expand(bn // nw, -1, -1, -1, -1)
        attn_mask = attn_mask.reshape(bn, heads, n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype), scale=scale)
    return out.transpose(1, 2).reshape(bn, n, -1)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def to_image(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on tokens (B, L, C) -> (B, L, C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias (Swin v1,
    eq. 4): ``relative_position_bias_table`` ((2w-1)², heads), ``qkv``, ``proj``.

    Args:
        dim: channels; heads: attention heads (``dim`` divisible by it); window: window side.
        own_index: register the ``relative_position_index`` buffer here (SwinIR); HAT keeps
            one index for all blocks and passes it to :meth:`forward`.

    Shape: (B * nW, window², dim) -> same.
    """

    def __init__(self, dim: int, heads: int, window: int, own_index: bool = True):
        super().__init__()
        self.heads, self.window, self.scale = heads, window, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        if own_index:
            self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        index = self.relative_position_index if index is None else index
        bias = self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(window_attention(q, k, v, bias, mask, self.scale))


class ShiftedWindows(nn.Module):
    """Base of a (shifted-)window transformer block: the window / shift bookkeeping, the
    ``attn_mask`` buffer of the training resolution (the reference blocks store it, so
    their checkpoints hold it) and :meth:`windowed`.

    As in the reference, a training resolution no larger than the window shrinks the window
    to it and disables the shift.
    """

    def _init_windows(self, window: int, shift: int, resolution: Sequence[int] | None,
                      store_mask: bool = True) -> int:
        """Set up the windows; ``resolution`` is the training size (None: not known, no
        shrinking); ``store_mask=False`` when the model passes the mask (HAT)."""
        if resolution is not None and min(resolution) <= window:
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.resolution = tuple(resolution) if resolution is not None else ()
        if store_mask:
            self.register_buffer("attn_mask", shifted_window_mask(*self.resolution, window, shift) if shift else None)
        else:
            self.attn_mask = None
        self._mask_cache: tuple = ()
        return window

    def mask_for(self, size: tuple[int, int], device) -> torch.Tensor | None:
        """The shifted-window mask of an H x W token map (None for unshifted blocks)."""
        if not self.shift:
            return None
        if traced(*size):
            return shifted_window_mask(*size, self.window, self.shift, device)
        if tuple(size) == self.resolution:
            return self.attn_mask
        if not self._mask_cache or self._mask_cache[0] != (tuple(size), device):
            self._mask_cache = ((tuple(size), device), shifted_window_mask(*size, self.window, self.shift, device))
        return self._mask_cache[1]

    def windowed(self, x: torch.Tensor, size: tuple[int, int], attn, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Roll by -shift, partition, ``attn(windows, mask)``, merge, roll back: tokens
        (B, H*W, C) -> (B, H*W, C). ``mask`` defaults to :meth:`mask_for`."""
        h, w = size
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        if mask is None:
            mask = self.mask_for(size, x.device)
        out = window_reverse(attn(window_partition(x, self.window), mask), self.window, self.window, h, w)
        if self.shift:
            out = torch.roll(out, (self.shift, self.shift), (1, 2))
        return out.reshape(b, h * w, c)


class SwinSRBase(FusedModule):
    """The frame shared by SwinIR, Swin2SR, HAT and DAT around their transformer body.

    Subclasses call :meth:`_build_frame` and implement ``forward_features`` ((B, C, H, W)
    -> (B, C, H, W) at the padded size). ``forward`` maps LR (N, C, H, W) in [0, 1] to
    (N, C, scale*H, scale*W) in about [0, 1] (unclamped); any H, W >= 1 (reflect-padded to
    a multiple of ``pad_multiple`` and cropped back).

    Raises (forward):
        ValueError: not a 4-D tensor with ``in_chans`` channels.
        UserError (a ValueError): traced by ``torch.export`` with a symbolic height or width
            (``fastsr export``'s dynamic-size ONNX); a fixed-size export works.
    """

    def _build_frame(self, name: str, in_chans: int, embed_dim: int, upscale: int, upsampler: str,
                     img_range: float, resi_connection: str, num_feat: int, pad_multiple,
                     upsamplers: Sequence[str] = UPSAMPLERS,
                     resi_connections: Sequence[str] = ("1conv", "3conv")) -> None:
        if upsampler not in upsamplers:
            raise ValueError(f"{name}: upsampler must be one of {tuple(upsamplers)}, got {upsampler!r}")
        tail = "pixelshuffle" if upsampler == "pixelshuffle_aux" else upsampler
        if resi_connection not in resi_connections:
            raise ValueError(f"{name}: resi_connection must be one of {tuple(resi_connections)}, got {resi_connection!r}")
        if tail == "":
            upscale = 1
        if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
            raise ValueError(f"{name}: scale must be a positive int, got {upscale!r}")
        if tail == "nearest+conv" and upscale not in (2, 4, 8):
            raise ValueError(f"{name}: the nearest+conv tail upscales by 2, 4 or 8, got scale={upscale!r}")
        if tail == "pixelshuffle" and not (upscale == 3 or (upscale >= 2 and upscale & (upscale - 1) == 0)):
            raise ValueError(f"{name}: the pixelshuffle tail upscales by 2^n or 3, got scale={upscale!r}")
        self.name, self.in_chans, self.scale, self.upscale = name, in_chans, upscale, upscale
        self.upsampler, self.img_range, self.pad_multiple = upsampler, float(img_range), pad_multiple
        mean = DIV2K_RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)
        if tail in ("pixelshuffle", "nearest+conv"):
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        if tail == "pixelshuffle":
            stages = [3] if upscale == 3 else [2] * int(math.log2(upscale))
            self.upsample = nn.Sequential(*[m for r in stages for m in (nn.Conv2d(num_feat, r * r * num_feat, 3, 1, 1),
                                                                         nn.PixelShuffle(r))])
        elif tail == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, upscale * upscale * in_chans, 3, 1, 1),
                                          nn.PixelShuffle(upscale))
        elif tail == "nearest+conv":
            for i in range(int(math.log2(upscale))):
                setattr(self, f"conv_up{i + 1}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        if tail != "pixelshuffledirect":
            self.conv_last = nn.Conv2d(num_feat if tail else embed_dim, in_chans, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{self.name}: expected input of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if torch.compiler.is_exporting() and any(isinstance(v, torch.SymInt) for v in (h, w)):
            raise UserError(f"{self.name}: export with a dynamic height / width is not supported (the window "
                            "partition's size arithmetic defeats torch.export's shape solver); run the model in "
                            "PyTorch or export at a fixed size")
        x = pad_to_multiple(x, self.pad_multiple)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        first = self.conv_first(x)
        feat = self._after_body(self.forward_features(first), first)
        x = self._tail(feat, x, (h, w))
        return (x / self.img_range + mean)[:, :, : h * self.upscale, : w * self.upscale]

    def _after_body(self, body: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        conv = self.conv_after_body
        if isinstance(conv, nn.Conv2d):
            return conv_residual(body, conv, first, 1.0, self.fused)
        return conv(body) + first

    def _tail(self, feat: torch.Tensor, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The reconstruction from the body's features ``feat``; ``x`` is the normalised,
        padded input and ``size`` the unpadded LR size."""
        if self.upsampler == "pixelshuffledirect":
            return self.upsample(feat)
        if self.upsampler == "":
            return conv_residual(feat, self.conv_last, x, 1.0, self.fused)
        feat = conv_act(feat, self.conv_before_upsample[0], "leaky_relu", 0.01, self.fused)
        if self.upsampler == "pixelshuffle":
            return self.conv_last(self.upsample(feat))
        for i in range(int(math.log2(self.upscale))):
            up = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = conv_act(up, getattr(self, f"conv_up{i + 1}"), "leaky_relu", 0.2, self.fused)
        return self.conv_last(conv_act(feat, self.conv_hr, "leaky_relu", 0.2, self.fused))


def residual_conv(dim: int, kind: str) -> nn.Module:
    """The conv before a residual connection: one 3x3 (``1conv``), none (``identity``, HAT)
    or the bottleneck 3x3 C->C/4, LReLU(0.2), 1x1, LReLU(0.2), 3x3 C/4->C (``3conv``,
    SwinIR's real-world large model)."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "identity":
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(dim // 4, dim, 3, 1, 1))


def layer_spec(name: str, depths: Sequence[int], num_heads: Sequence[int], embed_dim: int) -> None:
    """Check ``depths`` / ``num_heads`` (one entry per residual group, heads dividing
    ``embed_dim``).

    Raises:
        ValueError: lengths differ, non-positive entries, heads not dividing embed_dim.
    """
    depths, num_heads = list(depths), list(num_heads)
    if not depths or len(depths) != len(num_heads):
        raise ValueError(f"{name}: depths and num_heads need one entry per layer, got {depths} and {num_heads}")
    if any(int(d) < 1 for d in depths) or any(int(h) < 1 or embed_dim % int(h) for h in num_heads):
        raise ValueError(f"{name}: depths must be >= 1 and every num_heads must divide embed_dim={embed_dim}, "
                         f"got depths={depths}, num_heads={num_heads}")
