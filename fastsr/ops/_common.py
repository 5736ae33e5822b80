"""What every fastsr op shares: the ``impl=`` switch, input checks that mirror the C++
``TORCH_CHECK_VALUE`` / ``TORCH_CHECK_TYPE`` ones (used by the reference, fake and Triton
paths, so every path raises the same ``ValueError`` / ``TypeError``), the output memory
format rule, and which kernel serves CUDA.
"""
from __future__ import annotations

import importlib.util
import math

import torch

IMPLS = ("auto", "reference")
CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


# Facts fixed at import, so that use_reference is plain constant lookups under
# torch.compile (Dynamo cannot trace importlib or the dispatcher queries).
TRITON = importlib.util.find_spec("triton") is not None
#: The op families (one file each in csrc/cpu, csrc/cuda, kernels and fastsr/ops).
FAMILIES = ("bias_prelu", "bias_residual", "pixel_shuffle_prelu", "l1_loss", "ssim")
#: The op families with CUDA kernels compiled into fastsr._C (all but SSIM, when fastsr._C
#: was built with CUDA; none in a CPU-only build). Queried before the Triton launchers are
#: registered, which only fill in what this leaves out.
COMPILED_CUDA = frozenset(
    family
    for family in FAMILIES
    if torch._C._dispatch_has_kernel_for_dispatch_key(f"fastsr::{family}", "CUDA")
)
#: The Triton launchers serve CUDA for the families COMPILED_CUDA leaves out.
TRITON_CUDA = TRITON and torch.cuda.is_available()


def use_reference(impl: str, x: torch.Tensor, op: str) -> bool:
    """True when ``op`` (``"fastsr.ops.<family>"``) must run its plain-PyTorch reference.

    ``impl="reference"`` forces it, and so does forward-mode AD (:func:`forward_ad_active`:
    the kernels' autograd is reverse-mode only, the reference's is both); ``impl="auto"``
    uses the C++ kernel on CPU; on CUDA the
    compiled CUDA kernel of fastsr._C, else the Triton kernel (not for float64), else the
    reference; the reference on any other device.
    """
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "reference" or forward_ad_active():
        return True
    if x.device.type == "cpu":
        return False
    if x.device.type == "cuda":
        if op.rsplit(".", 1)[-1] in COMPILED_CUDA:
            return False
        return x.dtype == torch.float64 or not TRITON_CUDA
    return True


def forward_ad_active() -> bool:
    """Whether forward-mode AD may be tracing: inside ``torch.autograd.forward_ad.dual_level``
    or a ``torch.func.jvp`` / ``jacfwd`` transform. The C++ kernels' autograd has no forward
    formulas (their tangents would silently be zero), so the ops run their plain-PyTorch
    reference there, whose forward-mode derivatives are exact."""
    if torch.compiler.is_compiling():
        return False
    if torch.autograd.forward_ad._current_level >= 0:
        return True
    stack = torch._C._functorch.get_interpreter_stack()
    return bool(stack) and any(i.key() == torch._C._functorch.TransformType.Jvp for i in stack)


def output_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format the kernels give an output computed from ``x``: channels_last
    when ``x`` is channels_last (and not also plain contiguous), else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def check_activation(x: torch.Tensor, op: str, arg: str = "x", dtypes: tuple | None = None) -> None:
    """``x`` is a 4-D (N, C, H, W) tensor of a supported dtype: ``dtypes`` if given (the
    Triton launchers pass CUDA_DTYPES, also under the CPU interpreter), else the dtypes of
    the kernel for x's device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {arg} must be a torch.Tensor, got {type(x).__name__}")
    allowed = dtypes or (CPU_DTYPES if x.device.type == "cpu" else CUDA_DTYPES)
    if x.dtype not in allowed:
        raise TypeError(f"{op}: {arg} must be one of {allowed} on {x.device.type}, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(
            f"{op}: {arg} must be a 4-D (N, C, H, W) tensor, got {x.dim()}-D with shape {tuple(x.shape)}"
        )
    check_size_products(x, op, arg)


INT64_MAX = 2**63 - 1


def has_concrete_sizes(t: torch.Tensor) -> bool:
    """Whether every size of ``t`` is a plain int (not a SymInt of a traced dynamic shape)."""
    return all(type(s) is int for s in t.shape)


def check_size_products(t: torch.Tensor, op: str, arg: str) -> None:
    """The product of ``t``'s sizes, zero sizes counted as 1, fits in int64 (a zero-size view
    expanded with stride 0 can exceed it; the C++ checks refuse it the same way). Symbolic
    sizes (torch.export / dynamic-shape tracing) are not checked: a bound on them would become
    a shape constraint of the exported program, and the kernel checks the concrete sizes."""
    if not has_concrete_sizes(t):
        return
    prod = 1
    for s in t.shape:
        prod *= max(s, 1)
    if prod > INT64_MAX:
        raise ValueError(
            f"{op}: {arg} has sizes {tuple(t.shape)} whose product (zero sizes counted as 1) overflows int64"
        )


def check_channel_param(
    p: torch.Tensor, x: torch.Tensor, op: str, arg: str, allow_shared: bool = False, channels: int | None = None
) -> None:
    """``p`` is a per-channel parameter of ``x``: 1-D with ``channels`` (default: x's C)
    elements, or 1 when ``allow_shared``; on x's device; dtype of x or float32."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{op}: {arg} must be a torch.Tensor, got {type(p).__name__}")
    check_same_device(p, x, op, arg)
    C = x.shape[1] if channels is None else channels
    if p.dim() != 1 or not (p.shape[0] == C or (allow_shared and p.shape[0] == 1)):
        want = f"{C} (= channels of {'x' if channels is None else 'the output'})" + (" or 1" if allow_shared else "")
        raise ValueError(f"{op}: {arg} must be 1-D with {want} elements, got shape {tuple(p.shape)}")
    if p.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"{op}: {arg} must have the dtype of x ({x.dtype}) or float32, got {p.dtype}")


def check_same_as(t: torch.Tensor, x: torch.Tensor, op: str, arg: str, xname: str = "x") -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {arg} must be a torch.Tensor, got {type(t).__name__}")
    check_same_device(t, x, op, arg)
    if t.shape != x.shape:
        raise ValueError(f"{op}: {arg} must have the shape of {xname} {tuple(x.shape)}, got {tuple(t.shape)}")
    if t.dtype != x.dtype:
        raise TypeError(f"{op}: {arg} must have the dtype of {xname} ({x.dtype}), got {t.dtype}")


def check_same_device(t: torch.Tensor, x: torch.Tensor, op: str, arg: str) -> None:
    if t.device != x.device:
        raise ValueError(f"{op}: {arg} must be on the device of x ({x.device}), got {t.device}")


def is_finite_number(value) -> bool:
    """A Python int or float (not bool, not a tensor) that is finite as a float (an int
    beyond the float range is not); a symbolic number of a dynamic-shape trace passes."""
    if isinstance(value, (torch.SymInt, torch.SymFloat)) or torch.compiler.is_compiling():
        # traced (symbolic with dynamic=True, where math.isfinite cannot run): the kernel
        # checks the value it receives (TORCH_CHECK_VALUE), only not in the trace
        return isinstance(value, (int, float, torch.SymInt, torch.SymFloat)) and not isinstance(value, bool)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_finite(value: float, op: str, arg: str) -> None:
    if not is_finite_number(value):
        raise ValueError(f"{op}: {arg} must be a finite number, got {value!r}")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the references: float64 stays float64, the rest use float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
