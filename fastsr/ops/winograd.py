"""3x3 convolution + epilogue by Winograd's minimal filtering F(2x2, 3x3), for CPU inference.

    y = act(conv3x3(x, weight, padding=1) + bias) + residual,   act: none | relu | leaky_relu | prelu

Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks": each 2x2 output block
is ``A^T [(G g G^T) . (B^T d B)] A`` of a 4x4 input tile ``d``, 16 multiplications per block
and channel pair instead of 36 (2.25x fewer). The SR generators' 3x3 convolutions at 64
channels are compute-bound on a CPU (oneDNN's direct convolution runs at the core's peak),
so fewer multiplications is what makes them faster; the bias, the activation and the
residual add are applied to the fp32 result in the same pass (one rounding).

Numerics: the transformed weight and input are rounded to the input dtype, the products are
accumulated in fp32. In fp32 the error against the direct convolution is about 1e-6 of the
output scale (direct: 1e-7); in bf16 about 1.4x the direct bf16 convolution's RMS error.

Kernel: C++ ``csrc/cpu/winograd.cpp`` (AVX512-BF16 for bf16; AVX-512, else AVX2 + FMA, for
fp32; see :func:`winograd_supported`); :func:`winograd_conv3x3_reference` (plain PyTorch, the same
algorithm; fallback and test oracle). Inference only: no autograd. CPU only.

Training: :func:`conv3x3_winograd` is the differentiable 3x3 convolution (plain weight,
transformed per call) that the fused layers use on CPUs where this kernel is the faster
algorithm: forward and input gradient on this kernel, the weight gradient in the float32
Winograd domain (``fastsr::winograd_conv3x3_wgrad``, bf16 operands widened to float32:
:func:`winograd_bf16_weight_grad`), double backward oneDNN's.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from fastsr.ops import _common

__all__ = ["winograd_conv3x3", "winograd_conv3x3_reference", "winograd_weight", "winograd_supported",
           "winograd_preferred", "winograd_eligible", "winograd_tile", "WINOGRAD_ACTS", "conv3x3_winograd",
           "conv3x3_winograd_supported", "winograd_bf16_weight_grad", "BF16_WEIGHT_GRADS"]

_OP = "fastsr.ops.winograd_conv3x3"
#: activation name -> the kernel's code
WINOGRAD_ACTS = {"none": 0, "relu": 1, "leaky_relu": 2, "prelu": 3}

#: output tile side -> (B^T, G, A^T) of F(tile x tile, 3x3), Lavin & Gray's matrices
_MATRICES = {
    2: (torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64),
        torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64),
        torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)),
    4: (torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                      [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64),
        torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                      [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64),
        torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                     dtype=torch.float64)),
}
#: output tile side -> (G x G)^T as nested lists, (9, (tile + 2)^2): vec(dW) = (G x G)^T vec(dU)
_KRON_G_T = {t: torch.kron(m[1], m[1]).t().tolist() for t, m in _MATRICES.items()}
#: number of transformed components -> output tile side
_TILE_OF = {16: 2, 36: 4}


def _cpu_features() -> tuple[bool, bool, bool]:
    capability = torch.backends.cpu.get_cpu_capability()  # ATen's: AVX2 means AVX2 + FMA
    avx512 = capability == "AVX512"
    fn = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return avx512, bool(avx512 and fn is not None and fn()), avx512 or capability == "AVX2"


_AVX512, _AVX512_BF16, _AVX2 = _cpu_features()
_AMX = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def winograd_supported(dtype: torch.dtype) -> bool:
    """Whether this CPU runs the C++ kernel for ``dtype``: float32 needs AVX2 + FMA (an
    AVX-512 body where the CPU has it), bfloat16 AVX512-BF16 (elsewhere
    :func:`winograd_conv3x3` runs the reference, which is slower than a direct convolution).
    ``FASTSR_WINOGRAD_ISA=avx2`` makes an AVX-512 CPU run the AVX2 body (for tests)."""
    return _AVX512_BF16 if dtype == torch.bfloat16 else dtype == torch.float32 and _AVX2


def winograd_preferred(dtype: torch.dtype) -> bool:
    """Whether :class:`fastsr.nn.PackedConv2d` runs eligible convolutions of ``dtype`` with
    this kernel by default: where it is supported, except bf16 on CPUs with AMX. Measured
    on a Zen 4 core (AVX512-BF16, no AMX) the kernel is 1.7x oneDNN's direct convolution in
    bf16 and fp32; with AMX oneDNN's bf16 convolutions run on the tile units, about 3.5x the
    Zen 4 speed (eager bf16 SRVGGNetCompact at 128 px: 58 ms on a Sapphire Rapids core, 204 ms
    on the Zen 4), beyond what this AVX-512 kernel reaches, so there bf16 stays with oneDNN
    (not measured on an AMX machine yet; fp32 has no AMX path and keeps the kernel)."""
    return winograd_supported(dtype) and not (dtype == torch.bfloat16 and _AMX)


def winograd_tile(dtype: torch.dtype) -> int:
    """The output tile side :func:`winograd_weight` uses by default for ``dtype``: 4
    (F(4x4, 3x3)) for float32, 2 (F(2x2, 3x3)) for bfloat16."""
    return 4 if dtype == torch.float32 else 2


def winograd_eligible(conv: torch.nn.Conv2d) -> bool:
    """Whether ``conv`` is a convolution this op computes: 3x3, stride 1, padding 1, no
    dilation or groups, zero padding, input and output channels multiples of 16."""
    return (tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and conv.in_channels % 16 == 0 and conv.out_channels % 16 == 0)


def winograd_weight(weight: torch.Tensor, dtype: torch.dtype | None = None, tile: int | None = None) -> torch.Tensor:
    """The transformed weight ``G g G^T`` of a (K, C, 3, 3) convolution weight for
    F(tile x tile, 3x3), computed in float64 and rounded once to ``dtype`` (default: the
    weight's), laid out for the kernel: float32 (tile + 2)^2 x (C, K), i.e. (16, C, K) or
    (36, C, K); bfloat16 (16, C / 2, K, 2), input-channel pairs innermost.

    Args:
        tile: output tile side, 2 (F(2x2, 3x3), 2.25x fewer multiplications than direct) or 4
            (F(4x4, 3x3), 4x fewer; float32 only: its transforms' larger coefficients cost
            bf16 too much accuracy). Default: 4 for float32, 2 for bfloat16.

    Raises:
        ValueError: ``weight`` is not (K, C, 3, 3) with C and K multiples of 16, or ``tile``
            is not 2 or 4 (4 with bfloat16).
        TypeError: ``dtype`` is not float32 or bfloat16.
    """
    dtype = weight.dtype if dtype is None else dtype
    if dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"winograd_weight: dtype must be float32 or bfloat16, got {dtype}")
    tile = winograd_tile(dtype) if tile is None else tile
    if tile not in _MATRICES or (tile == 4 and dtype == torch.bfloat16):
        raise ValueError(f"winograd_weight: tile must be 2 or 4 (2 for bfloat16), got {tile!r} for {dtype}")
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3) or weight.shape[0] % 16 or weight.shape[1] % 16:
        raise ValueError(f"winograd_weight: weight must be (K, C, 3, 3) with C and K multiples of 16, got "
                         f"{tuple(weight.shape)}")
    k, c = weight.shape[:2]
    g = _MATRICES[tile][1].to(weight.device)
    u = torch.einsum("ij,kcjl,ml->imck", g, weight.detach().double(), g).reshape((tile + 2) ** 2, c, k)
    return _kernel_layout(u, dtype)


def _kernel_layout(u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """((tile + 2)^2, C, K) transformed weight -> the kernel's layout in ``dtype`` (see
    :func:`winograd_weight`)."""
    if dtype == torch.float32:
        return u.float().contiguous()
    c, k = u.shape[1:]
    return u.reshape(16, c // 2, 2, k).permute(0, 1, 3, 2).contiguous().to(dtype)


def _training_weight(weight: torch.Tensor) -> torch.Tensor:
    """:func:`winograd_weight` for a weight that changes every iteration: the transform in
    float32 matmuls (about 1e-7 relative rounding, far below the algorithm's own error)
    instead of float64, about 10x faster."""
    tile = winograd_tile(weight.dtype)
    k, c = weight.shape[:2]
    g = _MATRICES[tile][1]
    gg = torch.kron(g, g).to(weight.device, torch.float32)  # (side^2, 9): vec(G g G^T) = (G x G) vec(g)
    u = torch.mm(gg, weight.detach().float().reshape(k * c, 9).t())  # (side^2, K * C)
    return _kernel_layout(u.reshape(-1, k, c).transpose(1, 2), weight.dtype)


def _unpack(u: torch.Tensor) -> torch.Tensor:
    """((tile + 2)^2, C, K) float64 from either layout of :func:`winograd_weight`."""
    if u.dim() == 4:
        return u.permute(0, 1, 3, 2).reshape(16, -1, u.shape[2]).double()
    return u.double()


def _check(x, u, bias, act, prelu_weight, residual, op):
    _common.check_activation(x, op, dtypes=(torch.float32, torch.bfloat16))
    if not isinstance(u, torch.Tensor) or u.dtype != x.dtype:
        raise TypeError(f"{op}: weight must be a tensor of the dtype of x ({x.dtype}) from winograd_weight")
    c = x.shape[1]
    ok = (u.dim() == 4 and u.shape[0] == 16 and 2 * u.shape[1] == c and u.shape[3] == 2) if x.dtype == torch.bfloat16 \
        else (u.dim() == 3 and u.shape[0] in _TILE_OF and u.shape[1] == c)
    if not ok or c % 16 or u.shape[2] % 16:
        raise ValueError(f"{op}: weight must be the Winograd-transformed weight (winograd_weight) of {c} input "
                         f"channels, both channel counts multiples of 16, got shape {tuple(u.shape)}")
    if act not in WINOGRAD_ACTS:
        raise ValueError(f"{op}: act must be one of {tuple(WINOGRAD_ACTS)}, got {act!r}")
    if act == "prelu" and prelu_weight is None:
        raise ValueError(f"{op}: act 'prelu' needs prelu_weight")
    k = u.shape[2]
    for name, p in (("bias", bias), ("prelu_weight", prelu_weight)):
        if p is not None and (p.dim() != 1 or p.shape[0] != k):
            raise ValueError(f"{op}: {name} must be 1-D with {k} elements, got shape {tuple(p.shape)}")
    if residual is not None and tuple(residual.shape) != (x.shape[0], k, *x.shape[2:]):
        raise ValueError(f"{op}: residual must have the output shape {(x.shape[0], k, *x.shape[2:])}, "
                         f"got {tuple(residual.shape)}")


def winograd_conv3x3_reference(x, weight, bias=None, act="none", slope=0.0, prelu_weight=None, residual=None):
    """Plain-PyTorch F(2x2, 3x3) or F(4x4, 3x3) (by the weight's layout) of
    :func:`winograd_conv3x3` (same arguments and errors): the transformed input rounded to
    ``x.dtype`` as the kernel stores it, the rest in float64, rounded once to ``x.dtype``."""
    _check(x, weight, bias, act, prelu_weight, residual, _OP)
    n, c, h, w = x.shape
    tile = _TILE_OF[weight.shape[0]]
    side = tile + 2
    ht, wt = -(-h // tile), -(-w // tile)
    bt, _, at = (m.to(x.device) for m in _MATRICES[tile])
    xp = F.pad(x.double(), (1, 1 + tile * wt - w, 1, 1 + tile * ht - h))
    tiles = xp.unfold(2, side, tile).unfold(3, side, tile)  # (N, C, Ht, Wt, side, side)
    v = torch.einsum("ij,nctujk,lk->nctuil", bt, tiles, bt).to(x.dtype).double()
    m = torch.einsum("nctuij,ijck->nktuij", v, _unpack(weight).reshape(side, side, c, -1))
    y = torch.einsum("ij,nktujl,ml->nktuim", at, m, at).permute(0, 1, 2, 4, 3, 5)
    y = y.reshape(n, -1, tile * ht, tile * wt)[:, :, :h, :w]
    if bias is not None:
        y = y + bias.double().view(1, -1, 1, 1)
    if act == "relu":
        y = F.relu(y)
    elif act == "leaky_relu":
        y = F.leaky_relu(y, slope)
    elif act == "prelu":
        y = F.prelu(y, prelu_weight.double())
    if residual is not None:
        y = y + residual.double()
    return y.to(x.dtype).contiguous(memory_format=torch.channels_last)


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, act: str = "none",
                     slope: float = 0.0, prelu_weight: torch.Tensor | None = None,
                     residual: torch.Tensor | None = None, *, impl: str = "auto") -> torch.Tensor:
    """``act(conv3x3(x) + bias) + residual`` (padding 1, stride 1) by Winograd F(2x2, 3x3).

    Args:
        x: (N, C, H, W) float32 or bfloat16 CPU tensor, C a multiple of 16; any layout
            (the kernel reads channels_last; other layouts are copied first).
        weight: :func:`winograd_weight` of the (K, C, 3, 3) convolution weight, x's dtype.
        bias: (K,) or None (float32 in the kernel).
        act: ``"none"``, ``"relu"``, ``"leaky_relu"`` (negative ``slope``) or ``"prelu"``
            (per-channel ``prelu_weight``, (K,)).
        residual: (N, K, H, W) added after the activation, or None.
        impl: ``"auto"`` (the C++ kernel where :func:`winograd_supported`) or ``"reference"``.

    Returns:
        (N, K, H, W) channels_last tensor of x's dtype. Not differentiable (inference only).

    Raises:
        ValueError: shapes that do not match, an unknown ``act`` or ``impl``, a tensor that
            requires grad, a device other than the CPU.
        TypeError: dtypes other than float32 / bfloat16, ``weight`` not of x's dtype.
    """
    _check(x, weight, bias, act, prelu_weight, residual, _OP)
    if x.device.type != "cpu":
        raise ValueError(f"{_OP}: x must be a CPU tensor, got {x.device}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bias, prelu_weight, residual)):
        raise ValueError(f"{_OP}: inference only -- no autograd; call it under torch.no_grad()")
    if _common.use_reference(impl, x, _OP) or not winograd_supported(x.dtype):
        return winograd_conv3x3_reference(x, weight, bias, act, slope, prelu_weight, residual)
    f32 = (lambda t: None if t is None else t.float())
    res = None if residual is None else residual.to(x.dtype).contiguous(memory_format=torch.channels_last)
    return torch.ops.fastsr.winograd_conv3x3(x.contiguous(memory_format=torch.channels_last), weight, f32(bias),
                                             WINOGRAD_ACTS[act], float(slope), f32(prelu_weight), res)


@torch.library.register_fake("fastsr::winograd_conv3x3")
def _winograd_conv3x3_fake(x, weight, bias, act, slope, prelu_weight, residual):
    k = weight.shape[2]
    return x.new_empty((x.shape[0], k, x.shape[2], x.shape[3])).contiguous(memory_format=torch.channels_last)


_TRAIN_OP = "fastsr.ops.conv3x3_winograd"
#: :func:`conv3x3_winograd` runs images with a side below this as the direct convolution: a
#: 1-3 pixel image (e.g. the WGAN critic's last 3x3 convolutions) fills one tile mostly with
#: padding, so Winograd computes more products than direct, and rounds differently for nothing
TRAIN_MIN_SIDE = 4

#: how :func:`conv3x3_winograd` computes a bfloat16 weight gradient: ``"winograd"`` widens x and
#: the output gradient to float32 and runs the float32 Winograd-domain gradient (F(4x4, 3x3): a
#: quarter of the direct products, at the float32 rate); ``"onednn"`` is oneDNN's direct bf16
#: gradient (all the products, at the bf16 rate, twice the float32 one on AVX512-BF16)
BF16_WEIGHT_GRADS = ("winograd", "onednn")
_bf16_wgrad = {"mode": os.environ.get("FASTSR_WINOGRAD_BF16_WGRAD", "winograd")}


def winograd_bf16_weight_grad(mode: str | None = None) -> str:
    """How :func:`conv3x3_winograd` computes the weight gradient of a bfloat16 convolution it
    ran on the Winograd kernel: ``"winograd"`` (the default; ``FASTSR_WINOGRAD_BF16_WGRAD`` in
    the environment sets the starting value) casts x and the output gradient to float32 (exact)
    and takes the float32 Winograd-domain gradient, F(4x4, 3x3) with float32 accumulation,
    rounded once to bf16 -- at least as accurate as oneDNN's, whose bf16 products are
    accumulated in float32 too; ``"onednn"`` is ``aten.convolution_backward`` in bf16. Pass
    ``mode`` to set it; returns the setting in force.

    Raises:
        ValueError: ``mode`` not one of :data:`BF16_WEIGHT_GRADS`, or an unknown value in
            ``FASTSR_WINOGRAD_BF16_WGRAD``.
    """
    if mode is not None:
        if mode not in BF16_WEIGHT_GRADS:
            raise ValueError(f"winograd_bf16_weight_grad: mode must be one of {BF16_WEIGHT_GRADS}, got {mode!r}")
        _bf16_wgrad["mode"] = mode
    if _bf16_wgrad["mode"] not in BF16_WEIGHT_GRADS:
        raise ValueError(f"FASTSR_WINOGRAD_BF16_WGRAD must be one of {BF16_WEIGHT_GRADS}, got "
                         f"{_bf16_wgrad['mode']!r}")
    return _bf16_wgrad["mode"]


def conv3x3_winograd_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3x3_winograd` runs ``x`` (N, C, H, W) with ``weight`` (K, C, 3, 3) on
    the Winograd kernel, and where it is the faster algorithm (:func:`winograd_preferred`):
    CPU, x's dtype float32 (AVX2 + FMA) or bfloat16 (AVX512-BF16, no AMX), C and K multiples
    of 16, H and W at least :data:`TRAIN_MIN_SIDE`. Elsewhere the op is the direct convolution."""
    return (x.device.type == "cpu" and x.dim() == 4 and weight.dim() == 4 and tuple(weight.shape[2:]) == (3, 3)
            and x.shape[1] == weight.shape[1] and x.shape[1] % 16 == 0 and weight.shape[0] % 16 == 0
            and min(x.shape[2], x.shape[3]) >= TRAIN_MIN_SIDE and weight.dtype == x.dtype
            and winograd_preferred(x.dtype))


def _conv3x3_direct(x, weight, bias):
    return F.conv2d(x, weight, bias, padding=1).contiguous(memory_format=torch.channels_last)


def _flip_transpose(weight: torch.Tensor) -> torch.Tensor:
    """The (C, K, 3, 3) weight whose convolution is the input gradient of ``weight``'s:
    dL/dx = conv3x3(dL/dy, rot180(W)^T), padding 1."""
    return weight.flip(2, 3).transpose(0, 1).contiguous()


@torch.library.custom_op("fastsr::conv3x3_winograd", mutates_args=(), device_types="cpu")
def _conv3x3_winograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if not conv3x3_winograd_supported(x, weight):
        return _conv3x3_direct(x, weight, bias)
    return torch.ops.fastsr.winograd_conv3x3(x.contiguous(memory_format=torch.channels_last),
                                             _training_weight(weight), None if bias is None else bias.float(),
                                             0, 0.0, None, None)


@_conv3x3_winograd.register_fake
def _conv3x3_winograd_fake(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3])).contiguous(
        memory_format=torch.channels_last)


def _conv3x3_winograd_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _conv3x3_winograd_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        # the input gradient is itself a 3x3 convolution: Winograd again
        grad_x = torch.ops.fastsr.conv3x3_winograd(grad, _flip_transpose(weight), None)
    want_w, want_b = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
    if want_w and not torch.is_grad_enabled() and conv3x3_winograd_supported(x, weight):
        # Winograd-domain weight gradient (not differentiable: under create_graph the ATen one below)
        if x.dtype == torch.float32:
            grad_w = _winograd_weight_grad(x, grad)
            want_w = False
        elif winograd_bf16_weight_grad() == "winograd" and winograd_supported(torch.float32):
            grad_w = _winograd_weight_grad(x.float(), grad.float()).to(x.dtype)
            want_w = False
    if want_w:
        _, grad_w, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])
    if want_b:
        # a sum over batch and pixels: asked of aten.convolution_backward alone, oneDNN computes
        # the whole weight gradient beside it (110 ms for a 64 -> 256 conv at 48 px, batch 16)
        grad_b = grad.sum((0, 2, 3), dtype=torch.promote_types(grad.dtype, torch.float32)).to(grad.dtype)
    return grad_x, grad_w, grad_b


def _winograd_weight_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """dL/dW (K, C, 3, 3) of the float32 3x3 convolution of ``x`` with output gradient ``grad``:
    the kernel's Winograd-domain gradient dU_i = V_i^T (A dy A^T)_i, then dW = G^T dU G."""
    tile = winograd_tile(torch.float32)
    cl = torch.channels_last
    du = torch.ops.fastsr.winograd_conv3x3_wgrad(x.contiguous(memory_format=cl), grad.contiguous(memory_format=cl),
                                                 tile)
    side2, c, k = du.shape
    # (9, side^2) = (G x G)^T, made here from Python numbers so that tracing (fake tensors) works
    ggt = torch.tensor(_KRON_G_T[tile], dtype=torch.float32, device=du.device)
    dw = torch.mm(ggt, du.reshape(side2, c * k))  # (9, C * K)
    return dw.reshape(3, 3, c, k).permute(3, 2, 0, 1).contiguous()


@torch.library.register_fake("fastsr::winograd_conv3x3_wgrad")
def _winograd_conv3x3_wgrad_fake(x, grad, tile):
    return x.new_empty(((tile + 2) ** 2, x.shape[1], grad.shape[1]))


_conv3x3_winograd.register_autograd(_conv3x3_winograd_backward, setup_context=_conv3x3_winograd_setup)


def conv3x3_winograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for training: differentiable, taking the
    plain (K, C, 3, 3) weight, which is transformed on each call (it changes every step).

    Forward and the input gradient (itself a 3x3 convolution, of the output gradient with
    the rotated, transposed weight) run on the Winograd kernel of :func:`winograd_conv3x3`,
    F(4x4, 3x3) in float32 and F(2x2, 3x3) in bfloat16, where
    :func:`conv3x3_winograd_supported`. The weight gradient is computed in the float32
    Winograd domain too (``fastsr::winograd_conv3x3_wgrad``: dU = V^T (A dy A^T) per component,
    dW = G^T dU G; bf16 operands widened to float32, see :func:`winograd_bf16_weight_grad`);
    the bias gradient is a sum over batch and pixels; weight gradients under ``create_graph``
    are oneDNN's (``aten.convolution_backward``). Elsewhere it is the direct convolution.
    Double backward works (WGAN-GP): under ``create_graph`` the backward is made of
    differentiable ops.

    Numerics: the Winograd error of :func:`winograd_conv3x3` (float32 F(4x4, 3x3): about
    5e-6 of the output scale, against 1e-7 for the direct convolution).

    Args:
        x: (N, C, H, W) float32 or bfloat16 CPU tensor, any layout.
        weight: (K, C, 3, 3), x's dtype.
        bias: (K,) or None, x's dtype.

    Returns:
        (N, K, H, W) channels_last, x's dtype.

    Raises:
        ValueError: shapes that do not match a 3x3 convolution with padding 1.
        TypeError: weight or bias not of x's dtype.
    """
    if x.dim() != 4 or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{_TRAIN_OP}: need x (N, C, H, W) and weight (K, C, 3, 3), got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(f"{_TRAIN_OP}: bias must be 1-D with {weight.shape[0]} elements, got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{_TRAIN_OP}: {name} must have x's dtype {x.dtype}, got {t.dtype}")
    return torch.ops.fastsr.conv3x3_winograd(x, weight, bias)
