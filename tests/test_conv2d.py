"""fastsr.nn.Conv2d / conv2d: the im2col + GEMM path for tiny CPU outputs against F.conv2d."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastsr.nn.conv as conv_mod
from fastsr.models import create
from fastsr.nn import Conv2d, conv2d

from helpers import LAYOUTS, AtenOps, make_layout


def _ops(fn, *args):
    with AtenOps() as rec:
        out = fn(*args)
    return rec.names, out


@pytest.fixture
def gemm_everywhere(monkeypatch):
    """Let every small convolution take the GEMM path, so float64 gradcheck stays cheap."""
    monkeypatch.setattr(conv_mod, "GEMM_MIN_REDUCTION", 1)


def test_critic_sized_conv_takes_the_gemm_path_and_matches():
    x = torch.randn(2, 1024, 3, 3)
    w = torch.randn(16, 1024, 4, 4) * 0.01  # Conv_D6 of the WGAN critic, 16 filters for speed
    names, out = _ops(conv2d, x, w, None, 2, 1)
    assert "convolution" not in names and "mm" in names
    torch.testing.assert_close(out, F.conv2d(x, w, None, 2, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,weight,stride,padding", [
    ((2, 256, 12, 12), (8, 256, 4, 4), 2, 1),    # 6x6 output: oneDNN is faster
    ((2, 16, 3, 3), (8, 16, 4, 4), 2, 1),        # reduction 256: too short
])
def test_other_convs_stay_on_f_conv2d(shape, weight, stride, padding):
    names, _ = _ops(conv2d, torch.randn(shape), torch.randn(weight), None, stride, padding)
    assert "convolution" in names and "mm" not in names


def test_bf16_autocast_and_groups_stay_on_f_conv2d():
    x, w = torch.randn(2, 1024, 3, 3), torch.randn(8, 1024, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        names, out = _ops(conv2d, x, w, None, 2, 1)
    assert "convolution" in names and out.dtype == torch.bfloat16
    names, _ = _ops(conv2d, x, torch.randn(8, 512, 4, 4), None, 2, 1, 1, 2)
    assert "convolution" in names


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape,weight,stride,padding,dilation", [
    ((3, 5, 3, 3), (7, 5, 4, 4), 2, 1, 1),       # 1x1 output, padded window
    ((2, 4, 7, 5), (3, 4, 3, 2), (2, 1), (1, 0), 1),  # odd, non-square, 4x4 output
    ((1, 3, 6, 6), (2, 3, 2, 2), 1, 0, 2),        # dilation
])
def test_gemm_path_forward_backward_matches(gemm_everywhere, layout, bias, shape, weight, stride, padding,
                                            dilation):
    torch.manual_seed(0)
    x = make_layout(torch.randn(shape), layout).requires_grad_()
    w = torch.randn(weight).requires_grad_()
    b = torch.randn(weight[0]).requires_grad_() if bias else None
    names, out = _ops(conv2d, x, w, b, stride, padding, dilation)
    assert "convolution" not in names
    x0, w0 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    b0 = b.detach().clone().requires_grad_() if bias else None
    ref = F.conv2d(x0, w0, b0, stride, padding, dilation)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [t for t in (x, w, b) if t is not None], g)
    want = torch.autograd.grad(ref, [t for t in (x0, w0, b0) if t is not None], g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_gemm_path_gradcheck_and_gradgradcheck_float64(gemm_everywhere):
    torch.manual_seed(0)
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: conv2d(x, w, b, 2, 1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)  # WGAN-GP differentiates D's input gradient


def test_module_is_a_drop_in_nn_conv2d():
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(1024, 16, 4, 2, 1)
    mod = Conv2d(1024, 16, 4, 2, 1)
    assert isinstance(mod, torch.nn.Conv2d) and mod.fused
    mod.load_state_dict(ref.state_dict())
    assert mod.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 1024, 3, 3)
    names, out = _ops(mod, x)
    assert "convolution" not in names
    torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)
    mod.fused = False
    names, _ = _ops(mod, x)
    assert "convolution" in names


def test_module_with_other_padding_mode_uses_nn_conv2d():
    mod = Conv2d(1024, 4, 4, 2, 1, padding_mode="reflect")
    names, _ = _ops(mod, torch.randn(1, 1024, 3, 3))
    assert "convolution" in names


def test_bad_shapes_raise_like_f_conv2d():
    with pytest.raises(RuntimeError):
        conv2d(torch.randn(2, 1024, 3, 3), torch.randn(8, 512, 4, 4), None, 2, 1)


@pytest.mark.parametrize("name,kw,size", [("WGANCritic", {"input_size": 96, "num_feat": 16}, 96),
                                          ("VGGStyleDiscriminator", {"input_size": 128, "num_feat": 32}, 128)])
def test_discriminator_fused_matches_unfused_in_float64(name, kw, size, monkeypatch):
    # num_feat shrinks the models for speed; the lowered threshold keeps their last layers on
    # the GEMM path as at full width
    monkeypatch.setattr(conv_mod, "GEMM_MIN_REDUCTION", 1024)
    torch.manual_seed(0)
    d = create(name, **kw).double()
    x = torch.rand(3, 3, size, size, dtype=torch.float64)
    grads = {}
    for fused in (True, False):
        d.fused = fused
        d.zero_grad()
        xx = x.clone().requires_grad_()
        names, out = _ops(d, xx)
        assert ("mm" in names) == fused  # the FC layers are addmm, so check the fused run only
        out.sum().backward()
        grads[fused] = (out.detach(), xx.grad, [p.grad.clone() for p in d.parameters()])
    (o1, dx1, dw1), (o0, dx0, dw0) = grads[True], grads[False]
    torch.testing.assert_close(o1, o0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dx1, dx0, rtol=1e-9, atol=1e-12)
    for a, e in zip(dw1, dw0):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-10)  # batch statistics of 3 amplify rounding


def test_critic_with_gemm_path_compiles_fullgraph(monkeypatch):
    monkeypatch.setattr(conv_mod, "GEMM_MIN_REDUCTION", 64)  # the small critic's last layers take the GEMM path
    torch.manual_seed(0)
    d = create("WGANCritic", input_size=64, num_feat=2)
    x = torch.rand(4, 3, 64, 64)
    names, _ = _ops(d, x)
    assert "mm" in names
    compiled = torch.compile(d, fullgraph=True)
    torch.testing.assert_close(compiled(x), d(x), rtol=1e-4, atol=1e-5)
