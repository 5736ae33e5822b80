"""bias + scaled residual add: the epilogue of the second convolution of a residual block.

    y = residual + scale * (x + bias[c])

``scale`` is the residual scaling of EDSR (0.1) and ESRGAN's RRDB (0.2); SRResNet and the
NonBN residual GAN use 1.

Gradients (g = dL/dy): dresidual = g;  dx = scale * g;  dbias[c] = scale * sum_{n,h,w} g.
With ``scale == 1`` dx is g itself, so the backward is a single per-channel reduction.

Kernels: C++ ``csrc/cpu/bias_residual.cpp`` (CPU), CUDA C++ ``csrc/cuda/bias_residual.cu`` (CUDA, when
fastsr._C is built with CUDA; else Triton ``kernels/bias_residual.py``),
:func:`bias_residual_reference` (plain PyTorch; fallback and test oracle).
"""
from __future__ import annotations

import torch

from fastsr.ops import _common

_OP = "fastsr.ops.bias_residual"


def bias_residual_reference(
    x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """Plain-PyTorch ``residual + scale * (x + bias)`` in float32 (float64 for float64 input),
    cast back to ``x.dtype``. Same arguments and errors as :func:`bias_residual`."""
    _check(x, bias, residual, scale, _OP)
    acc = _common.acc_dtype(x.dtype)
    y = residual.to(acc) + scale * (x.to(acc) + bias.to(acc).view(1, -1, 1, 1))
    return y.to(x.dtype)


def bias_residual(
    x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, scale: float = 1.0, *, impl: str = "auto"
) -> torch.Tensor:
    """Fused ``residual + scale * (x + bias)``.

    Args:
        x: (N, C, H, W) activation, typically a bias-free convolution output; float32,
            bfloat16 or float64 on CPU (float16 too on CUDA); contiguous or channels_last.
        bias: (C,) per-channel bias, dtype of ``x`` or float32.
        residual: tensor of the shape and dtype of ``x`` (the skip connection).
        scale: finite residual scaling factor, a Python int or float (not a tensor; 1.0
            SRResNet, 0.1 EDSR, 0.2 ESRGAN).
        impl: ``"auto"`` (the C++ kernel on CPU, the CUDA kernel on CUDA) or ``"reference"``.

    Returns:
        (N, C, H, W) tensor of ``x.dtype`` in the memory format of ``x``; differentiable in
        ``x``, ``bias`` and ``residual``, also twice (``create_graph=True``).

    Raises:
        ValueError: wrong dims or shapes, different devices, ``scale`` not a finite Python
            number, unknown ``impl``.
        TypeError: an argument that is not a tensor, unsupported or mismatched dtypes.
    """
    tensors = isinstance(x, torch.Tensor) and isinstance(bias, torch.Tensor) and isinstance(residual, torch.Tensor)
    if not (tensors and _common.is_finite_number(scale)):
        # raises the reference's error, in its order (a tensor scale is refused too)
        _check(x, bias, residual, scale, _OP)
    if _common.use_reference(impl, x, _OP):
        return bias_residual_reference(x, bias, residual, scale)
    return torch.ops.fastsr.bias_residual(x, bias, residual, float(scale))


def _check(x, bias, residual, scale, op):
    _common.check_activation(x, op)
    _common.check_channel_param(bias, x, op, "bias")
    _common.check_same_as(residual, x, op, "residual")
    _common.check_finite(scale, op, "scale")


@torch.library.register_fake("fastsr::bias_residual")
def _bias_residual_fake(x, bias, residual, scale):
    _check(x, bias, residual, scale, "fastsr::bias_residual")
    return torch.empty_like(x, memory_format=_common.output_format(x))


@torch.library.register_fake("fastsr::bias_residual_backward")
def _bias_residual_backward_fake(grad, bias, scale):
    _common.check_activation(grad, "fastsr::bias_residual_backward", "grad")
    _common.check_channel_param(bias, grad, "fastsr::bias_residual_backward", "bias")
    return (
        torch.empty_like(grad, memory_format=_common.output_format(grad)),
        torch.empty_like(bias, memory_format=torch.contiguous_format),
    )


@torch.library.register_fake("fastsr::channel_sum")
def _channel_sum_fake(x, scale, dtype):
    _common.check_activation(x, "fastsr::channel_sum")
    return x.new_empty((x.shape[1],), dtype=dtype)


# Autograd is registered in C++ (csrc/autograd/bias_residual.cpp) for the Autograd key, so a
# forward+backward runs no Python; its backward calls the backward op through the
# dispatcher: the C++ kernel on CPU, the CUDA kernel (compiled or Triton) on CUDA, the fake here.
