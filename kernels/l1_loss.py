"""Triton kernels of fastsr::l1_loss and fastsr::l1_loss_backward.

    d = input - target;  l = |d| (dl/dd = sign d)  or  sqrt(d^2 + eps^2) (dl/dd = d / l)

The forward is one elementwise pass that writes the loss (reduction 'none') or one partial
sum per program (finished by a deterministic torch sum in float64), and, when asked, the
gradient buffer s * dl/dd (s = 1/numel for 'mean'). The backward scales that buffer by the
incoming gradient (a scalar, or elementwise for 'none'). Arithmetic in float32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsr.kernels._common import ELEMENTWISE_BLOCK
from fastsr.ops import _common as checks


@triton.jit
def _fwd_kernel(x_ptr, y_ptr, loss_ptr, grad_ptr, partial_ptr, numel, eps2, gscale,
                CHARBONNIER: tl.constexpr, COMPUTE_GRAD: tl.constexpr, NONE: tl.constexpr,
                BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    d = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) - \
        tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if CHARBONNIER:
        loss = tl.sqrt(d * d + eps2)
        dl = d / loss
    else:
        loss = tl.abs(d)
        dl = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))  # sign: 0 at d = 0 and NaN, as torch.sign
    if NONE:
        tl.store(loss_ptr + offs, loss.to(loss_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))
    if COMPUTE_GRAD:
        tl.store(grad_ptr + offs, (gscale * dl).to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(gbuf_ptr, gloss_ptr, out_ptr, numel, SCALAR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    b = tl.load(gbuf_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if SCALAR:
        s = tl.load(gloss_ptr).to(tl.float32)
    else:
        s = tl.load(gloss_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (b * s).to(out_ptr.dtype.element_ty), mask=mask)


def l1_loss_forward(input: torch.Tensor, target: torch.Tensor, reduction: str, eps, compute_grad: bool):
    """Triton forward of fastsr::l1_loss: returns (loss, grad_buf)."""
    from fastsr.ops.l1_loss import _check

    _check(input, target, reduction, eps, "fastsr::l1_loss")
    fmt = checks.output_format(input)
    x = input.contiguous(memory_format=fmt)
    y = target.contiguous(memory_format=fmt)
    numel = x.numel()
    none = reduction == "none"
    loss = torch.empty_like(x, memory_format=fmt) if none else x.new_empty(())
    grad = torch.empty_like(x, memory_format=fmt) if compute_grad else x.new_empty((0,))
    nprog = triton.cdiv(numel, ELEMENTWISE_BLOCK)
    partial = x.new_zeros((max(nprog, 1),), dtype=torch.float32)
    if numel > 0:
        gscale = 1.0 / numel if reduction == "mean" else 1.0
        eps2 = 0.0 if eps is None else float(eps) ** 2
        _fwd_kernel[(nprog,)](x, y, loss if none else x, grad if compute_grad else x, partial, numel,
                              eps2, gscale, CHARBONNIER=eps is not None, COMPUTE_GRAD=compute_grad,
                              NONE=none, BLOCK=ELEMENTWISE_BLOCK)
    if not none:
        total = partial.sum(dtype=torch.float64)
        if reduction == "mean":
            total = total / numel  # 0/0 = NaN for an empty input, as torch
        loss.copy_(total)
    return loss, grad


def l1_loss_backward(grad_loss: torch.Tensor, grad_buf: torch.Tensor) -> torch.Tensor:
    """Triton backward of fastsr::l1_loss: grad_buf * grad_loss."""
    from fastsr.ops.l1_loss import _l1_loss_backward_fake

    _l1_loss_backward_fake(grad_loss, grad_buf)  # the checks
    fmt = checks.output_format(grad_buf)
    gbuf = grad_buf.contiguous(memory_format=fmt)
    out = torch.empty_like(gbuf, memory_format=fmt)
    numel = gbuf.numel()
    if numel == 0:
        return out
    scalar = grad_loss.dim() == 0
    gl = grad_loss if scalar else grad_loss.contiguous(memory_format=fmt)
    _bwd_kernel[(triton.cdiv(numel, ELEMENTWISE_BLOCK),)](gbuf, gl, out, numel, SCALAR=scalar,
                                                          BLOCK=ELEMENTWISE_BLOCK)
    return out


#: The fastsr ops these launchers implement on CUDA (registered by fastsr.kernels.register).
CUDA_KERNELS = {
    "l1_loss": l1_loss_forward,
    "l1_loss_backward": l1_loss_backward,
}
