"""fastsr.nn.ResidualBlockNoBN: fused == unfused, state_dict, layouts, torch.compile."""
import pytest
import torch
from helpers import BF16_RTOL

from fastsr.nn import ResidualBlockNoBN


def _pair(channels=16, **kw):
    torch.manual_seed(0)
    fused = ResidualBlockNoBN(channels, fused=True, **kw)
    with torch.no_grad():  # non-trivial PReLU slopes and biases
        fused.prelu.weight.uniform_(0.05, 0.5)
        fused.conv1.bias.normal_()
        fused.conv2.bias.normal_()
    plain = ResidualBlockNoBN(channels, fused=False, **kw)
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def _grads(m):
    return {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("memory_format", (torch.contiguous_format, torch.channels_last), ids=("nchw", "nhwc"))
@pytest.mark.parametrize("res_scale,prelu_shared", ((1.0, False), (0.1, True)))
def test_fused_equals_unfused_fp32(memory_format, res_scale, prelu_shared):
    fused, plain = _pair(res_scale=res_scale, prelu_shared=prelu_shared)
    x = torch.randn(2, 16, 11, 13).contiguous(memory_format=memory_format)
    xf, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    yf, yp = fused(xf), plain(xp)
    torch.testing.assert_close(yf, yp, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yf)
    yf.backward(g)
    yp.backward(g)
    torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-5, atol=1e-5)
    gf, gp = _grads(fused), _grads(plain)
    for name in gp:
        torch.testing.assert_close(gf[name], gp[name], rtol=1e-4, atol=1e-4, msg=name)


def test_fused_equals_unfused_bf16_autocast():
    fused, plain = _pair()
    x = torch.randn(2, 16, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yf, yp = fused(x), plain(x)
    # Both run the convs in bf16; they differ only in where the epilogues round to bf16
    # (fused: once; unfused: after every elementwise op): a few bf16 ulps of the output.
    torch.testing.assert_close(yf.float(), yp.float(), rtol=4 * BF16_RTOL, atol=4 * BF16_RTOL)


def test_state_dict_identical():
    fused, plain = _pair()
    assert fused.state_dict().keys() == plain.state_dict().keys()
    assert set(fused.state_dict()) == {"conv1.weight", "conv1.bias", "prelu.weight", "conv2.weight", "conv2.bias"}


def test_compile_fullgraph_matches_eager():
    fused, _ = _pair(channels=8)
    x = torch.randn(1, 8, 9, 10)
    compiled = torch.compile(fused, fullgraph=True, backend="inductor")
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye = fused(xe)
    ge = torch.autograd.grad(ye.square().sum(), [xe, *fused.parameters()])
    yc = compiled(xc)
    gc = torch.autograd.grad(yc.square().sum(), [xc, *fused.parameters()])
    torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-5)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        ResidualBlockNoBN(8, kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        ResidualBlockNoBN(0)
