"""SSIM: the structural similarity index of Wang et al. 2004 with a Gaussian window.

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 2004, eq. 13, with C1 = (k1 L)^2, C2 = (k2 L)^2, L the
data range, and the local statistics taken under an 11x11 circular-symmetric Gaussian
window with sigma 1.5 (their Sec. III-C):

    mu_x = G * x,  sigma_x^2 = G * x^2 - mu_x^2,  sigma_xy = G * (x y) - mu_x mu_y

G is separable (a 1-D normalised Gaussian along H, then along W) and applied as a 'valid'
filter (no padding): the SSIM map of an H x W image is (H - win + 1) x (W - win + 1). The
per-image SSIM is the mean of the map over all channels and positions. These are the
conventions of pytorch-msssim (``ssim(..., win_size=11, nonnegative_ssim=False,
size_average=False)``) and of BasicSR's ``calculate_ssim`` (which follows the MATLAB code
of the paper); the SR papers' SSIM tables use them.

Gradients. Write S(q) for the map at position q and ``(G^T * M)`` for the transposed
('full', zero-padded) filtering of a map M back to the image grid; G is symmetric, so G^T
is G itself. With  B = dS/dsigma_x^2 = dS/dsigma_y^2 = -S / (sigma_x^2 + sigma_y^2 + C2),
Cxy = dS/dsigma_xy,  A_x = dS/dmu_x - 2 mu_x B - mu_y Cxy  (and A_y likewise):

    dSSIM_n/dx = (G^T * A_x) + 2 x (G^T * B) + y (G^T * Cxy),   scaled by 1 / (C Ho Wo)

(the derivation of pytorch-msssim's autograd graph and of fused-ssim's backward, collected
into three -- four with dy -- maps). The per-image SSIM is a mean over its own image, so
its gradient is known up to one scalar per image before the backward runs: when an input
requires grad, the kernels compute d SSIM_n / dx in the forward (the moments, the maps
row by row and their transposed filtering in one pass over the image; the CPU kernel
never stores the maps) and the backward only scales it by the incoming gradient -- the
fused-loss pattern of Liger-Kernel's cross-entropy, and of :func:`fastsr.ops.l1_loss`.

Kernels: C++ ``csrc/cpu/ssim.cpp`` (CPU), Triton ``kernels/ssim.py`` (CUDA),
:func:`ssim_reference` (plain PyTorch; fallback and test oracle).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastsr.ops import _common

_OP = "fastsr.ops.ssim"
_MAX_WINDOW = 63  # the kernels' ring buffers hold at most 63 rows


def gaussian_window(window_size: int, sigma: float, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian ``g[i] ~ exp(-(i - window_size // 2)^2 / (2 sigma^2))``,
    shape (window_size,), summing to 1; computed in float64 and cast to ``dtype``."""
    coords = torch.arange(window_size, dtype=torch.float64) - window_size // 2
    g = torch.exp(-(coords**2) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Plain-PyTorch SSIM (grouped separable convolutions, as pytorch-msssim), computed in
    float32 (float64 for float64 input) and cast to ``x.dtype``. Same arguments, result and
    errors as :func:`ssim`."""
    _check(x, y, data_range, window_size, sigma, k1, k2, _OP)
    out_dtype, acc = x.dtype, _common.acc_dtype(x.dtype)
    x, y = x.to(acc), y.to(acc)
    C = x.shape[1]
    g = gaussian_window(window_size, sigma, acc, x.device)
    wh = g.view(1, 1, -1, 1).expand(C, 1, -1, 1)
    ww = g.view(1, 1, 1, -1).expand(C, 1, 1, -1)

    def blur(t):
        return F.conv2d(F.conv2d(t, wh, groups=C), ww, groups=C)

    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx = blur(x * x) - mu_xx
    sigma_yy = blur(y * y) - mu_yy
    sigma_xy = blur(x * y) - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * sigma_xy + c2)) / ((mu_xx + mu_yy + c1) * (sigma_xx + sigma_yy + c2))
    return ssim_map.flatten(1).mean(1).to(out_dtype)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Per-image SSIM with a Gaussian window ('valid' filtering), differentiable in both inputs.

    Args:
        x, y: (N, C, H, W) images of the same shape, dtype and device, with values in
            [0, ``data_range``] (any values are accepted; the constants assume that range).
            float32, bfloat16 or float64 on CPU (float16 too on CUDA); any strides
            (contiguous and channels_last are read in place). H and W must be at least
            ``window_size``.
        data_range: L, the dynamic range of the pixel values (1.0 for [0, 1] images, 255
            for 8-bit); finite and > 0.
        window_size: side of the Gaussian window, an odd integer (11 in the paper).
        sigma: standard deviation of the Gaussian in pixels, finite and > 0 (1.5).
        k1, k2: the stabilising constants, C1 = (k1 L)^2 and C2 = (k2 L)^2; finite and
            > 0 (0.01, 0.03).
        impl: ``"auto"`` (the C++ kernel on CPU, the CUDA kernel on CUDA) or ``"reference"`` (plain PyTorch).

    Returns:
        (N,) tensor of ``x.dtype``: the SSIM of each image, the mean of the SSIM map over
        channels and the (H - window_size + 1) x (W - window_size + 1) valid positions;
        1 for identical images, in [-1, 1]. bfloat16 inputs are computed in float32 and
        rounded once. Gradients flow to ``x`` and, when it requires grad, to ``y``: with
        grad enabled, the call computes d SSIM_n / dx (and / dy) at once and keeps it for the
        backward, one (N, C, H, W) float32 buffer per such input (float64 for float64
        input); the backward scales it. First-order gradients only (no double backward).

    Raises:
        ValueError: ``x``/``y`` not 4-D, different shapes or devices, zero channels, an image
            smaller than the window, an even or non-positive ``window_size``, a non-finite or
            non-positive ``data_range``/``sigma``/``k1``/``k2``, or an unknown ``impl``.
        TypeError: ``x`` or ``y`` not a tensor, an unsupported dtype, ``x`` and ``y`` of
            different dtypes, or a non-integer ``window_size``.

    Source: Wang et al. 2004, eq. 13 and Sec. III-C; pytorch-msssim / BasicSR conventions.
    """
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        _check(x, y, data_range, window_size, sigma, k1, k2, _OP)  # raises the reference's TypeError
    if _common.use_reference(impl, x, _OP) or (isinstance(window_size, int) and window_size > _MAX_WINDOW):
        # (windows wider than the kernels' ring buffers -- far beyond SSIM's 11 -- use the reference)
        return ssim_reference(x, y, data_range, window_size, sigma, k1, k2)
    _check(x, y, data_range, window_size, sigma, k1, k2, _OP)
    # The gradient is computed (in the forward, and kept) only for inputs that need one.
    grad = torch.is_grad_enabled()
    grad_x = grad and x.requires_grad
    grad_y = grad and y.requires_grad
    value, _, _ = torch.ops.fastsr.ssim(
        x, y, float(data_range), window_size, float(sigma), float(k1), float(k2), grad_x, grad_y
    )
    return value


def _check(x, y, data_range, window_size, sigma, k1, k2, op):
    _common.check_activation(x, op, "x")
    _common.check_same_as(y, x, op, "y")
    check_params(data_range, window_size, sigma, k1, k2, op)
    if x.shape[1] < 1:
        raise ValueError(f"{op}: x must have at least one channel, got shape {tuple(x.shape)}")
    H, W = x.shape[2], x.shape[3]
    if H < window_size or W < window_size:
        raise ValueError(
            f"{op}: images ({H}x{W}) must be at least window_size x window_size "
            f"({window_size}x{window_size}) for 'valid' filtering, got x of shape {tuple(x.shape)}"
        )


def check_params(data_range, window_size, sigma, k1, k2, op: str) -> None:
    """The scalar arguments of :func:`ssim`: ``window_size`` an odd int >= 1, the others finite
    and > 0. Raises TypeError/ValueError naming ``op`` and the argument."""
    if not isinstance(window_size, int) or isinstance(window_size, bool):
        raise TypeError(f"{op}: window_size must be an int, got {type(window_size).__name__}")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"{op}: window_size must be an odd integer >= 1, got {window_size}")
    for name, value in (("data_range", data_range), ("sigma", sigma), ("k1", k1), ("k2", k2)):
        _common.check_finite(value, op, name)
        if value <= 0:
            raise ValueError(f"{op}: {name} must be > 0, got {value!r}")


def _check_op(x, y, data_range, window_size, sigma, k1, k2, op):
    _check(x, y, data_range, window_size, sigma, k1, k2, op)
    if window_size > _MAX_WINDOW:
        raise ValueError(f"{op}: window_size must be an odd integer in [1, {_MAX_WINDOW}], got {window_size}")


def _grad_like(t: torch.Tensor, want: bool) -> torch.Tensor:
    """The gradient output of fastsr::ssim for input ``t``: t's shape and layout in the
    accumulation dtype, or an empty (0,) tensor when not asked for."""
    acc = _common.acc_dtype(t.dtype)
    if want:
        return torch.empty_like(t, dtype=acc, memory_format=_common.output_format(t))
    return t.new_empty((0,), dtype=acc)


@torch.library.register_fake("fastsr::ssim")
def _ssim_fake(x, y, data_range, window_size, sigma, k1, k2, grad_x, grad_y):
    _check_op(x, y, data_range, window_size, sigma, k1, k2, "fastsr::ssim")
    return x.new_empty((x.shape[0],)), _grad_like(x, grad_x), _grad_like(y, grad_y)


# Autograd: csrc/autograd/ssim.cpp (the backward scales the forward's gradient outputs by
# the incoming per-image gradient).
