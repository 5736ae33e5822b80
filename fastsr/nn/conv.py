"""The "conv + fused epilogue" building block of the models.

A convolution followed by its bias and an element-wise epilogue is, on the fused path,
the convolution **without** bias (oneDNN on CPU, cuDNN on GPU) and one fused kernel that
adds the bias and applies the epilogue (:func:`fastsr.ops.bias_prelu`,
:func:`fastsr.ops.bias_residual`); on the unfused path it is the plain modules. Both paths
read the parameters of the same ``nn.Conv2d`` / ``nn.PReLU`` modules, which stay where the
model put them, so the state_dict does not depend on ``fused``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.ops import bias_prelu, bias_residual

__all__ = ["conv_prelu", "conv_residual"]


def _conv_without_bias(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    if conv.padding_mode != "zeros":
        raise ValueError(f"conv epilogue: conv must use zero padding, got padding_mode={conv.padding_mode!r}")
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_prelu(x: torch.Tensor, conv: nn.Conv2d, prelu: nn.PReLU, fused: bool = True) -> torch.Tensor:
    """``PReLU(conv(x))``, with the bias + PReLU as one :func:`fastsr.ops.bias_prelu` when
    ``fused``.

    Args:
        x: (N, C_in, H, W) float tensor, contiguous or channels_last.
        conv: the convolution (its ``bias`` may be None; zero padding).
        prelu: ``nn.PReLU`` with 1 or C_out slopes.
        fused: use the fused epilogue (same values up to float rounding).

    Returns:
        (N, C_out, H', W'), the dtype and memory format of the convolution's output.

    Raises:
        ValueError: ``conv`` pads with other than zeros; the op's input checks.
    """
    if not fused:
        return prelu(conv(x))
    return bias_prelu(_conv_without_bias(x, conv), conv.bias, prelu.weight)


def conv_residual(x: torch.Tensor, conv: nn.Conv2d, residual: torch.Tensor, scale: float = 1.0,
                  fused: bool = True) -> torch.Tensor:
    """``residual + scale * conv(x)``, with the bias + scaled residual add as one
    :func:`fastsr.ops.bias_residual` when ``fused``.

    Args:
        x: (N, C_in, H, W) float tensor.
        conv: the convolution (zero padding).
        residual: (N, C_out, H', W'), the shape of ``conv(x)``; under autocast it is cast to
            the convolution's output dtype.
        scale: finite residual scaling (1.0, or e.g. 0.1 in EDSR, 0.2 in ESRGAN).
        fused: use the fused epilogue.

    Returns:
        (N, C_out, H', W') in the dtype of the convolution's output.

    Raises:
        ValueError: shapes differ, ``scale`` not finite, ``conv`` pads with other than zeros.
    """
    if not fused:
        return residual + scale * conv(x)
    t = _conv_without_bias(x, conv)
    if residual.dtype != t.dtype:  # autocast: the conv output is bf16
        residual = residual.to(t.dtype)
    return bias_residual(t, conv.bias, residual, scale)
