"""L1 and Charbonnier pixel loss whose forward also computes the gradient.

    d = input - target
    L1:          l = |d|                      dl/dd = sign(d)  (0 at d = 0 and at NaN, as torch.sign)
    Charbonnier: l = sqrt(d**2 + eps**2)      dl/dd = d / l    (NaN at NaN and infinite d, as
                                                                the reference's autograd)

reduced by ``'mean'`` (sum / numel), ``'sum'`` or ``'none'`` (elementwise). L1 is the content
loss of the NonBN residual GAN (Zhang et al. 2019, eq. 7, l_G = l_L1 + 1e-3 l_Gen) and of
the sharpness GAN. Charbonnier is the variant of LapSRN (Lai et al. 2017, eq. 2:
rho(x) = sqrt(x**2 + eps**2), eps = 1e-3): ``eps`` is squared inside the square root and
nothing is subtracted. BasicSR's ``CharbonnierLoss(eps=e)`` and the original ESRGAN code
compute ``sqrt(d**2 + e)``, i.e. this loss with ``eps = sqrt(e)``.

As in Liger-Kernel's fused cross-entropy, the forward writes ``s * dl/dd`` (s = 1/numel for
``'mean'``, else 1) into a buffer saved for backward, so the backward is a scale by the
incoming gradient -- and nothing at all when that gradient is exactly 1 (a plain
``loss.backward()``): the saved buffer is the input gradient. That costs one tensor of
memory between forward and backward, like the ``input - target`` eager PyTorch saves.
When neither ``input`` nor ``target`` requires grad (evaluation, ``torch.no_grad()``) the
buffer is neither computed nor stored: the loss reads both tensors once.

Double backward (``create_graph=True``, e.g. a gradient penalty): the backward is then
computed with differentiable torch ops, the same formulas as the reference, from d
recomputed: the forward also keeps references to ``input`` and ``target`` (no copies).

Autograd: C++ ``csrc/autograd/l1_loss.cpp`` (registered for the Autograd dispatch key, so a
forward+backward runs no Python beyond :func:`l1_loss` itself); when nothing requires grad
it calls the kernel without creating a graph node.

Kernels: C++ ``csrc/cpu/l1_loss.cpp`` (CPU), CUDA C++ ``csrc/cuda/l1_loss.cu`` (CUDA, when
fastsr._C is built with CUDA; else Triton ``kernels/l1_loss.py``),
:func:`l1_loss_reference` (plain PyTorch; fallback and test oracle).
"""
from __future__ import annotations

import torch

from fastsr.ops import _common

_OP = "fastsr.ops.l1_loss"
REDUCTIONS = ("mean", "sum", "none")


def l1_loss_reference(
    input: torch.Tensor, target: torch.Tensor, reduction: str = "mean", *, eps: float | None = None
) -> torch.Tensor:
    """Plain-PyTorch L1 / Charbonnier loss in float32 (float64 for float64 input), cast back
    to ``input.dtype``. Same arguments and errors as :func:`l1_loss`."""
    _check(input, target, reduction, eps, _OP)
    acc = _common.acc_dtype(input.dtype)
    d = input.to(acc) - target.to(acc)
    loss = d.abs() if eps is None else torch.sqrt(d * d + float(eps) ** 2)
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(input.dtype)


def l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    *,
    eps: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """L1 loss (``eps=None``) or Charbonnier loss ``sqrt((input - target)**2 + eps**2)``.

    A drop-in for ``torch.nn.functional.l1_loss`` (without broadcasting) whose backward is a
    scale of a gradient computed in the forward pass (see the module docstring).

    Args:
        input: SR output, any shape; float32, bfloat16 or float64 on CPU (float16 too on
            CUDA). Any value range (typically [0, 1] images). Contiguous or channels_last
            (other strides are copied; target is brought to input's layout).
        target: HR image, same shape, dtype and device as ``input``.
        reduction: ``'mean'`` (default), ``'sum'`` or ``'none'``.
        eps: ``None`` for L1; a finite number > 0 for Charbonnier (LapSRN's eps, squared
            inside the root; 1e-3 in LapSRN, in the units of the images).
        impl: ``"auto"`` (the C++ kernel on CPU, the CUDA kernel on CUDA) or ``"reference"`` (plain PyTorch).

    Returns:
        A 0-D tensor (``'mean'``, ``'sum'``) or a tensor of ``input``'s shape and memory
        format (``'none'``), of ``input.dtype``; bfloat16 is computed in float32 and the sum is
        accumulated in double. Differentiable in ``input`` and ``target``, also twice
        (``create_graph=True``).

    Raises:
        ValueError: shapes or devices differ, unknown ``reduction`` or ``impl``, ``eps`` not a
            finite number > 0.
        TypeError: ``input``/``target`` not tensors, unsupported or differing dtypes.
    """
    _check(input, target, reduction, eps, _OP)
    if _common.use_reference(impl, input, _OP):
        return l1_loss_reference(input, target, reduction, eps=eps)
    needs_grad = torch.is_grad_enabled() and (input.requires_grad or target.requires_grad)
    loss, _ = torch.ops.fastsr.l1_loss(input, target, reduction, None if eps is None else float(eps), needs_grad)
    return loss


def _check(input, target, reduction, eps, op):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: input must be a torch.Tensor, got {type(input).__name__}")
    allowed = _common.CPU_DTYPES if input.device.type == "cpu" else _common.CUDA_DTYPES
    if input.dtype not in allowed:
        raise TypeError(f"{op}: input must be one of {allowed} on {input.device.type}, got {input.dtype}")
    _common.check_size_products(input, op, "input")
    _common.check_same_as(target, input, op, "target", "input")
    _check_eps_and_reduction(reduction, eps, op)


def _check_eps_and_reduction(reduction, eps, op):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if eps is not None:
        if not _common.is_finite_number(eps) or eps <= 0:
            raise ValueError(f"{op}: eps must be None (L1) or a finite number > 0 (Charbonnier), got {eps!r}")


def _flat_like(t: torch.Tensor) -> torch.Tensor:
    """An empty tensor in the layout the kernels walk ``t`` in: channels_last for a 4-D
    channels_last ``t``, else contiguous (as ``flat_format`` in csrc/cpu/l1_loss.cpp)."""
    return torch.empty_like(t, memory_format=_common.output_format(t))


@torch.library.register_fake("fastsr::l1_loss")
def _l1_loss_fake(input, target, reduction, eps, compute_grad):
    _check(input, target, reduction, eps, "fastsr::l1_loss")
    loss = _flat_like(input) if reduction == "none" else input.new_empty(())
    grad = _flat_like(input) if compute_grad else input.new_empty((0,))
    return loss, grad


@torch.library.register_fake("fastsr::l1_loss_backward")
def _l1_loss_backward_fake(grad_loss, grad_buf):
    op = "fastsr::l1_loss_backward"
    if grad_loss.dtype != grad_buf.dtype:
        raise TypeError(f"{op}: grad_loss must have the dtype of grad_buf ({grad_buf.dtype}), got {grad_loss.dtype}")
    if grad_loss.dim() != 0 and grad_loss.shape != grad_buf.shape:
        raise ValueError(
            f"{op}: grad_loss must be 0-D or have the shape of grad_buf {tuple(grad_buf.shape)}, "
            f"got {tuple(grad_loss.shape)}"
        )
    return _flat_like(grad_buf)


# Autograd is registered in C++ (csrc/autograd/l1_loss.cpp) for the Autograd key, so a
# forward+backward runs no Python; its backward calls fastsr::l1_loss_backward through the
# dispatcher: the C++ kernel on CPU, the CUDA kernel (compiled or Triton) on CUDA, the fake here.
