"""PLKSR and RealPLKSR, the partial large kernel CNNs (Lee et al. 2024, "PLKSR: Partial Large
Kernel CNNs for Efficient Super-Resolution"), key for key the released ``PLKSR`` and the
community ``RealPLKSR`` (neosr / traiNNer), optionally with the DySample upsampler (Liu et
al. 2023, "Learning to Upsample by Learning to Sample"), so their checkpoints load and save
unchanged.

Both are ``feats``: conv3x3 3 -> dim, ``n_blocks`` PLK blocks, (RealPLKSR: a Dropout2d),
conv3x3 dim -> 3*s^2; plus the input repeated s^2 times per channel; then PixelShuffle(s)
(or DySample). A PLK block is: channel mixer (two convs and GELU / Mish), a large-kernel
conv on the first ``int(dim * split_ratio)`` channels only (the partial large kernel), an
element-wise attention ``x * sigmoid(conv3x3(x))``, a 1x1 refine conv and the skip.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule
from fastsr.models.registry import register_model
from fastsr.nn.conv import conv_residual

__all__ = ["PLKSR", "RealPLKSR", "DySample", "CCM_TYPES", "LK_TYPES"]

#: channel mixer kernel sizes (first conv, second conv) of PLKSR's ``ccm_type``
CCM_TYPES = {"CCM": (3, 1), "ICCM": (1, 3), "DCCM": (3, 3)}
#: PLKSR's large-kernel layers: one square conv, RepLKNet-style sparse (dilated) kernels,
#: SLaK-style rectangular kernels
LK_TYPES = ("PLK", "SparsePLK", "RectSparsePLK")


def _mixer(dim: int, ccm_type: str, act: nn.Module) -> nn.Sequential:
    k1, k2 = CCM_TYPES[ccm_type]
    return nn.Sequential(nn.Conv2d(dim, dim * 2, k1, 1, k1 // 2), act, nn.Conv2d(dim * 2, dim, k2, 1, k2 // 2))


def _on_first_channels(x: torch.Tensor, pdim: int, fn) -> torch.Tensor:
    """``cat(fn(x[:, :pdim]), x[:, pdim:])``; in place (no copy of the untouched channels)
    when no gradient is recorded, as upstream's eval path."""
    if not torch.is_grad_enabled():
        x[:, :pdim] = fn(x[:, :pdim])
        return x
    return torch.cat([fn(x[:, :pdim]), x[:, pdim:]], 1)


class PartialLargeKernel(nn.Module):
    """The partial large-kernel layer: ``lk_type`` convs on the first ``pdim`` channels.

    ``"PLK"``: one ``kernel_size`` conv (key ``conv``), plus its input with ``with_idt``;
    ``"SparsePLK"``: a sum of dilated convs (``convs.N``, kernels ``sparse_kernels`` with
    ``sparse_dilations``, a ``kernel_size`` one more with ``use_max_kernel``, the input with
    ``with_idt``); ``"RectSparsePLK"``: ``m x m/3 + m/3 x m + m/3 x m/3`` convs (``mn_conv``,
    ``nm_conv``, ``nn_conv``).
    """

    def __init__(self, pdim: int, kernel_size: int, lk_type: str = "PLK", with_idt: bool = False,
                 sparse_kernels: Sequence[int] = (5, 5, 5, 5), sparse_dilations: Sequence[int] = (1, 2, 3, 4),
                 use_max_kernel: bool = False):
        super().__init__()
        self.pdim, self.lk_type, self.with_idt = pdim, lk_type, with_idt
        k = kernel_size
        if lk_type == "PLK":
            self.conv = nn.Conv2d(pdim, pdim, k, 1, k // 2)
        elif lk_type == "SparsePLK":
            convs = [nn.Conv2d(pdim, pdim, s, 1, (s // 2) * d, dilation=d)
                     for s, d in zip(sparse_kernels, sparse_dilations)]
            if use_max_kernel:
                k = max([k] + [(s - 1) * d + 1 for s, d in zip(sparse_kernels, sparse_dilations)])
                convs.append(nn.Conv2d(pdim, pdim, k, 1, k // 2))
            self.convs = nn.ModuleList(convs)
        else:
            n = k // 3
            self.mn_conv = nn.Conv2d(pdim, pdim, (k, n), 1, (k // 2, n // 2))
            self.nm_conv = nn.Conv2d(pdim, pdim, (n, k), 1, (n // 2, k // 2))
            self.nn_conv = nn.Conv2d(pdim, pdim, (n, n), 1, (n // 2, n // 2))

    def _large_kernel(self, x1: torch.Tensor) -> torch.Tensor:
        if self.lk_type == "PLK":
            return self.conv(x1) + x1 if self.with_idt else self.conv(x1)
        if self.lk_type == "SparsePLK":
            out = x1 if self.with_idt else 0.0
            for conv in self.convs:
                out = out + conv(x1)
            return out
        return self.mn_conv(x1) + self.nm_conv(x1) + self.nn_conv(x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _on_first_channels(x, self.pdim, self._large_kernel)


class ElementwiseAttention(nn.Module):
    """``x * sigmoid(conv3x3(x))`` (key ``f.0``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.f[0](x))


class PLKBlock(nn.Module):
    """PLKSR's block: ``x + refine(EA(LK(mixer(x))))``; with ``fused`` the 1x1 refine's bias
    and the skip are one :func:`fastsr.ops.bias_residual` epilogue. Keys ``channe_mixer``
    (sic, as released), ``lk``, ``attn.f.0``, ``refine``."""

    def __init__(self, dim: int, ccm_type: str, kernel_size: int, pdim: int, lk_options: dict, use_ea: bool,
                 fused: bool = True):
        super().__init__()
        self.fused = fused
        self.channe_mixer = _mixer(dim, ccm_type, nn.GELU())
        self.lk = PartialLargeKernel(pdim, kernel_size, **lk_options)
        self.attn = ElementwiseAttention(dim) if use_ea else nn.Identity()
        self.refine = nn.Conv2d(dim, dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_residual(self.attn(self.lk(self.channe_mixer(x))), self.refine, x, 1.0, self.fused)


def _check(name: str, scale, dim: int, n_blocks: int, kernel_size: int, split_ratio: float) -> int:
    """The partial channel count ``round(dim * split_ratio)``, after the shared argument checks."""
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 8:
        raise ValueError(f"{name}: scale must be an int in 1..8, got {scale!r}")
    if dim < 1 or n_blocks < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{name}: dim and n_blocks must be >= 1 and kernel_size odd, got {dim}, {n_blocks}, "
                         f"{kernel_size}")
    pdim = round(dim * split_ratio)
    if not 1 <= pdim <= dim:
        raise ValueError(f"{name}: split_ratio must give 1..dim large-kernel channels, got {split_ratio!r}")
    return pdim


def _head_tail(model: nn.Module, x: torch.Tensor, last: nn.Conv2d, feat: torch.Tensor) -> torch.Tensor:
    """``last(feat) + x`` repeated scale^2 times per channel (the nearest-upsampling skip after
    PixelShuffle), as the last conv's fused residual epilogue."""
    skip = x.repeat_interleave(model.scale * model.scale, dim=1)
    return conv_residual(feat, last, skip.to(feat.dtype), 1.0, model.fused)


@register_model()
class PLKSR(FusedModule):
    """PLKSR (Lee et al. 2024, "PLKSR: Partial Large Kernel CNNs for Efficient
    Super-Resolution", Fig. 2), layer for layer the released ``PLKSR``.

    Args:
        scale: upscaling factor s, 1 to 8.
        dim: feature channels (64; 64 / 28 blocks is PLKSR, 64 / 12 PLKSR-tiny).
        n_blocks: PLK blocks (28).
        ccm_type: channel mixer, ``"CCM"`` (3x3, 1x1), ``"ICCM"`` (1x1, 3x3) or ``"DCCM"``
            (3x3, 3x3), GELU between.
        kernel_size: the large kernel (17).
        split_ratio: share of channels the large kernel sees (0.25).
        lk_type, with_idt, sparse_kernels, sparse_dilations, use_max_kernel: the
            large-kernel layer, see :class:`PartialLargeKernel` (the paper's ablations).
        use_ea: element-wise attention (True).
        fused: each block's refine + skip and the last conv + input skip as fused
            :func:`fastsr.ops.bias_residual` epilogues; the state_dict is identical either way.

    Shape:
        LR (N, 3, H, W) in [0, 1] -> SR (N, 3, s*H, s*W) in about [0, 1].

    Raises:
        ValueError: bad ``scale``, ``ccm_type``, ``lk_type``, sizes or ``split_ratio``.
    """

    def __init__(self, scale: int = 4, dim: int = 64, n_blocks: int = 28, ccm_type: str = "CCM",
                 kernel_size: int = 17, split_ratio: float = 0.25, lk_type: str = "PLK", with_idt: bool = False,
                 sparse_kernels: Sequence[int] = (5, 5, 5, 5), sparse_dilations: Sequence[int] = (1, 2, 3, 4),
                 use_max_kernel: bool = False, use_ea: bool = True, fused: bool = True):
        super().__init__()
        pdim = _check("PLKSR", scale, dim, n_blocks, kernel_size, split_ratio)
        if ccm_type not in CCM_TYPES or lk_type not in LK_TYPES:
            raise ValueError(f"PLKSR: ccm_type must be one of {tuple(CCM_TYPES)} and lk_type one of {LK_TYPES}, "
                             f"got {ccm_type!r}, {lk_type!r}")
        self.scale = scale
        lk = dict(lk_type=lk_type, with_idt=with_idt, sparse_kernels=tuple(sparse_kernels),
                  sparse_dilations=tuple(sparse_dilations), use_max_kernel=use_max_kernel)
        blocks = [PLKBlock(dim, ccm_type, kernel_size, pdim, lk, use_ea, fused) for _ in range(n_blocks)]
        self.feats = nn.Sequential(nn.Conv2d(3, dim, 3, 1, 1), *blocks, nn.Conv2d(dim, 3 * scale * scale, 3, 1, 1))
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = x
        for layer in list(self.feats)[:-1]:
            feat = layer(feat)
        return F.pixel_shuffle(_head_tail(self, x, self.feats[-1], feat), self.scale)


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of an (N, C, H, W) tensor, eps 1e-6 (keys ``weight``,
    ``bias``); with ``fused`` one ``F.layer_norm`` on the channels-last view."""

    def __init__(self, dim: int, eps: float = 1e-6, fused: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps, self.fused = eps, fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]


class RealPLKBlock(nn.Module):
    """RealPLKSR's block: ``x + norm(refine(EA(LK(DCCM(layer_norm(x))))))``, DCCM with Mish;
    ``norm`` is GroupNorm(``norm_groups``) unless the layer-norm variant (then the refine + skip
    is the fused :func:`fastsr.ops.bias_residual` epilogue). Keys ``layer_norm``,
    ``channel_mixer``, ``lk.conv``, ``attn.f.0``, ``refine``, ``norm``."""

    def __init__(self, dim: int, kernel_size: int, pdim: int, use_ea: bool, norm_groups: int, layer_norm: bool,
                 fused: bool = True):
        super().__init__()
        self.fused = fused
        self.layer_norm = ChannelLayerNorm(dim, fused=fused) if layer_norm else nn.Identity()
        self.channel_mixer = _mixer(dim, "DCCM", nn.Mish())
        self.lk = PartialLargeKernel(pdim, kernel_size)
        self.attn = ElementwiseAttention(dim) if use_ea else nn.Identity()
        self.refine = nn.Conv2d(dim, dim, 1, 1, 0)
        self.norm = nn.Identity() if layer_norm else nn.GroupNorm(norm_groups, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.lk(self.channel_mixer(self.layer_norm(x))))
        if isinstance(self.norm, nn.Identity):
            return conv_residual(y, self.refine, x, 1.0, self.fused)
        return self.norm(self.refine(y)) + x


class DySample(nn.Module):
    """DySample (Liu et al. 2023, "Learning to Upsample by Learning to Sample", the
    "LP" static-scope-free variant with a dynamic scope): per output pixel a learned offset
    from the bilinear sampling point, ``offset(x) * sigmoid(scope(x)) * 0.5 + init_pos``,
    then ``grid_sample`` (bilinear, border padding) per channel group, then a 1x1 ``end_conv``
    to the output channels (when ``end_convolution``). Keys ``offset``, ``scope``,
    ``end_conv``, ``init_pos`` (a buffer), as RealPLKSR's.

    The sampling grid and ``grid_sample`` run in float32 for bfloat16 / float16 inputs (the
    result is cast back): half-precision coordinates are off by whole pixels on large images.

    Shape:
        (N, in_channels, H, W) -> (N, out_channels, scale*H, scale*W) (``in_channels`` without
        ``end_convolution``), the input's dtype.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, groups: int = 4,
                 end_convolution: bool = True):
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"DySample: in_channels ({in_channels}) must be a multiple of groups ({groups})")
        self.scale, self.groups = scale, groups
        self.end_conv = nn.Conv2d(in_channels, out_channels, 1) if end_convolution else None
        self.offset = nn.Conv2d(in_channels, 2 * groups * scale * scale, 1)
        self.scope = nn.Conv2d(in_channels, 2 * groups * scale * scale, 1, bias=False)
        # sub-pixel starting points: (s positions in x, s in y) / s, centred, for each group
        h = (torch.arange(scale, dtype=torch.float32) - (scale - 1) / 2) / scale
        pos = torch.stack(torch.meshgrid(h, h, indexing="ij")).transpose(1, 2)  # (2, s, s): x, y
        self.register_buffer("init_pos", pos.repeat(1, groups, 1).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s, g = self.scale, self.groups
        offset = self.offset(x) * torch.sigmoid(self.scope(x)) * 0.5 + self.init_pos.to(x.dtype)
        # sampling positions in float32 at least: bf16 / fp16 cannot hold pixel coordinates
        # beyond 256 / 2048 exactly, and a rounded grid samples the wrong pixels
        dt = torch.promote_types(x.dtype, torch.float32)
        ys = torch.arange(h, dtype=dt, device=x.device) + 0.5
        xs = torch.arange(w, dtype=dt, device=x.device) + 0.5
        base = torch.stack((xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)))  # (2, H, W): x, y
        size = torch.tensor([w, h], dtype=dt, device=x.device).view(1, 2, 1, 1, 1)
        grid = 2 * (base.view(1, 2, 1, h, w) + offset.to(dt).view(n, 2, -1, h, w)) / size - 1
        grid = F.pixel_shuffle(grid.reshape(n, -1, h, w), s).view(n, 2, g, s * h, s * w)
        grid = grid.permute(0, 2, 3, 4, 1).reshape(n * g, s * h, s * w, 2)
        out = F.grid_sample(x.reshape(n * g, c // g, h, w).to(dt), grid, mode="bilinear", align_corners=False,
                            padding_mode="border").view(n, c, s * h, s * w).to(x.dtype)
        return self.end_conv(out) if self.end_conv is not None else out


@register_model()
class RealPLKSR(FusedModule):
    """RealPLKSR, the community real-world variant of PLKSR (neosr / traiNNer): DCCM mixers
    with Mish, GroupNorm after each block's refine conv (or a channel layer norm before the
    block with ``layer_norm``), a Dropout2d before the last conv (training only), and
    PixelShuffle or :class:`DySample` as the upsampler. Layer for layer spandrel's / neosr's
    ``realplksr``.

    Args:
        scale: upscaling factor s, 1 to 8.
        dim: feature channels (64).
        n_blocks: blocks (28).
        kernel_size: the large kernel (17).
        split_ratio: share of channels the large kernel sees (0.25).
        use_ea: element-wise attention (True).
        norm_groups: GroupNorm groups (4).
        dropout: Dropout2d probability in training (0).
        dysample: DySample upsampler instead of PixelShuffle.
        layer_norm: the layer-norm variant (no GroupNorm).
        fused: refine + skip (layer-norm variant) and the last conv + input skip as fused
            :func:`fastsr.ops.bias_residual` epilogues, the layer norm as one
            ``F.layer_norm``; the state_dict is identical either way.

    Shape:
        LR (N, 3, H, W) in [0, 1] -> SR (N, 3, s*H, s*W) in about [0, 1].

    Raises:
        ValueError: bad ``scale``, sizes, ``split_ratio``, or ``dim`` not a multiple of
            ``norm_groups``.
    """

    def __init__(self, scale: int = 4, dim: int = 64, n_blocks: int = 28, kernel_size: int = 17,
                 split_ratio: float = 0.25, use_ea: bool = True, norm_groups: int = 4, dropout: float = 0.0,
                 dysample: bool = False, layer_norm: bool = False, fused: bool = True):
        super().__init__()
        pdim = _check("RealPLKSR", scale, dim, n_blocks, kernel_size, split_ratio)
        if not layer_norm and (norm_groups < 1 or dim % norm_groups):
            raise ValueError(f"RealPLKSR: dim ({dim}) must be a multiple of norm_groups ({norm_groups})")
        self.scale = scale
        blocks = [RealPLKBlock(dim, kernel_size, pdim, use_ea, norm_groups, layer_norm, fused) for _ in range(n_blocks)]
        self.feats = nn.Sequential(nn.Conv2d(3, dim, 3, 1, 1), *blocks, nn.Dropout2d(dropout),
                                   nn.Conv2d(dim, 3 * scale * scale, 3, 1, 1))
        if dysample:
            self.to_img = DySample(3 * scale * scale, 3, scale, groups=3 if scale % 2 else 4,
                                   end_convolution=scale != 1)
        else:
            self.to_img = nn.PixelShuffle(scale)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = x
        for layer in list(self.feats)[:-1]:
            feat = layer(feat)
        return self.to_img(_head_tail(self, x, self.feats[-1], feat))
