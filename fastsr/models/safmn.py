"""SAFMN (Sun et al., ICCV 2023, "Spatially-Adaptive Feature Modulation for Efficient Image
Super-Resolution"), key for key the authors' ``SAFMN`` class (as spandrel 0.4.2 ships it) so
released ``.pth`` files load unchanged and fastsr's state_dict loads back into it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.errors import DataError
from fastsr.models._layers import LayerNorm2d, conv_add
from fastsr.models._utils import FusedModule, check_scale
from fastsr.models.registry import register_model

__all__ = ["SAFMN"]

#: SAFM's pyramid levels: the channels split in 4 chunks, chunk i works at 1 / 2^i resolution
N_LEVELS = 4


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation: the channels in 4 chunks, chunk i max-pooled to
    1/2^i of the size (i > 0), a depth-wise conv3x3, nearest-upsampled back; conv1x1
    aggregation; ``GELU(aggr) * x``."""

    def __init__(self, dim: int):
        super().__init__()
        chunk = dim // N_LEVELS
        self.mfr = nn.ModuleList([nn.Conv2d(chunk, chunk, 3, 1, 1, groups=chunk) for _ in range(N_LEVELS)])
        self.aggr = nn.Conv2d(dim, dim, 1, 1, 0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = []
        for i, (xc, conv) in enumerate(zip(x.chunk(N_LEVELS, dim=1), self.mfr)):
            if i == 0:
                out.append(conv(xc))
                continue
            s = conv(F.adaptive_max_pool2d(xc, (h // 2**i, w // 2**i)))
            out.append(F.interpolate(s, size=(h, w), mode="nearest"))
        return self.act(self.aggr(torch.cat(out, dim=1))) * x


class CCM(nn.Module):
    """Convolutional channel mixer: conv3x3 C -> hidden, GELU, conv1x1 hidden -> C
    (``ccm.0``, ``ccm.2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class AttBlock(nn.Module):
    """x + SAFM(LayerNorm(x)), then x + CCM(LayerNorm(x)); the second add is the fused
    bias + residual epilogue of CCM's last conv when ``fused``."""

    def __init__(self, dim: int, hidden: int, fused: bool = True):
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.norm2 = LayerNorm2d(dim)
        self.safm = SAFM(dim)
        self.ccm = CCM(dim, hidden)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(self.norm1(x)) + x
        conv3, act, conv1 = self.ccm.ccm
        return conv_add(act(conv3(self.norm2(x))), conv1, x, self.fused)


@register_model()
@register_model("safmn")
class SAFMN(FusedModule):
    """SAFMN (Sun et al., ICCV 2023, "Spatially-Adaptive Feature Modulation for Efficient
    Image Super-Resolution"; released: 36 features, 8 blocks, ffn_scale 2: 227,820 /
    232,695 / 239,520 parameters at x2 / x3 / x4; SAFMN-L 128 features, 16 blocks: 5,600,816
    at x4).

    conv3x3 3 -> C, ``n_blocks`` :class:`AttBlock` (SAFM + CCM, each pre-norm residual) plus a
    long skip, conv3x3 C -> 3 s^2 and PixelShuffle(s). With ``fused=True`` each block's
    ``x + CCM(...)`` is CCM's last conv with the bias + residual as one
    :func:`fastsr.ops.bias_residual`; the state_dict is the same either way.

    Args:
        scale: upscaling factor s, 1 to 8 (upstream's ``upscaling_factor``).
        dim: features C, a positive multiple of 4 (SAFM's 4 chunks).
        n_blocks: attention blocks.
        ffn_scale: CCM's hidden width, ``int(C * ffn_scale)`` channels.
        fused: see above.

    Shape:
        LR (N, 3, H, W) with H, W >= 8 (the coarsest SAFM level pools by 8), float32 /
        bfloat16 (float16 on CUDA), in [0, 1] -> SR (N, 3, s*H, s*W) in about [0, 1].

    Raises:
        ValueError: ``scale`` not in 1..8, ``dim`` not a positive multiple of 4,
            ``n_blocks`` < 0, a hidden width < 1; in ``forward``, an input not (N, 3, H, W).
        fastsr.errors.DataError (a ValueError): in ``forward``, an input smaller than 8 x 8.
    """

    def __init__(self, scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0, fused: bool = True):
        super().__init__()
        self.scale = check_scale("SAFMN", scale, range(1, 9))
        if dim < N_LEVELS or dim % N_LEVELS:
            raise ValueError(f"SAFMN: dim must be a positive multiple of {N_LEVELS} (SAFM's chunks), got {dim}")
        hidden = int(dim * ffn_scale + 1e-6)  # int(dim * ffn_scale) upstream; exact for ratios read from files
        if n_blocks < 0 or hidden < 1:
            raise ValueError(f"SAFMN: n_blocks must be >= 0 and int(dim * ffn_scale) >= 1, got {n_blocks}, {hidden}")
        self.to_feat = nn.Conv2d(3, dim, 3, 1, 1)
        self.feats = nn.Sequential(*[AttBlock(dim, hidden) for _ in range(n_blocks)])
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        self.fused = fused

    #: the smallest LR side: SAFM pools by 2 ** (N_LEVELS - 1)
    min_input_size = 2 ** (N_LEVELS - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SAFMN: expected input (N, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[2:]) < 2 ** (N_LEVELS - 1):
            raise DataError(f"SAFMN: input {x.shape[2]}x{x.shape[3]} is too small: SAFM pools by "
                            f"{2 ** (N_LEVELS - 1)}, so H and W must be at least that")
        feat = self.to_feat(x)
        return self.to_img(self.feats(feat) + feat)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, fused={self.fused}"
