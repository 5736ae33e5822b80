"""fastsr.ops.bias_residual (and fastsr::channel_sum): C++ kernel vs reference, errors."""
import itertools
import math

import pytest
import torch
from helpers import BF16_RTOL, LAYOUTS, assert_close_sum, make_layout, requires_triton

from fastsr.ops import bias_residual, bias_residual_reference

SHAPES = [(n, c, h, w) for n, c, (h, w) in itertools.product((1, 16), (1, 3, 64), ((1, 1), (7, 33)))]


def _inputs(shape, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    r = torch.randn(shape, generator=g).to(dtype)
    bias = torch.randn(shape[1], generator=g)
    grad = torch.randn(shape, generator=g).to(dtype)
    return make_layout(x, layout), bias, make_layout(r, layout), make_layout(grad, layout)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scale", (1.0, 0.2))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_parity_forward_backward(shape, layout, scale, dtype):
    x, bias, r, grad = _inputs(shape, dtype, layout)
    ref = [t.detach().clone().requires_grad_() for t in (x, bias, r)]
    fus = [t.detach().clone().requires_grad_() for t in (x, bias, r)]
    y_ref = bias_residual_reference(*ref, scale)
    y = bias_residual(*fus, scale)
    assert y.dtype == dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    # r + s*(x + b) may be contracted to one FMA in the kernel: 1 fp32 ulp, or 1 bf16 ulp
    # after the final rounding.
    rtol = 2 * torch.finfo(torch.float32).eps if dtype == torch.float32 else BF16_RTOL
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=1e-6)
    y_ref.backward(grad)
    y.backward(grad)
    torch.testing.assert_close(fus[0].grad, ref[0].grad, rtol=0, atol=0)  # scale * g, exact
    torch.testing.assert_close(fus[2].grad, ref[2].grad, rtol=0, atol=0)  # g itself
    db64 = scale * grad.double().sum((0, 2, 3))
    assert fus[1].grad.dtype == torch.float32
    assert_close_sum(fus[1].grad, db64, scale * grad.double(), (0, 2, 3))


def test_gradcheck_float64():
    x, bias, r, _ = _inputs((2, 3, 4, 5), torch.float64, "contiguous")
    args = [x.requires_grad_(), bias.double().requires_grad_(), r.requires_grad_(), 0.3]
    assert torch.autograd.gradcheck(torch.ops.fastsr.bias_residual, args)
    args[3] = 1.0
    assert torch.autograd.gradcheck(torch.ops.fastsr.bias_residual, args)


@pytest.mark.parametrize("layout", ("contiguous", "channels_last"))
@pytest.mark.parametrize("scale", (1.0, 0.1))
def test_opcheck(layout, scale):
    x, bias, r, grad = _inputs((2, 4, 3, 5), torch.float32, layout)
    torch.library.opcheck(
        torch.ops.fastsr.bias_residual.default,
        (x.requires_grad_(), bias.requires_grad_(), r.requires_grad_(), scale),
    )
    torch.library.opcheck(torch.ops.fastsr.bias_residual_backward.default, (grad, bias.detach(), scale))
    torch.library.opcheck(torch.ops.fastsr.channel_sum.default, (grad, scale, torch.float32))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float64), ids=str)
def test_channel_sum(layout, dtype):
    x = make_layout(torch.randn(3, 5, 9, 11).to(dtype), layout)
    out = torch.ops.fastsr.channel_sum(x, 0.5, torch.float32)
    assert out.dtype == torch.float32 and out.shape == (5,)
    assert_close_sum(out, 0.5 * x.double().sum((0, 2, 3)), 0.5 * x.double(), (0, 2, 3))


def test_results_do_not_depend_on_thread_count():
    x, bias, r, grad = _inputs((4, 8, 40, 40), torch.float32, "channels_last")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.fastsr.channel_sum(grad, 1.0, torch.float32)
        torch.set_num_threads(max(2, threads))
        many = torch.ops.fastsr.channel_sum(grad, 1.0, torch.float32)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


BAD = [
    ("residual shape", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4), torch.randn(1, 4, 3, 2), 1.0), ValueError, "residual"),
    ("residual dtype", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4), torch.randn(1, 4, 3, 3).double(), 1.0), TypeError, "residual"),
    ("bias size", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(5), torch.randn(1, 4, 3, 3), 1.0), ValueError, "bias"),
    ("2-D x", lambda: (torch.randn(4, 3), torch.zeros(4), torch.randn(4, 3), 1.0), ValueError, "4-D"),
    ("nan scale", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4), torch.randn(1, 4, 3, 3), math.nan), ValueError, "scale"),
    ("inf scale", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4), torch.randn(1, 4, 3, 3), math.inf), ValueError, "scale"),
    ("meta residual", lambda: (torch.randn(1, 4, 3, 3), torch.zeros(4), torch.randn(1, 4, 3, 3, device="meta"), 1.0), ValueError, "residual"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
@pytest.mark.parametrize("path", ("function", "reference", "torch.ops"))
def test_bad_inputs(case, path):
    _, make, exc, word = case
    fn = {
        "function": bias_residual,
        "reference": lambda *a: bias_residual(*a, impl="reference"),
        "torch.ops": torch.ops.fastsr.bias_residual,
    }[path]
    with pytest.raises(exc, match=word):
        fn(*make())


@requires_triton
@pytest.mark.triton
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16), ids=str)
def test_triton_kernels(layout, dtype):
    from fastsr.kernels import bias_residual as k

    x, bias, r, grad = _inputs((2, 20, 5, 7), dtype, layout)
    y = k.bias_residual_forward(x, bias, r, 0.2)
    expected = (r.double() + 0.2 * (x.double() + bias.double().view(1, -1, 1, 1))).to(dtype)
    rtol = 2 * torch.finfo(torch.float32).eps if dtype == torch.float32 else torch.finfo(dtype).eps
    torch.testing.assert_close(y, expected, rtol=rtol, atol=1e-6)
    dx, db = k.bias_residual_backward(grad, bias, 0.2)
    torch.testing.assert_close(dx, (0.2 * grad.double()).to(dtype), rtol=rtol, atol=0)
    assert_close_sum(db, 0.2 * grad.double().sum((0, 2, 3)), 0.2 * grad.double(), (0, 2, 3))
    s = k.channel_sum(grad, 1.0, torch.float32)
    assert_close_sum(s, grad.double().sum((0, 2, 3)), grad.double(), (0, 2, 3))


@pytest.mark.parametrize("impl", ("auto", "reference"))
@pytest.mark.parametrize("scale", (torch.tensor(2.0), torch.tensor([0.5]), "1.0", None))
def test_non_number_scale_is_refused_on_every_path(impl, scale):
    x, bias, r, _ = _inputs((1, 2, 3, 3), torch.float32, "contiguous")
    with pytest.raises(ValueError, match="scale must be a finite number"):
        bias_residual(x, bias, r, scale, impl=impl)


@pytest.mark.parametrize("bad", ("x", "bias", "residual"))
@pytest.mark.parametrize("impl", ("auto", "reference"))
def test_non_tensor_arguments_are_type_errors(bad, impl):
    x, bias, r, _ = _inputs((1, 2, 3, 3), torch.float32, "contiguous")
    args = {"x": x, "bias": bias, "residual": r}
    args[bad] = args[bad].tolist()
    with pytest.raises(TypeError, match=f"{bad} must be a torch.Tensor"):
        bias_residual(*args.values(), 0.5, impl=impl)


@pytest.mark.parametrize("scale", (1.0, 0.3))
def test_double_backward_matches_reference(scale):
    """create_graph=True: the gradients are differentiable again (a gradient penalty through
    the block reaches bias and the incoming gradient), as with the reference."""
    x, bias, r, _ = _inputs((2, 3, 4, 5), torch.float64, "contiguous")
    bias = bias.double()

    def penalty_grads(fn):
        xs, bs, rs = (t.detach().clone().requires_grad_() for t in (x, bias, r))
        y = fn(xs, bs, rs, scale)
        gx, gb = torch.autograd.grad((y * y).sum(), (xs, bs), create_graph=True)
        return torch.autograd.grad(gx.square().sum() + gb.square().sum(), (xs, bs, rs))

    fused, ref = penalty_grads(bias_residual), penalty_grads(bias_residual_reference)
    assert fused[1].abs().sum() > 0
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    args = [x.requires_grad_(), bias.requires_grad_(), r.requires_grad_(), scale]
    assert torch.autograd.gradgradcheck(torch.ops.fastsr.bias_residual, args)
