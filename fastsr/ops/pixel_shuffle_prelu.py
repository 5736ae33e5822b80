"""PixelShuffle followed by PReLU: the activation of the sub-pixel upsampling stage.

    y = PReLU(PixelShuffle(x, r); weight)

PixelShuffle is Shi et al. 2016 (ESPCN); the [conv, PixelShuffle(2), PReLU] stage is
SRGAN's upsampling block (Ledig et al. 2017) and the NonBN residual GAN's G4 layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastsr.ops import _common

_OP = "fastsr.ops.pixel_shuffle_prelu"


def pixel_shuffle_prelu_reference(x: torch.Tensor, weight: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    """Plain-PyTorch PixelShuffle(r) then PReLU, in float32 (float64 for float64 input),
    cast back to ``x.dtype``. Same arguments and errors as :func:`pixel_shuffle_prelu`."""
    _check(x, weight, upscale_factor, _OP)
    acc = _common.acc_dtype(x.dtype)
    return F.prelu(F.pixel_shuffle(x.to(acc), upscale_factor), weight.to(acc)).to(x.dtype)


def pixel_shuffle_prelu(
    x: torch.Tensor, weight: torch.Tensor, upscale_factor: int, *, impl: str = "auto"
) -> torch.Tensor:
    """``PReLU(PixelShuffle(x, upscale_factor))``.

    Args:
        x: (N, C*r*r, H, W) float tensor, r = ``upscale_factor``.
        weight: PReLU slopes, (C,) (per output channel) or (1,); dtype of ``x`` or float32.
        upscale_factor: r, an integer >= 1 (2, 3 and 4 in SR models).
        impl: ``"auto"`` or ``"reference"``.

    Returns:
        (N, C, H*r, W*r) tensor of ``x.dtype``.

    Raises:
        ValueError: ``x`` not 4-D, channels not divisible by r*r, ``weight`` of the wrong size.
        TypeError: unsupported dtype.
    """
    _common.use_reference(impl, x, _OP)  # validates impl
    # C++ and Triton kernels: not implemented yet; the reference serves every device.
    return pixel_shuffle_prelu_reference(x, weight, upscale_factor)


def _check(x, weight, upscale_factor, op):
    _common.check_activation(x, op)
    if not isinstance(upscale_factor, int) or isinstance(upscale_factor, bool) or upscale_factor < 1:
        raise ValueError(f"{op}: upscale_factor must be an integer >= 1, got {upscale_factor!r}")
    r2 = upscale_factor * upscale_factor
    if x.shape[1] % r2 != 0:
        raise ValueError(
            f"{op}: channels of x ({x.shape[1]}) must be divisible by upscale_factor**2 ({r2})"
        )
    _common.check_channel_param(weight, x, op, "weight", allow_shared=True, channels=x.shape[1] // r2)
