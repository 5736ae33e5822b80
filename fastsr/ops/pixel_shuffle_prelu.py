"""PixelShuffle followed by PReLU: the activation of the sub-pixel upsampling stage.

    y[n, c, h*r + i, w*r + j] = PReLU(x[n, c*r*r + i*r + j, h, w]; weight[c])

PixelShuffle is Shi et al. 2016 (ESPCN, eq. 4); the [conv, PixelShuffle(2), PReLU] stage is
SRGAN's upsampling block (Ledig et al. 2017, Fig. 4) and the NonBN residual GAN's G4 layer.
PReLU is He et al. 2015.

Gradients (g = dL/dy, v = the x element at the matching position):
dx = unshuffle(g) * (1 if v > 0 else weight[c]);  dweight[c] = sum_{v <= 0} g * v (summed
over all channels when the weight is shared, ``num_parameters=1``).

Kernels: C++ ``csrc/cpu/pixel_shuffle_prelu.cpp`` (CPU), CUDA C++ ``csrc/cuda/pixel_shuffle_prelu.cu`` (CUDA, when
fastsr._C is built with CUDA; else Triton ``kernels/pixel_shuffle_prelu.py``),
:func:`pixel_shuffle_prelu_reference` (plain PyTorch; fallback and test oracle). One read of x and one write of y forward, one
read of g and x and one write of dx backward; eager PyTorch makes three passes and two
temporaries.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastsr.ops import _common

_OP = "fastsr.ops.pixel_shuffle_prelu"


def pixel_shuffle_prelu_reference(x: torch.Tensor, weight: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    """Plain-PyTorch PixelShuffle(r) then PReLU, in float32 (float64 for float64 input),
    cast back to ``x.dtype``, in the memory format of ``x`` as the kernels (torch's own
    pixel_shuffle keeps channels_last on CPU but not on CUDA). Same arguments and errors as
    :func:`pixel_shuffle_prelu`."""
    _check(x, weight, upscale_factor, _OP)
    acc = _common.acc_dtype(x.dtype)
    y = F.prelu(_pixel_shuffle(x.to(acc), upscale_factor), weight.to(acc)).to(x.dtype)
    return y.contiguous(memory_format=_common.output_format(x))


def _pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """``F.pixel_shuffle``; for zero-size ``x`` the same permutation written as view /
    permute / reshape, because torch's PixelShuffle backward rejects zero-size gradients."""
    if x.numel() > 0:
        return F.pixel_shuffle(x, r)
    N, Cin, H, W = x.shape
    C = Cin // (r * r)
    return x.reshape(N, C, r, r, H, W).permute(0, 1, 4, 2, 5, 3).reshape(N, C, H * r, W * r)


def pixel_shuffle_prelu(
    x: torch.Tensor, weight: torch.Tensor, upscale_factor: int, *, impl: str = "auto"
) -> torch.Tensor:
    """``PReLU(PixelShuffle(x, upscale_factor))`` in one pass, forward and backward.

    Args:
        x: (N, C*r*r, H, W) activation (the output of the stage's convolution), r =
            ``upscale_factor``; float32, bfloat16 or float64 on CPU (float16 too on CUDA);
            contiguous or channels_last (other strides are copied to contiguous first).
        weight: PReLU slopes for negative inputs, (C,) (per output channel, ``nn.PReLU(C)``)
            or (1,) (shared); dtype of ``x`` or float32.
        upscale_factor: r, an integer >= 1 (2 and 3 in SR models; 4 in ESPCN).
        impl: ``"auto"`` (the C++ kernel on CPU, the CUDA kernel on CUDA) or ``"reference"``
            (plain PyTorch).

    Returns:
        (N, C, H*r, W*r) tensor of ``x.dtype``, in the memory format of ``x`` (channels_last
        in, channels_last out). bfloat16 is computed in float32 and rounded once.
        Differentiable in ``x`` and ``weight``, also twice (``create_graph=True``: the
        backward is then computed with differentiable torch ops, as the reference's).

    Raises:
        ValueError: ``x`` not 4-D, its channels not divisible by r*r, ``upscale_factor`` not
            an integer >= 1 or so large that r*r or the output sizes overflow int64,
            ``weight`` of the wrong size, tensors on different devices, or an unknown ``impl``.
        TypeError: an argument that is not a tensor, an unsupported dtype, or a ``weight``
            dtype other than ``x.dtype``/float32.
    """
    _check(x, weight, upscale_factor, _OP)  # errors name the public function, on every path
    if _common.use_reference(impl, x, _OP):
        return pixel_shuffle_prelu_reference(x, weight, upscale_factor)
    return torch.ops.fastsr.pixel_shuffle_prelu(x, weight, upscale_factor)


def _check(x, weight, upscale_factor, op):
    _common.check_activation(x, op)
    if not isinstance(upscale_factor, int) or isinstance(upscale_factor, bool) or upscale_factor < 1:
        raise ValueError(f"{op}: upscale_factor must be an integer >= 1, got {upscale_factor!r}")
    _check_sizes(x, upscale_factor, op)
    r2 = upscale_factor * upscale_factor
    if x.shape[1] % r2 != 0:
        raise ValueError(
            f"{op}: channels of x ({x.shape[1]}) must be divisible by upscale_factor**2 ({r2})"
        )
    _common.check_channel_param(weight, x, op, "weight", allow_shared=True, channels=x.shape[1] // r2)


def _check_sizes(x, r, op):
    """r*r, H*r, W*r and the output's element count (zero sizes counted as 1, which bounds
    the strides too) fit in int64, as the C++ kernel checks before forming them (not for
    symbolic sizes: see _common.check_size_products)."""
    if not _common.has_concrete_sizes(x) or not isinstance(r, int):
        return
    N, Cin, H, W = x.shape
    r2, limit = r * r, _common.INT64_MAX
    prod = 1
    for s in (N, Cin // r2, H * r, W * r):
        prod *= max(s, 1)
    if r2 > limit or H * r > limit or W * r > limit or prod > limit:
        raise ValueError(
            f"{op}: upscale_factor {r} is too large for x of shape {tuple(x.shape)}: "
            "the output sizes (N, C / r**2, H * r, W * r) would overflow int64"
        )


def _output_shape(x, upscale_factor):
    N, Cin, H, W = x.shape
    r = upscale_factor
    return (N, Cin // (r * r), H * r, W * r)


def _check_grad(grad, x, upscale_factor, op):
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"{op}: grad must be a torch.Tensor, got {type(grad).__name__}")
    _common.check_same_device(grad, x, op, "grad")
    if tuple(grad.shape) != _output_shape(x, upscale_factor):
        raise ValueError(
            f"{op}: grad must have the output shape {_output_shape(x, upscale_factor)}, got {tuple(grad.shape)}"
        )
    if grad.dtype != x.dtype:
        raise TypeError(f"{op}: grad must have the dtype of x ({x.dtype}), got {grad.dtype}")


@torch.library.register_fake("fastsr::pixel_shuffle_prelu")
def _pixel_shuffle_prelu_fake(x, weight, upscale_factor):
    _check(x, weight, upscale_factor, "fastsr::pixel_shuffle_prelu")
    return x.new_empty(_output_shape(x, upscale_factor)).contiguous(memory_format=_common.output_format(x))


@torch.library.register_fake("fastsr::pixel_shuffle_prelu_backward")
def _pixel_shuffle_prelu_backward_fake(grad, x, weight, upscale_factor):
    op = "fastsr::pixel_shuffle_prelu_backward"
    _check(x, weight, upscale_factor, op)
    _check_grad(grad, x, upscale_factor, op)
    return (
        torch.empty_like(x, memory_format=_common.output_format(x)),
        torch.empty_like(weight, memory_format=torch.contiguous_format),
    )


# Autograd is registered in C++ (csrc/autograd/pixel_shuffle_prelu.cpp) for the Autograd key,
# as for the conv epilogues: a forward+backward runs no Python; its backward calls
# fastsr::pixel_shuffle_prelu_backward through the dispatcher (C++ on CPU, the CUDA kernel on CUDA,
# the fake above under torch.compile).
