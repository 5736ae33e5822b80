"""fastsr.ops.pixel_shuffle_prelu: C++ and Triton kernels against the plain-PyTorch reference.

Tolerances from the arithmetic: the forward and dx are one PReLU multiply of the same
float32 values in kernel and reference, rounded once to the storage dtype (round to nearest
even in both), so they must be bit-identical in float32 and bfloat16. dweight is a sum of
N*H*W*r*r products in another order: float32 gets a relative bound of (terms) * 2^-24
against the sum of |terms|; bfloat16 dweight is rounded once from float32 (one bf16 ulp,
2^-8 relative). Under TRITON_INTERPRET=1 the float -> bf16 conversion truncates instead of
rounding, so the Triton bf16 outputs are compared to one bf16 ulp (2^-7 relative).
"""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from fastsr.nn import UpsampleStage, Upsampler
from fastsr.ops import pixel_shuffle_prelu, pixel_shuffle_prelu_reference

OP = torch.ops.fastsr.pixel_shuffle_prelu
BWD = torch.ops.fastsr.pixel_shuffle_prelu_backward

# (N, C_out, H, W): odd sizes, 1- and 3-channel outputs, batch 1 and 16.
SHAPES = [(1, 1, 1, 1), (1, 3, 7, 33), (2, 3, 33, 7), (16, 1, 3, 5), (1, 64, 5, 3)]


def _make_input(shape, r, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    if layout == "noncontig":  # a strided slice along W: neither contiguous nor channels_last
        x = torch.randn(N, C * r * r, H, 2 * W, generator=g).to(dtype)[..., ::2]
    else:
        x = torch.randn(N, C * r * r, H, W, generator=g).to(dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    return x


def _weight(C, shared, dtype):
    # Slopes of both signs, like trained PReLUs (nn.PReLU starts at 0.25).
    n = 1 if shared else C
    return torch.linspace(-0.5, 0.75, n).to(dtype) if n > 1 else torch.tensor([0.3], dtype=dtype)


def _grads(fn, x, w, r, gout):
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    y = fn(x, w, r)
    dx, dw = torch.autograd.grad(y, (x, w), gout)
    return y, dx, dw


def _dweight_atol(x, gout, r, shared):
    """Bound of a float32 sum reordering: (terms) * 2^-24 * sum |terms|."""
    terms = (F.pixel_shuffle(x.double(), r) * gout.double()).abs()
    total = terms.sum() if shared else terms.sum(dim=(0, 2, 3)).max()
    return float(terms.numel() * 2.0**-24 * total) + 1e-12


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("r", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontig"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_parity_with_reference(shape, r, layout, shared, dtype):
    x = _make_input(shape, r, dtype, layout)
    w = _weight(shape[1], shared, dtype)
    gout = torch.randn(shape[0], shape[1], shape[2] * r, shape[3] * r, generator=torch.Generator().manual_seed(1))
    gout = gout.to(dtype)
    y, dx, dw = _grads(pixel_shuffle_prelu, x, w, r, gout)
    y_ref, dx_ref, dw_ref = _grads(pixel_shuffle_prelu_reference, x, w, r, gout)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(dx, dx_ref, rtol=0, atol=0)
    if dtype == torch.float32:
        torch.testing.assert_close(dw, dw_ref, rtol=0, atol=_dweight_atol(x, gout, r, shared))
    else:
        torch.testing.assert_close(dw.float(), dw_ref.float(), rtol=2.0**-8, atol=1e-6)
    # The output keeps the layout of x (channels_last in, channels_last out; a copied
    # non-contiguous input gives contiguous), dx the layout the kernel walked.
    if layout == "channels_last" and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()
    assert dx.shape == x.shape


def test_weight_float32_with_bf16_input():
    x = _make_input((2, 4, 5, 6), 2, torch.bfloat16, "contiguous")
    w = torch.tensor([0.1, -0.2, 0.3, 0.25])
    torch.testing.assert_close(pixel_shuffle_prelu(x, w, 2), pixel_shuffle_prelu_reference(x, w, 2), rtol=0, atol=0)
    gout = torch.randn(2, 4, 10, 12).to(torch.bfloat16)
    _, _, dw = _grads(pixel_shuffle_prelu, x, w, 2, gout)
    assert dw.dtype == torch.float32


def test_zero_and_negative_zero_inputs_follow_prelu():
    # v == 0 takes the negative branch (F.prelu: v > 0 ? v : a*v) in value and gradient.
    x = torch.tensor([0.0, -0.0, 1.0, -1.0]).view(1, 4, 1, 1)
    w = torch.tensor([0.5])
    gout = torch.ones(1, 1, 2, 2)
    for fn in (pixel_shuffle_prelu, pixel_shuffle_prelu_reference):
        _, dx, dw = _grads(fn, x, w, 2, gout)
        assert dx.flatten().tolist() == [0.5, 0.5, 1.0, 0.5]
        assert dw.item() == -1.0


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("r", [2, 3])
@pytest.mark.parametrize("shared", [False, True])
def test_gradcheck_float64(layout, r, shared):
    x = _make_input((2, 2, 3, 4), r, torch.float64, layout).requires_grad_(True)
    w = _weight(2, shared, torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: OP(a, b, r), (x, w))


def test_deterministic_across_thread_counts():
    x = _make_input((4, 8, 20, 20), 2, torch.float32, "contiguous")
    w = _weight(8, False, torch.float32)
    g = torch.randn(4, 8, 40, 40)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(BWD(g, x, w, 2))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_opcheck(layout, dtype):
    x = _make_input((2, 3, 5, 4), 2, dtype, layout).requires_grad_(True)
    w = _weight(3, False, dtype).requires_grad_(True)
    torch.library.opcheck(OP, (x, w, 2))
    g = torch.randn(2, 3, 10, 8).to(dtype)
    if layout == "channels_last":
        g = g.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(BWD, (g, x.detach(), w.detach(), 2))


def test_upsample_stage_fused_matches_unfused():
    torch.manual_seed(0)
    fused = Upsampler(channels=4, scale=4, fused=True)
    plain = Upsampler(channels=4, scale=4, fused=False)
    plain.load_state_dict(fused.state_dict())
    assert fused.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 4, 5, 7)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = fused(xa), plain(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-6, atol=1e-6)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    for pa, pb in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    stage = UpsampleStage(3, 2)
    compiled = torch.compile(stage, fullgraph=True)
    x = torch.randn(1, 3, 5, 7)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = stage(xa), compiled(xb)
    # Inductor may run the convolution with another algorithm/layout: float32 reordering
    # of a 27-term dot product (~27 * 2^-24 relative), not a difference in the fused op.
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-6)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.prelu.weight.grad, stage.prelu.weight.grad, rtol=1e-5, atol=1e-5)


def test_torch_compile_of_the_op_alone_is_exact():
    fn = torch.compile(lambda x, w: pixel_shuffle_prelu(x, w, 2) * 2.0, fullgraph=True)
    x = _make_input((2, 3, 5, 7), 2, torch.float32, "channels_last").requires_grad_(True)
    w = _weight(3, False, torch.float32).requires_grad_(True)
    y = fn(x, w)
    y_ref = pixel_shuffle_prelu(x, w, 2) * 2.0
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(y_ref, (x, w), g)))


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_bad_inputs(impl):
    x = torch.randn(1, 8, 3, 3)
    w = torch.rand(2)
    cases = [
        ((torch.randn(8, 3, 3), w, 2), ValueError, "4-D"),
        ((x, w, 3), ValueError, "divisible by upscale_factor"),
        ((x, torch.rand(3), 2), ValueError, "weight must be 1-D with 2"),
        ((x, torch.rand(2, 1), 2), ValueError, "weight must be 1-D"),
        ((x, w, 0), ValueError, "upscale_factor"),
        ((x, w, 2.0), ValueError, "upscale_factor"),
        ((x, w, True), ValueError, "upscale_factor"),
        ((x.to(torch.int32), w, 2), TypeError, "x must be one of"),
        ((x.half(), w, 2), TypeError, "x must be one of"),
        ((x, w.double(), 2), TypeError, "weight must have the dtype"),
        ((x.tolist(), w, 2), TypeError, "x must be a torch.Tensor"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            pixel_shuffle_prelu(*args, impl=impl)
    with pytest.raises(ValueError, match="impl"):
        pixel_shuffle_prelu(x, w, 2, impl="cuda")


def test_cpp_op_checks_before_memory_access():
    x = torch.randn(1, 8, 3, 3)
    with pytest.raises(ValueError, match="divisible"):
        OP(x, torch.rand(2), 3)
    with pytest.raises(ValueError, match="upscale_factor"):
        OP(x, torch.rand(2), 0)
    with pytest.raises(ValueError, match="grad must have the output shape"):
        BWD(torch.randn(1, 2, 6, 5), x, torch.rand(2), 2)
    with pytest.raises(TypeError, match="grad must have the dtype"):
        BWD(torch.randn(1, 2, 6, 6).double(), x, torch.rand(2), 2)


# ---- Triton kernels under TRITON_INTERPRET=1 (tests/conftest.py sets it) ----------------
triton_missing = importlib.util.find_spec("triton") is None


@pytest.mark.triton
@pytest.mark.skipif(triton_missing, reason="triton not installed")
@pytest.mark.parametrize("r", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontig"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shared", [False, True])
def test_triton_matches_cpp(r, layout, dtype, shared):
    from fastsr.kernels import pixel_shuffle_prelu as k

    x = _make_input((2, 3, 5, 3), r, dtype, layout)
    w = _weight(3, shared, dtype)
    g = torch.randn(2, 3, 5 * r, 3 * r).to(dtype)
    y = k.pixel_shuffle_prelu_forward(x, w, r)
    dx, dw = k.pixel_shuffle_prelu_backward(g, x, w, r)
    dx_c, dw_c = BWD(g, x, w, r)
    y_c = OP(x, w, r)
    assert y.shape == y_c.shape and y.stride() == y_c.stride()
    tol = dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=2.0**-7, atol=1e-6)
    torch.testing.assert_close(y, y_c, **tol)
    torch.testing.assert_close(dx, dx_c, **tol)
    torch.testing.assert_close(dw.float(), dw_c.float(), rtol=2.0**-7, atol=1e-5)


# ---- sizes that overflow, zero sizes, double backward ------------------------------------
def test_huge_upscale_factor_is_a_value_error_not_a_crash():
    """r*r (or the output size) overflowing int64 is refused before any arithmetic with it,
    on every path; run in a child process because the failure mode is a SIGFPE."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import torch, fastsr
        from fastsr.ops import pixel_shuffle_prelu
        x = torch.empty(1, 0, 2, 2)
        calls = [lambda r: pixel_shuffle_prelu(x, torch.ones(1), r),
                 lambda r: pixel_shuffle_prelu(x, torch.ones(1), r, impl="reference"),
                 lambda r: torch.ops.fastsr.pixel_shuffle_prelu(x, torch.ones(1), r),
                 lambda r: torch.ops.fastsr.pixel_shuffle_prelu_backward(x, x, torch.ones(1), r)]
        for r in (2**32, 2**31, 3037000500, 2**62):
            for call in calls:
                try:
                    call(r)
                except ValueError as e:
                    assert "upscale_factor" in str(e) and "too large" in str(e), e
                else:
                    raise AssertionError(r)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("shape", [(1, 0, 2, 2), (0, 4, 2, 2), (1, 4, 0, 3), (1, 4, 3, 0)])
@pytest.mark.parametrize("fn", (pixel_shuffle_prelu, pixel_shuffle_prelu_reference), ids=("fused", "reference"))
def test_zero_size_backward(shape, fn):
    x = torch.randn(shape, requires_grad=True)
    w = torch.ones(1, requires_grad=True)
    y = fn(x, w, 2)
    assert y.shape == (shape[0], shape[1] // 4, shape[2] * 2, shape[3] * 2)
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.tolist() == [0.0]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_double_backward_matches_reference(shared, layout):
    """create_graph=True gives the reference's second-order gradients (a WGAN-GP penalty
    through the upsampler), not a silent 0."""
    x = _make_input((2, 3, 3, 4), 2, torch.float64, layout)
    w = _weight(3, shared, torch.float64)

    def penalty_grads(fn):
        xs, ws = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        y = fn(xs, ws, 2)
        (gx,) = torch.autograd.grad((y * y).sum(), xs, create_graph=True)
        return torch.autograd.grad((gx.flatten().norm() - 1) ** 2, (xs, ws))

    fused, ref = penalty_grads(pixel_shuffle_prelu), penalty_grads(pixel_shuffle_prelu_reference)
    assert fused[0].abs().sum() > 0
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradgradcheck_float64():
    x = _make_input((1, 2, 3, 3), 2, torch.float64, "contiguous")
    x = (x + 0.05 * torch.sign(x)).requires_grad_()  # away from the kink
    w = _weight(2, False, torch.float64).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: OP(a, b, 2), (x, w))
