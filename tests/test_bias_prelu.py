"""fastsr.ops.bias_prelu: C++ kernel vs the plain-PyTorch reference, registration, errors."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import BF16_RTOL, LAYOUTS, assert_close_sum, make_layout, requires_triton

from fastsr.ops import bias_prelu, bias_prelu_reference

SHAPES = [(n, c, h, w) for n, c, (h, w) in itertools.product((1, 16), (1, 3, 64), ((1, 1), (7, 33), (33, 7)))]


def _inputs(shape, dtype, shared, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    x = torch.randn(shape, generator=g).to(dtype)
    bias = torch.randn(C, generator=g)
    weight = torch.rand(1 if shared else C, generator=g) * 0.5
    grad = torch.randn(shape, generator=g).to(dtype)
    return make_layout(x, layout), bias, weight, make_layout(grad, layout)


def _float64_grads(x, bias, weight, grad):
    """Oracle gradients in float64 from the same (rounded) inputs."""
    x64 = x.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    y = F.prelu(x64 + b64.view(1, -1, 1, 1), w64)
    y.backward(grad.double())
    return y.detach(), x64.grad, b64.grad, w64.grad


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shared", (False, True), ids=("per_channel", "shared"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_parity_forward_backward(shape, layout, shared, dtype):
    x, bias, weight, grad = _inputs(shape, dtype, shared, layout)
    xr, br, wr = (t.detach().clone().requires_grad_() for t in (x, bias, weight))
    xf, bf, wf = (t.detach().clone().requires_grad_() for t in (x, bias, weight))

    y_ref = bias_prelu_reference(xr, br, wr)
    y = bias_prelu(xf, bf, wf)
    assert y.dtype == dtype and y.shape == x.shape
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    # Forward: same fp32 arithmetic, one rounding: identical in fp32, within 1 ulp in bf16.
    rtol = 0 if dtype == torch.float32 else BF16_RTOL
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=0)

    y_ref.backward(grad)
    y.backward(grad)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=rtol, atol=0)
    assert bf.grad.dtype == bias.dtype and wf.grad.dtype == weight.dtype
    assert wf.grad.shape == weight.shape

    # Reductions: against float64 sums of the same terms, with a summation-error bound.
    _, _, db64, dw64 = _float64_grads(x, bias, weight, grad)
    z = x.double() + bias.double().view(1, -1, 1, 1)
    slope = torch.where(z > 0, torch.ones_like(z), weight.double().view(1, -1, 1, 1).expand_as(z))
    dz_terms = grad.double() * slope
    dw_terms = torch.where(z > 0, torch.zeros_like(z), grad.double() * z)
    assert_close_sum(bf.grad, db64, dz_terms, (0, 2, 3))
    if shared:
        assert_close_sum(wf.grad, dw64, dw_terms.reshape(1, -1), (1,))
    else:
        assert_close_sum(wf.grad, dw64, dw_terms, (0, 2, 3))


def test_mixed_precision_params():
    """Under bf16 autocast the conv output is bf16 while bias / PReLU weight stay fp32."""
    x, bias, weight, grad = _inputs((2, 8, 5, 6), torch.bfloat16, False, "contiguous")
    b = bias.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    y = bias_prelu(x, b, w)
    assert y.dtype == torch.bfloat16
    y.backward(grad)
    assert b.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    torch.testing.assert_close(y, bias_prelu_reference(x, bias, weight), rtol=BF16_RTOL, atol=0)


def test_gradcheck_float64():
    x, bias, weight, _ = _inputs((2, 3, 4, 5), torch.float64, False, "contiguous")
    x = x + 0.05 * torch.sign(x)  # keep z away from the PReLU kink, where the derivative jumps
    bias = bias.double()
    weight = weight.double()
    args = [t.detach().requires_grad_() for t in (x, torch.zeros_like(bias), weight)]
    assert torch.autograd.gradcheck(torch.ops.fastsr.bias_prelu, args)
    cl = [args[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_(), args[1], args[2]]
    assert torch.autograd.gradcheck(torch.ops.fastsr.bias_prelu, cl)


@pytest.mark.parametrize("layout", ("contiguous", "channels_last"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_opcheck(layout, dtype):
    x, bias, weight, grad = _inputs((2, 4, 3, 5), dtype, False, layout)
    torch.library.opcheck(torch.ops.fastsr.bias_prelu.default, (x, bias.requires_grad_(), weight.requires_grad_()))
    torch.library.opcheck(torch.ops.fastsr.bias_prelu_backward.default, (grad, x, bias.detach(), weight.detach()))


def test_impl_reference_switch():
    x, bias, weight, _ = _inputs((1, 3, 4, 4), torch.float32, False, "contiguous")
    torch.testing.assert_close(bias_prelu(x, bias, weight, impl="reference"), bias_prelu(x, bias, weight))
    with pytest.raises(ValueError, match="impl"):
        bias_prelu(x, bias, weight, impl="cuda")


def test_empty_batch():
    x = torch.randn(0, 4, 3, 3)
    y = bias_prelu(x, torch.zeros(4), torch.ones(4))
    assert y.shape == x.shape


BAD_INPUTS = [
    ("3-D x", lambda: (torch.randn(4, 3, 3), torch.zeros(4), torch.ones(4)), ValueError, "4-D"),
    ("bias size", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(3), torch.ones(4)), ValueError, "bias"),
    ("bias 2-D", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4, 1), torch.ones(4)), ValueError, "bias"),
    ("weight size", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4), torch.ones(2)), ValueError, "weight"),
    ("int x", lambda: (torch.ones(1, 4, 3, 3, dtype=torch.int32), torch.zeros(4), torch.ones(4)), TypeError, "x"),
    ("fp16 x on CPU", lambda: (torch.ones(1, 4, 3, 3, dtype=torch.float16), torch.zeros(4), torch.ones(4)), TypeError, "x"),
    ("fp64 bias with fp32 x", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4, dtype=torch.float64), torch.ones(4)), TypeError, "bias"),
    ("meta bias", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4, device="meta"), torch.ones(4)), ValueError, "bias"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
@pytest.mark.parametrize("path", ("function", "reference", "torch.ops"))
def test_bad_inputs(case, path):
    _, make, exc, word = case
    args = make()
    fn = {
        "function": bias_prelu,
        "reference": lambda *a: bias_prelu(*a, impl="reference"),
        "torch.ops": torch.ops.fastsr.bias_prelu,
    }[path]
    with pytest.raises(exc, match=word):
        fn(*args)


def test_backward_grad_shape_mismatch():
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match="grad"):
        torch.ops.fastsr.bias_prelu_backward(torch.randn(1, 4, 3, 2), x, torch.zeros(4), torch.ones(4))


@requires_triton
@pytest.mark.triton
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("shared", (False, True), ids=("per_channel", "shared"))
def test_triton_kernels(layout, dtype, shared):
    from fastsr.kernels import bias_prelu as k

    x, bias, weight, grad = _inputs((2, 20, 5, 7), dtype, shared, layout)
    y = k.bias_prelu_forward(x, bias, weight)
    assert y.dtype == dtype
    rtol = 0 if dtype == torch.float32 else torch.finfo(dtype).eps  # one ulp of the storage type
    torch.testing.assert_close(y, bias_prelu_reference(x.float(), bias, weight).to(dtype), rtol=rtol, atol=0)
    dx, db, dw = k.bias_prelu_backward(grad, x, bias, weight)
    _, dx64, db64, dw64 = _float64_grads(x, bias, weight, grad)
    torch.testing.assert_close(dx, dx64.to(dtype), rtol=rtol, atol=1e-6)
    z = x.double() + bias.double().view(1, -1, 1, 1)
    assert_close_sum(db, db64, grad.double(), (0, 2, 3))
    dw_terms = torch.where(z > 0, torch.zeros_like(z), grad.double() * z)
    assert_close_sum(dw, dw64, dw_terms.reshape(1, -1) if shared else dw_terms, (1,) if shared else (0, 2, 3))


def _penalty_grads(fn, x, bias, weight):
    """A WGAN-GP style gradient penalty through the op: d/d(x, bias, weight) of
    (||d sum(y^2) / dx|| - 1)^2, which needs the op's second derivative."""
    x, bias, weight = (t.detach().clone().requires_grad_() for t in (x, bias, weight))
    y = fn(x, bias, weight)
    (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
    penalty = (gx.flatten().norm() - 1) ** 2
    return torch.autograd.grad(penalty, (x, bias, weight))


@pytest.mark.parametrize("shared", (False, True), ids=("per_channel", "shared"))
@pytest.mark.parametrize("layout", ("contiguous", "channels_last"))
def test_double_backward_matches_reference(shared, layout):
    """create_graph=True gives the reference's second-order gradients, not a silent 0."""
    x, bias, weight, _ = _inputs((2, 3, 4, 5), torch.float64, shared, layout)
    bias, weight = bias.double(), weight.double()
    fused = _penalty_grads(bias_prelu, x, bias, weight)
    ref = _penalty_grads(bias_prelu_reference, x, bias, weight)
    assert fused[0].abs().sum() > 0
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradgradcheck_float64():
    x, bias, weight, _ = _inputs((2, 3, 4, 5), torch.float64, False, "contiguous")
    x = x + 0.05 * torch.sign(x)  # away from the kink
    args = [t.detach().double().requires_grad_() for t in (x, torch.zeros(3), weight)]
    assert torch.autograd.gradgradcheck(torch.ops.fastsr.bias_prelu, args)


def test_double_backward_float32_and_bf16_params():
    """The create_graph path keeps the dtypes of the first-order path."""
    x, bias, weight, grad = _inputs((2, 3, 4, 5), torch.bfloat16, False, "contiguous")
    xs, bs, ws = (t.detach().clone().requires_grad_() for t in (x, bias, weight))
    dx, db, dw = torch.autograd.grad(bias_prelu(xs, bs, ws), (xs, bs, ws), grad, create_graph=True)
    assert (dx.dtype, db.dtype, dw.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    assert dw.requires_grad
    first = torch.autograd.grad(bias_prelu(xs, bs, ws), (xs, bs, ws), grad)
    torch.testing.assert_close(dx, first[0], rtol=0, atol=0)
    assert_close_sum(db, first[1].double(), grad.double(), (0, 2, 3))


@pytest.mark.parametrize("bad", ("x", "bias", "weight"))
@pytest.mark.parametrize("impl", ("auto", "reference"))
def test_non_tensor_arguments_are_type_errors(bad, impl):
    args = {"x": torch.randn(1, 2, 3, 3), "bias": torch.zeros(2), "weight": torch.ones(2)}
    args[bad] = args[bad].tolist()
    with pytest.raises(TypeError, match=f"{bad} must be a torch.Tensor"):
        bias_prelu(*args.values(), impl=impl)
