"""fastsr.ops.ssim / fastsr.nn.SSIMLoss: parity with pytorch-msssim and the reference,
forward and backward, every layout and dtype, the op contract (opcheck, compile) and
bad inputs.

Tolerances (fp32): the forward is the mean of many map values each with an error of a
few ulp, so 1e-5 absolute (the issue's bar) holds with room. The gradients come from
sigma = E[x^2] - mu^2, which loses up to log2(E[x^2] / C2) <= log2(1 / 9e-4) ~ 10 bits to
cancellation for [0, 1] images (flat bright regions): 2^10 * 6e-8 ~ 6e-5 of the gradient's
scale. Hence gradients within ``6e-5 * max|grad|`` of the float64 truth, and within twice
that of pytorch-msssim (which has the same error on its side).
"""
from __future__ import annotations

import math

import pytest
import torch

import fastsr
from fastsr.ops import ssim, ssim_reference

pytorch_msssim = pytest.importorskip("pytorch_msssim")

SHAPES = [(1, 1, 11, 11), (2, 3, 13, 29), (1, 3, 17, 12), (3, 1, 23, 19), (16, 3, 16, 16)]


def _pair(shape, dtype=torch.float32, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def _msssim(x, y, data_range=1.0):
    return pytorch_msssim.ssim(x, y, data_range=data_range, size_average=False, win_size=11,
                               nonnegative_ssim=False)


def _grads(fn, x, y, w, wrt_y=True):
    xg = x.detach().clone().requires_grad_()
    yg = y.detach().clone().requires_grad_(wrt_y)
    out = fn(xg, yg)
    (out * w).sum().backward()
    return out.detach(), xg.grad, (yg.grad if wrt_y else None)


GRAD_REL = 6e-5  # see the module docstring


def _close_grad(actual, expected, rel=GRAD_REL):
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * expected.abs().max().item())


# ---- values and gradients vs pytorch-msssim ------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_pytorch_msssim_fp32(shape):
    x, y = _pair(shape)
    w = torch.randn(shape[0], generator=torch.Generator().manual_seed(1))
    v, dx, dy = _grads(ssim, x, y, w)
    v_ref, dx_ref, dy_ref = _grads(_msssim, x, y, w)
    assert v.shape == (shape[0],) and v.dtype == torch.float32
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-5)
    _close_grad(dx, dx_ref, 2 * GRAD_REL)
    _close_grad(dy, dy_ref, 2 * GRAD_REL)
    _check_against_float64_truth(x, y, w, v, dx, dy)


def _check_against_float64_truth(x, y, w, v, dx, dy):
    v64, dx64, dy64 = _grads(ssim_reference, x.double(), y.double(), w.double())
    torch.testing.assert_close(v.double(), v64, rtol=0, atol=1e-6)
    _close_grad(dx.double(), dx64)
    _close_grad(dy.double(), dy64)


@pytest.mark.parametrize("shape", [(1, 1, 11, 11), (2, 3, 13, 29)])
def test_reference_matches_pytorch_msssim(shape):
    x, y = _pair(shape)
    torch.testing.assert_close(ssim_reference(x, y), _msssim(x, y), rtol=0, atol=1e-6)


def test_identical_images_give_one():
    x, _ = _pair((2, 3, 15, 16))
    torch.testing.assert_close(ssim(x, x), torch.ones(2), rtol=0, atol=1e-6)


def test_real_photograph_with_noise():
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.astronaut()[100:164, 150:230].copy()).permute(2, 0, 1)
    hr = img.unsqueeze(0).float() / 255.0
    g = torch.Generator().manual_seed(3)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    w = torch.ones(1)
    v, dx, dy = _grads(ssim, sr, hr, w)
    v_ref, dx_ref, dy_ref = _grads(_msssim, sr, hr, w)
    assert 0.3 < v.item() < 0.95  # a noisy but recognisable image
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-5)
    _close_grad(dx, dx_ref, 2 * GRAD_REL)
    _close_grad(dy, dy_ref, 2 * GRAD_REL)
    _check_against_float64_truth(sr, hr, w, v, dx, dy)
    # 8-bit range, float64: what the SR papers' tables (and fastsr.metrics) compute
    v255 = ssim(sr.double() * 255, hr.double() * 255, data_range=255.0)
    torch.testing.assert_close(v255, ssim_reference(sr.double() * 255, hr.double() * 255, 255.0),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(v255.float(), v_ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("params", [dict(window_size=7, sigma=1.0), dict(k1=0.02, k2=0.05, data_range=2.0)])
def test_other_parameters_match_reference(params):
    x, y = _pair((2, 2, 14, 15))
    w = torch.randn(2, generator=torch.Generator().manual_seed(1))
    v, dx, dy = _grads(lambda a, b: ssim(a, b, **params), x, y, w)
    v_ref, dx_ref, dy_ref = _grads(lambda a, b: ssim_reference(a, b, **params), x, y, w)
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-5)
    _close_grad(dx, dx_ref)
    _close_grad(dy, dy_ref)


def test_large_window_falls_back_to_reference():
    x, y = _pair((1, 1, 65, 66))
    torch.testing.assert_close(ssim(x, y, window_size=65, sigma=8.0),
                               ssim_reference(x, y, window_size=65, sigma=8.0))


# ---- float64: exactness and gradcheck of the C++ kernel ---------------------------------
def test_float64_matches_reference_tightly():
    x, y = _pair((2, 3, 13, 29), torch.float64)
    w = torch.randn(2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v, dx, dy = _grads(ssim, x, y, w)
    v_ref, dx_ref, dy_ref = _grads(ssim_reference, x, y, w)
    assert v.dtype == torch.float64
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-12)
    _close_grad(dx, dx_ref, rel=1e-10)
    _close_grad(dy, dy_ref, rel=1e-10)


@pytest.mark.parametrize("shape,wrt_y", [((1, 1, 13, 14), True), ((2, 2, 12, 11), False)])
def test_gradcheck_float64(shape, wrt_y):
    x, y = _pair(shape, torch.float64, noise=0.2)
    x.requires_grad_()
    y.requires_grad_(wrt_y)
    assert torch.autograd.gradcheck(lambda a, b: ssim(a, b), (x, y), eps=1e-6, atol=1e-8)


def test_gradient_for_y_only():
    x, y = _pair((2, 3, 13, 17))
    yg = y.clone().requires_grad_()
    ssim(x, yg).sum().backward()
    yr = y.clone().requires_grad_()
    ssim_reference(x, yr).sum().backward()
    _close_grad(yg.grad, yr.grad)


def test_gradient_outputs_only_when_asked():
    x, y = _pair((1, 2, 12, 12))
    x.requires_grad_()
    with torch.no_grad():
        v = ssim(x, y)
    assert not v.requires_grad
    op = torch.ops.fastsr.ssim
    v0, gx, gy = op(x.detach(), y, 1.0, 11, 1.5, 0.01, 0.03, False, False)
    assert gx.shape == gy.shape == (0,)
    v1, gx, gy = op(x.detach(), y, 1.0, 11, 1.5, 0.01, 0.03, True, False)
    assert gx.shape == x.shape and gx.dtype == torch.float32 and gy.shape == (0,)
    assert torch.equal(v0, v1)  # the value does not depend on the gradient being computed


def test_double_backward_is_refused():
    x, y = _pair((1, 1, 12, 12))
    x.requires_grad_()
    (g,) = torch.autograd.grad(ssim(x, y).sum(), x)  # first order: fine
    assert g.shape == x.shape
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(ssim(x, y).sum(), x, create_graph=True)
    # the reference supports it
    (g2,) = torch.autograd.grad(ssim(x, y, impl="reference").sum(), x, create_graph=True)
    assert g2.requires_grad


def test_op_called_without_gradient_outputs_says_so_in_backward():
    x, y = _pair((1, 1, 12, 12))
    x.requires_grad_()
    v, _, _ = torch.ops.fastsr.ssim(x, y, 1.0, 11, 1.5, 0.01, 0.03, False, False)
    with pytest.raises(RuntimeError, match="computed no gradient"):
        v.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_returns_the_gradient_of_each_image(dtype):
    # fastsr::ssim's gradient outputs are d ssim[n] / d x[n] and d ssim[n] / d y[n]: the
    # gradient of sum(ssim) through the reference.
    x, y = _pair((2, 3, 23, 19), dtype)
    _, gx, gy = torch.ops.fastsr.ssim(x, y, 1.0, 11, 1.5, 0.01, 0.03, True, True)
    _, dx_ref, dy_ref = _grads(ssim_reference, x.double(), y.double(), torch.ones(2, dtype=torch.float64))
    rel = 1e-12 if dtype == torch.float64 else GRAD_REL
    _close_grad(gx.double(), dx_ref, rel)
    _close_grad(gy.double(), dy_ref, rel)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 1, 70, 40), (1, 3, 64, 23), (3, 1, 50, 30), (5, 2, 47, 12)])
def test_row_tiles_match_whole_planes(shape, threads):
    # The kernel splits planes into row tiles by thread count (a gradient tile recomputes
    # the map rows above it); every tiling must give the one-thread result bitwise.
    x, y = _pair(shape)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = torch.ops.fastsr.ssim(x, y, 1.0, 11, 1.5, 0.01, 0.03, True, True)
        torch.set_num_threads(threads)
        out = torch.ops.fastsr.ssim(x, y, 1.0, 11, 1.5, 0.01, 0.03, True, True)
        out_nograd = torch.ops.fastsr.ssim(x, y, 1.0, 11, 1.5, 0.01, 0.03, False, False)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(ref, out):
        assert torch.equal(a, b)
    assert torch.equal(out_nograd[0], ref[0])


def test_deterministic_across_thread_counts():
    x, y = _pair((2, 3, 70, 40))
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(_grads(ssim, x, y, torch.ones(2)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(a, b)


# ---- layouts ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["channels_last", "noncontiguous", "mixed"])
def test_layouts(layout):
    x, y = _pair((2, 3, 14, 19))
    if layout == "channels_last":
        xa, ya = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    elif layout == "noncontiguous":
        xa = torch.cat([x, torch.zeros_like(x)], dim=1)[:, :3]  # a channel slice
        ya = y.transpose(2, 3).contiguous().transpose(2, 3)     # H and W strides swapped
        assert not xa.is_contiguous() and not ya.is_contiguous()
    else:
        xa, ya = x.contiguous(memory_format=torch.channels_last), y
    assert torch.equal(xa, x) and torch.equal(ya, y)
    xg, yg = xa.detach().requires_grad_(), ya.detach().requires_grad_()
    v = ssim(xg, yg)
    v.sum().backward()
    v_ref, dx_ref, dy_ref = _grads(ssim_reference, x, y, torch.ones(2))
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-5)
    _close_grad(xg.grad, dx_ref)
    _close_grad(yg.grad, dy_ref)
    if layout in ("channels_last", "mixed"):
        assert xg.grad.is_contiguous(memory_format=torch.channels_last)


def test_strided_views_read_in_place():
    x, y = _pair((2, 3, 14, 38))
    xs, ys = x[..., ::2], y[..., 1::2]  # W stride 2, no copy
    v = ssim(xs, ys)
    torch.testing.assert_close(v, ssim_reference(xs.contiguous(), ys.contiguous()), rtol=0, atol=1e-6)


# ---- bfloat16 -------------------------------------------------------------------------------
def test_bfloat16():
    # bf16 inputs are widened exactly and computed in fp32, and each result is rounded to
    # bf16 once: compare with fp32 on the same (bf16-representable) inputs, within half
    # a bf16 ulp (2^-9 relative) plus the fp32 tolerance.
    x, y = _pair((2, 3, 16, 21), torch.bfloat16)
    w = torch.tensor([1.0, -0.5], dtype=torch.bfloat16)
    v, dx, dy = _grads(ssim, x, y, w)
    v32, dx32, dy32 = _grads(ssim, x.float(), y.float(), w.float())
    assert v.dtype == dx.dtype == dy.dtype == torch.bfloat16
    torch.testing.assert_close(v.float(), v32, rtol=2**-8, atol=1e-5)
    torch.testing.assert_close(dx.float(), dx32, rtol=2**-8, atol=2e-5 * dx32.abs().max().item())
    torch.testing.assert_close(dy.float(), dy32, rtol=2**-8, atol=2e-5 * dy32.abs().max().item())


# ---- the op contract ------------------------------------------------------------------------
def test_opcheck_forward():
    x, y = _pair((2, 2, 12, 13))
    for gx, gy in [(False, False), (True, False), (False, True), (True, True)]:
        args = (x.clone().requires_grad_(gx), y.clone().requires_grad_(gy), 1.0, 11, 1.5, 0.01, 0.03, gx, gy)
        torch.library.opcheck(torch.ops.fastsr.ssim.default, args)


def test_opcheck_channels_last_and_bf16():
    x, y = _pair((2, 2, 12, 13), torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    args = (x.clone().requires_grad_(), y.clone().requires_grad_(), 1.0, 11, 1.5, 0.01, 0.03, True, True)
    torch.library.opcheck(torch.ops.fastsr.ssim.default, args)


def test_compile_fullgraph():
    torch._dynamo.reset()

    def loss_fn(a, b):
        return (1 - ssim(a, b)).mean()

    compiled = torch.compile(loss_fn, fullgraph=True)
    x, y = _pair((2, 3, 13, 17))
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    le, lc = loss_fn(xe, y), compiled(xc, y)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(xc.grad, xe.grad)


# ---- SSIMLoss ------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ssim_loss_module(reduction):
    x, y = _pair((3, 3, 13, 14))
    fused = fastsr.nn.SSIMLoss(reduction=reduction)
    plain = fastsr.nn.SSIMLoss(reduction=reduction, fused=False)
    expected = 1 - _msssim(x, y)
    expected = {"mean": expected.mean(), "sum": expected.sum(), "none": expected}[reduction]
    xf, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    lf, lp = fused(xf, y), plain(xp, y)
    torch.testing.assert_close(lf, expected, rtol=0, atol=1e-5 * (3 if reduction == "sum" else 1))
    torch.testing.assert_close(lp, expected, rtol=0, atol=1e-5 * (3 if reduction == "sum" else 1))
    lf.sum().backward()
    lp.sum().backward()
    _close_grad(xf.grad, xp.grad)
    assert fused.state_dict() == {} == plain.state_dict()


def test_ssim_loss_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        fastsr.nn.SSIMLoss(reduction="avg")
    with pytest.raises(ValueError, match="window_size"):
        fastsr.nn.SSIMLoss(window_size=10)
    with pytest.raises(ValueError, match="data_range"):
        fastsr.nn.SSIMLoss(data_range=float("inf"))


# ---- bad inputs ----------------------------------------------------------------------------
def _bad_cases():
    x, y = _pair((1, 3, 16, 16))
    return [
        ("smaller than the window", ValueError, "window_size", (x[..., :10, :], y[..., :10, :]), {}),
        ("narrower than the window", ValueError, "window_size", (x[..., :10], y[..., :10]), {}),
        ("nan data_range", ValueError, "data_range", (x, y), dict(data_range=float("nan"))),
        ("inf data_range", ValueError, "data_range", (x, y), dict(data_range=float("inf"))),
        ("zero data_range", ValueError, "data_range", (x, y), dict(data_range=0.0)),
        ("negative data_range", ValueError, "data_range", (x, y), dict(data_range=-1.0)),
        ("even window", ValueError, "window_size", (x, y), dict(window_size=10)),
        ("zero window", ValueError, "window_size", (x, y), dict(window_size=0)),
        ("float window", TypeError, "window_size", (x, y), dict(window_size=11.0)),
        ("bad sigma", ValueError, "sigma", (x, y), dict(sigma=0.0)),
        ("bad k2", ValueError, "k2", (x, y), dict(k2=-0.03)),
        ("shape mismatch", ValueError, "shape", (x, y[:, :2]), {}),
        ("dtype mismatch", TypeError, "dtype", (x, y.double()), {}),
        ("int dtype", TypeError, "x must be one of", ((x * 255).to(torch.uint8), (y * 255).to(torch.uint8)), {}),
        ("3-D", ValueError, "4-D", (x[0], y[0]), {}),
        ("5-D", ValueError, "4-D", (x[None], y[None]), {}),
        ("not a tensor", TypeError, "y must be a torch.Tensor", (x, y.numpy()), {}),
        ("no channels", ValueError, "channel", (x[:, :0], y[:, :0]), {}),
        ("unknown impl", ValueError, "impl", (x, y), dict(impl="cuda")),
    ]


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_inputs(case, impl):
    _, exc, match, args, kwargs = case
    kwargs = {"impl": impl, **kwargs}
    with pytest.raises(exc, match=match):
        ssim(*args, **kwargs)


def test_device_mismatch():
    x, y = _pair((1, 1, 12, 12))
    with pytest.raises(ValueError, match="device"):
        ssim(x, y.to("meta"))


def test_cpp_op_checks_before_memory_access():
    x, y = _pair((1, 1, 16, 16))
    op = torch.ops.fastsr
    with pytest.raises(ValueError, match="window_size"):
        op.ssim(x[..., :8, :], y[..., :8, :], 1.0, 11, 1.5, 0.01, 0.03, False, False)
    with pytest.raises(ValueError, match="window_size"):
        op.ssim(x, y, 1.0, 12, 1.5, 0.01, 0.03, False, False)
    with pytest.raises(ValueError, match="data_range"):
        op.ssim(x, y, math.nan, 11, 1.5, 0.01, 0.03, False, False)
    with pytest.raises(TypeError, match="dtype"):
        op.ssim(x, y.double(), 1.0, 11, 1.5, 0.01, 0.03, False, False)
    with pytest.raises(ValueError, match="shape"):
        op.ssim(x, y[..., :15], 1.0, 11, 1.5, 0.01, 0.03, True, True)
    with pytest.raises(ValueError, match="sigma"):
        op.ssim(x, y, 1.0, 11, 0.0, 0.01, 0.03, True, False)


def test_empty_batch():
    x, y = _pair((0, 3, 12, 12))
    assert ssim(x, y).shape == (0,)
    assert ssim_reference(x, y).shape == (0,)


# ---- Triton kernels (TRITON_INTERPRET=1 on CPU; compared with the C++ kernel) ---------------
@pytest.mark.triton
@pytest.mark.parametrize(
    "shape,dtype,grad_x,grad_y,layout",
    [
        ((1, 2, 13, 20), torch.float32, True, True, "channels_last"),
        ((2, 1, 12, 11), torch.float64, False, True, "noncontiguous"),
        ((1, 1, 14, 12), torch.bfloat16, True, False, "contiguous"),
    ],
)
def test_triton_kernels_match_cpp(shape, dtype, grad_x, grad_y, layout):
    pytest.importorskip("triton")
    from fastsr.kernels import ssim as k

    x, y = _pair(shape, dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "noncontiguous":
        y = y.transpose(2, 3).contiguous().transpose(2, 3)
    args = (1.0, 11, 1.5, 0.01, 0.03, grad_x, grad_y)
    v, dx, dy = k.ssim_forward(x, y, *args)
    v_cpp, dx_cpp, dy_cpp = torch.ops.fastsr.ssim(x, y, *args)
    assert v.dtype == v_cpp.dtype == dtype
    if dtype == torch.float64:
        tol = dict(rtol=0, atol=1e-12)
    else:  # the two kernels round differently in fp32; a bf16 value may then differ by 1 ulp
        tol = dict(rtol=0, atol=1e-6) if dtype == torch.float32 else dict(rtol=2**-7, atol=1e-6)
    torch.testing.assert_close(v.double(), v_cpp.double(), **tol)
    for d, d_cpp, wanted, src in ((dx, dx_cpp, grad_x, x), (dy, dy_cpp, grad_y, y)):
        assert d.dtype == d_cpp.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        if not wanted:
            assert d.numel() == 0 and d_cpp.numel() == 0
            continue
        assert d.shape == src.shape
        _close_grad(d, d_cpp, 1e-12 if dtype == torch.float64 else GRAD_REL)
    if layout == "channels_last" and grad_x:
        assert dx.is_contiguous(memory_format=torch.channels_last)
        assert dx_cpp.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.triton
def test_triton_bad_inputs():
    pytest.importorskip("triton")
    from fastsr.kernels import ssim as k

    x, y = _pair((1, 1, 12, 12))
    with pytest.raises(ValueError, match="window_size"):
        k.ssim_forward(x[..., :9], y[..., :9], 1.0, 11, 1.5, 0.01, 0.03, False, False)
    with pytest.raises(ValueError, match="data_range"):
        k.ssim_forward(x, y, float("inf"), 11, 1.5, 0.01, 0.03, False, False)


_ISA_CHECK = """
import torch
from fastsr.ops import ssim, ssim_reference
torch.manual_seed(0)
worst = 0.0
for shape, dtype in (((2, 3, 37, 45), torch.float32), ((1, 2, 23, 70), torch.float64), ((1, 3, 40, 33), torch.bfloat16)):
    x = torch.rand(shape, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(shape, dtype=torch.float64)).clamp(0, 1)
    xa, ya = x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_()
    xr, yr = x.to(dtype).double().requires_grad_(), y.to(dtype).double().requires_grad_()
    a, r = ssim(xa, ya), ssim_reference(xr, yr)
    (ga, gb), (gr, gs) = torch.autograd.grad(a.sum(), (xa, ya)), torch.autograd.grad(r.sum(), (xr, yr))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    for u, v in ((a, r), (ga, gr), (gb, gs)):
        err = ((u.double() - v).abs().max() / v.abs().max()).item()
        assert err < tol, (shape, dtype, err)
print("ok")
"""


@pytest.mark.parametrize("isa", ["1", "3"])
def test_narrower_isa_builds_match_reference(isa):
    """The baseline (16-byte vectors) and AVX2 (32-byte) builds of the CPU kernel, whichever
    this machine picks by itself, against the float64 reference, forward and both gradients."""
    import os
    import subprocess
    import sys

    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("per-ISA builds exist on x86-64 Linux only")
    if isa == "3" and not _cpu_has_avx2():
        pytest.skip("this CPU has no AVX2")
    p = subprocess.run([sys.executable, "-c", _ISA_CHECK], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "FASTSR_SSIM_ISA": isa, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout + p.stderr


def _cpu_has_avx2() -> bool:
    try:
        return " avx2 " in open("/proc/cpuinfo").read().replace("\n", " ")
    except OSError:
        return False
