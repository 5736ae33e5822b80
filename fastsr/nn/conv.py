"""The convolution building blocks of the models: "conv + fused epilogue", and a Conv2d
that picks the faster algorithm for the small outputs at the end of the discriminators.

A convolution followed by its bias and an element-wise epilogue is, on the fused path,
the convolution **without** bias and one fused kernel that adds the bias and applies the
epilogue (:func:`fastsr.ops.bias_prelu`, :func:`fastsr.ops.bias_residual`); on the unfused
path it is the plain modules. The convolution is cuDNN's on GPU; on a CPU a 3x3 stride-1
convolution with channel counts multiples of 16 runs forward and both gradients by Winograd
(:func:`fastsr.ops.conv3x3_winograd`, :func:`use_winograd`; weight gradient in float32) where that kernel is the faster
algorithm, any other oneDNN's. Both paths
read the parameters of the same ``nn.Conv2d`` / ``nn.PReLU`` modules, which stay where the
model put them, so the state_dict does not depend on ``fused``.

:class:`Conv2d` is ``nn.Conv2d`` (same arguments, parameters and state_dict) whose CPU
forward computes a convolution with a tiny output and a long reduction -- the last layers
of the discriminators, e.g. the WGAN critic's 4x4 stride-2 Conv_D6 from 1024 x 3 x 3 to
2048 x 1 x 1 -- as im2col + one matrix multiply (:func:`conv2d`), where oneDNN's direct
convolution is several times slower (see :data:`GEMM_MAX_OUTPUT_AREA`).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from torch.nn.modules.utils import _pair

from fastsr.nn.packed import PackedConv2d
from fastsr.ops import bias_prelu, bias_residual
from fastsr.ops._common import output_format
from fastsr.ops.winograd import conv3x3_winograd, conv3x3_winograd_supported, winograd_eligible

__all__ = ["Conv2d", "conv2d", "conv_act", "conv_prelu", "conv_residual", "use_winograd", "GEMM_MAX_OUTPUT_AREA",
           "GEMM_MIN_REDUCTION"]

#: :func:`conv2d` runs a CPU convolution as im2col + one GEMM when its output has at most
#: this many pixels per channel (H_out * W_out) and its reduction ``C_in * kh * kw`` is at
#: least :data:`GEMM_MIN_REDUCTION`. Measured forward + backward (input and weight
#: gradients) in float32 on a 2-core AMD EPYC (Zen 3, AVX2, torch 2.13 with oneDNN), batch
#: 32, oneDNN vs GEMM: 1024x3x3 -> 2048x1x1 (4x4 s2) 858 vs 153 ms; 1024x4x4 -> 2048x2x2
#: 1034 vs 265 ms; 512x6x6 -> 1024x3x3 259 vs 122 ms; 512x8x8 -> 1024x4x4 351 vs 184 ms;
#: but 256x12x12 -> 512x6x6 92 vs 116 ms, 256x16x16 -> 512x8x8 203 vs 226 ms, and with a
#: short reduction (64x4x4 -> 64x4x4, 3x3, batch 16) 0.8 vs 1.3 ms.
GEMM_MAX_OUTPUT_AREA = 16
#: See :data:`GEMM_MAX_OUTPUT_AREA`.
GEMM_MIN_REDUCTION = 4096


_winograd = {"enabled": os.environ.get("FASTSR_WINOGRAD", "1") != "0"}


def use_winograd(enabled: bool | None = None) -> bool:
    """Whether the fused path computes eligible 3x3 convolutions (stride 1, padding 1, channel
    counts multiples of 16) with :func:`fastsr.ops.conv3x3_winograd` -- forward, input gradient
    and (float32) weight gradient by Winograd's F(4x4, 3x3) (float32) or F(2x2, 3x3)
    (bfloat16) -- on CPUs where
    that kernel is the faster algorithm (:func:`fastsr.ops.conv3x3_winograd_supported`),
    training and inference alike. On by default (``FASTSR_WINOGRAD=0`` in the environment
    starts with it off); ``train.winograd`` sets it for a run. Pass ``enabled`` to set it;
    returns the setting in force."""
    if enabled is not None:
        _winograd["enabled"] = bool(enabled)
    return _winograd["enabled"]


def _winograd_conv(x: torch.Tensor, conv: nn.Conv2d, bias: bool) -> torch.Tensor | None:
    """``conv(x)`` (without its bias when not ``bias``) by :func:`fastsr.ops.conv3x3_winograd`
    where :func:`use_winograd` is on and ``conv`` and this CPU qualify, else None. Under CPU
    autocast the input, weight and bias are cast to the autocast dtype, as ``F.conv2d`` is."""
    if not (_winograd["enabled"] and x.device.type == "cpu" and not isinstance(conv, PackedConv2d)
            and winograd_eligible(conv)):
        return None
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
    if not autocast and conv.weight.dtype != dtype:
        return None  # F.conv2d raises its own dtype error
    xc, wc = x.to(dtype), conv.weight.to(dtype)
    if not conv3x3_winograd_supported(xc, wc):
        return None
    b = conv.bias if bias and conv.bias is not None else None
    return conv3x3_winograd(xc, wc, None if b is None else b.to(dtype))


def _conv(x: torch.Tensor, conv: nn.Conv2d, bias: bool = True) -> torch.Tensor:
    """``conv(x)`` (without its bias when not ``bias``) on the fused path: the Winograd
    convolution where :func:`use_winograd` and the CPU allow, else ``F.conv2d`` (a
    :class:`PackedConv2d` with its bias runs its own forward)."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"conv epilogue: conv must use zero padding, got padding_mode={conv.padding_mode!r}")
    if bias and isinstance(conv, PackedConv2d):
        return conv(x)
    y = _winograd_conv(x, conv, bias)
    if y is not None:
        return y
    return F.conv2d(x, conv.weight, conv.bias if bias else None, conv.stride, conv.padding, conv.dilation,
                    conv.groups)


def _conv_without_bias(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    return _conv(x, conv, bias=False)


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
    if isinstance(conv, PackedConv2d) and conv.packable(x) and conv.bias is not None:
        return conv.conv_prelu(x, prelu.weight)
    return bias_prelu(_conv_without_bias(x, conv), conv.bias, prelu.weight)


def conv_act(x: torch.Tensor, conv: nn.Conv2d, act: str, slope: float = 0.0, fused: bool = True) -> torch.Tensor:
    """``act(conv(x))`` for ``act`` ``"relu"`` or ``"leaky_relu"`` (negative ``slope``, e.g. 0.2
    in ESRGAN, 0.1 in MSRResNet), or ``"none"``. When ``fused`` and ``conv`` is a
    :class:`~fastsr.nn.PackedConv2d` (:func:`fastsr.optimize_for_inference`), the activation
    is a post-op of the one oneDNN primitive; otherwise it is ``F.relu`` / ``F.leaky_relu``
    after ``conv``.

    Args:
        x: (N, C_in, H, W) float tensor.
        conv: the convolution.
        act: ``"none"``, ``"relu"`` or ``"leaky_relu"``.
        slope: LeakyReLU's negative slope.
        fused: allow the fused primitive.

    Returns:
        (N, C_out, H', W') in the convolution's output dtype.

    Raises:
        ValueError: an unknown ``act``.
    """
    if fused and isinstance(conv, PackedConv2d):
        return conv.conv_act(x, act, slope)
    if act not in ("none", "relu", "leaky_relu"):
        raise ValueError(f"conv_act: act must be 'none', 'relu' or 'leaky_relu', got {act!r}")
    y = _conv(x, conv) if fused and conv.padding_mode == "zeros" else conv(x)
    if act == "relu":
        return F.relu(y)
    if act == "leaky_relu":
        return F.leaky_relu(y, slope)
    return y


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
    if isinstance(conv, PackedConv2d) and conv.packable(x):
        return conv.conv_add(x, residual, scale)
    t = _conv_without_bias(x, conv)
    if residual.dtype != t.dtype:  # autocast: the conv output is bf16
        residual = residual.to(t.dtype)
    return bias_residual(t, conv.bias, residual, scale)


def _gemm_output_size(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups):
    """``(H_out, W_out)`` when :func:`conv2d` computes this convolution as im2col + GEMM
    (see :data:`GEMM_MAX_OUTPUT_AREA`), else None."""
    if (x.device.type != "cpu" or x.dim() != 4 or weight.dim() != 4 or groups != 1 or isinstance(padding, str)
            or x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype
            or torch.is_autocast_enabled("cpu")):  # bf16 autocast: oneDNN's bf16 kernels, unmeasured here
        return None
    kh, kw = weight.shape[-2:]
    if weight.shape[1] * kh * kw < GEMM_MIN_REDUCTION or x.shape[0] == 0 or x.shape[1] != weight.shape[1]:
        return None
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1 or ho * wo > GEMM_MAX_OUTPUT_AREA:
        return None
    return ho, wo


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` (same arguments and result up to float rounding) that
    computes a CPU convolution with a tiny output and a long reduction as im2col
    (``F.unfold``) + one matrix multiply over the whole batch, several times faster there than
    oneDNN's direct convolution (:data:`GEMM_MAX_OUTPUT_AREA` gives the rule and the
    measurements). Everything else -- CUDA, bf16 autocast, grouped or larger convolutions --
    is ``F.conv2d`` itself. Differentiable to any order (the GEMM path is made of ATen ops).

    Args:
        x: (N, C_in, H, W) float tensor, any memory format.
        weight: (C_out, C_in / groups, kh, kw), x's dtype.
        bias: (C_out,) or None.
        stride, padding, dilation, groups: as in ``F.conv2d`` (zero padding).

    Returns:
        (N, C_out, H_out, W_out) in x's dtype and memory format (channels_last in, channels_last out).

    Raises:
        RuntimeError: from ``F.conv2d`` for inconsistent shapes, as PyTorch raises it.
    """
    size = _gemm_output_size(x, weight, stride, padding, dilation, groups)
    if size is None:
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    (ho, wo), n, c_out = size, x.shape[0], weight.shape[0]
    cols = F.unfold(x, weight.shape[-2:], dilation=dilation, padding=padding, stride=stride)  # (N, K, L)
    cols = cols.transpose(1, 2).reshape(n * ho * wo, -1)
    w = weight.reshape(c_out, -1).t()
    out = cols @ w if bias is None else torch.addmm(bias, cols, w)
    return out.reshape(n, ho, wo, c_out).permute(0, 3, 1, 2).contiguous(memory_format=output_format(x))


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` -- same arguments, parameters and state_dict -- whose forward, when
    ``fused``, is the faster CPU algorithm for its shape: the Winograd convolution
    (:func:`fastsr.ops.conv3x3_winograd`, see :func:`use_winograd`) for a 3x3 stride-1
    convolution with channel counts multiples of 16, :func:`conv2d` (im2col + GEMM for tiny
    outputs) otherwise; else ``nn.Conv2d``'s own.

    Args:
        *args, **kwargs: ``nn.Conv2d``'s (a ``padding_mode`` other than ``"zeros"`` always
            runs ``nn.Conv2d``'s forward).
        fused: pick the algorithm as :func:`conv2d` does (True) or always run
            ``F.conv2d`` (False); models set it with their own ``fused`` flag.

    Shape:
        (N, C_in, H, W) -> (N, C_out, H_out, W_out), as ``nn.Conv2d``.
    """

    def __init__(self, *args, fused: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = bool(fused)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.fused and self.padding_mode == "zeros":
            y = _winograd_conv(input, self, True) if weight is self.weight and bias is self.bias else None
            if y is not None:
                return y
            return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)
