"""bias + PReLU: the epilogue of the first convolution of a residual block.

    y = PReLU(x + bias[c]) = z if z > 0 else weight[c] * z,   z = x + bias[c]

PReLU is He et al. 2015 ("Delving deep into rectifiers"), as used by SRResNet/SRGAN
(Ledig et al. 2017) and the NonBN residual GAN generator (Zhang et al. 2019, Table 1).

Gradients (g = dL/dy):  dz = g if z > 0 else weight[c] * g;  dx = dz;
dbias[c] = sum_{n,h,w} dz;  dweight[c] = sum_{n,h,w: z <= 0} g * z (summed over all channels
when the weight is shared, ``num_parameters=1``).

Kernels: C++ ``csrc/cpu/bias_prelu.cpp`` (CPU), CUDA C++ ``csrc/cuda/bias_prelu.cu`` (CUDA, when
fastsr._C is built with CUDA; else Triton ``kernels/bias_prelu.py``),
:func:`bias_prelu_reference` (plain PyTorch; fallback and test oracle).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastsr.ops import _common

_OP = "fastsr.ops.bias_prelu"


def bias_prelu_reference(x: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain-PyTorch bias + PReLU, computed in float32 (float64 for float64 input) and cast
    back to ``x.dtype``. Same arguments and errors as :func:`bias_prelu`."""
    _check(x, bias, weight, _OP)
    acc = _common.acc_dtype(x.dtype)
    z = x.to(acc) + bias.to(acc).view(1, -1, 1, 1)
    return F.prelu(z, weight.to(acc)).to(x.dtype)


def bias_prelu(x: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Fused ``PReLU(x + bias)`` with per-channel (or shared) PReLU weight.

    Args:
        x: (N, C, H, W) activation, typically a bias-free convolution output; float32,
            bfloat16 or float64 on CPU (float16 too on CUDA); contiguous or channels_last
            (other strides are copied to contiguous first).
        bias: (C,) per-channel bias, dtype of ``x`` or float32.
        weight: (C,) or (1,) PReLU slopes for negative inputs, dtype of ``x`` or float32.
        impl: ``"auto"`` (the C++ kernel on CPU, the CUDA kernel on CUDA) or ``"reference"`` (plain PyTorch).

    Returns:
        (N, C, H, W) tensor of ``x.dtype`` in the memory format of ``x``. bfloat16 inputs are
        computed in float32 and rounded once. Differentiable in ``x``, ``bias`` and ``weight``,
        also twice (``create_graph=True``: the backward is then computed with
        differentiable torch ops, as the reference's).

    Raises:
        ValueError: ``x`` not 4-D, ``bias``/``weight`` of the wrong size, tensors on different
            devices, or an unknown ``impl``.
        TypeError: an argument that is not a tensor, an unsupported dtype, or parameter
            dtypes other than ``x.dtype``/float32.
    """
    if not (isinstance(x, torch.Tensor) and isinstance(bias, torch.Tensor) and isinstance(weight, torch.Tensor)):
        _check(x, bias, weight, _OP)  # raises the reference's TypeError (in its order)
    if _common.use_reference(impl, x, _OP):
        return bias_prelu_reference(x, bias, weight)
    return torch.ops.fastsr.bias_prelu(x, bias, weight)


def _check(x, bias, weight, op):
    _common.check_activation(x, op)
    _common.check_channel_param(bias, x, op, "bias")
    _common.check_channel_param(weight, x, op, "weight", allow_shared=True)


@torch.library.register_fake("fastsr::bias_prelu")
def _bias_prelu_fake(x, bias, weight):
    _check(x, bias, weight, "fastsr::bias_prelu")
    return torch.empty_like(x, memory_format=_common.output_format(x))


@torch.library.register_fake("fastsr::bias_prelu_backward")
def _bias_prelu_backward_fake(grad, x, bias, weight):
    _check(x, bias, weight, "fastsr::bias_prelu_backward")
    _common.check_same_as(grad, x, "fastsr::bias_prelu_backward", "grad")
    return (
        torch.empty_like(x, memory_format=_common.output_format(x)),
        torch.empty_like(bias, memory_format=torch.contiguous_format),
        torch.empty_like(weight, memory_format=torch.contiguous_format),
    )


# Autograd is registered in C++ (csrc/autograd/bias_prelu.cpp) for the Autograd key, so a
# forward+backward runs no Python; its backward calls the backward op through the
# dispatcher: the C++ kernel on CPU, the CUDA kernel (compiled or Triton) on CUDA, the fake here.
