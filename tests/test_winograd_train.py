"""conv3x3_winograd (the differentiable Winograd convolution that training uses) against
F.conv2d: forward, input / weight / bias gradients and double backward, fp32 and bf16, odd
sizes, layouts, the input checks, opcheck; and the fused models' use of it (use_winograd,
train.winograd)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastsr.nn import Conv2d, conv_act, conv_prelu, conv_residual, use_winograd
from fastsr.ops import conv3x3_winograd, conv3x3_winograd_supported
from fastsr.ops.winograd import BF16_WEIGHT_GRADS, winograd_preferred

from helpers import AtenOps

PREFERRED = {dt: pytest.mark.skipif(not winograd_preferred(dt), reason=f"no faster {dt} Winograd kernel here")
             for dt in (torch.float32, torch.bfloat16)}
#: max |error| relative to the reference's max |value|: fp32 F(4x4, 3x3) (see test_winograd.REL), bf16
#: F(2x2, 3x3) against a float64 convolution of the bf16-rounded operands
REL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


@pytest.fixture(autouse=True)
def _winograd_on():
    before = use_winograd()
    use_winograd(True)
    yield
    use_winograd(before)


def _case(n, c, k, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, c, h, w, generator=g) * 2 - 0.5).to(dtype)
    weight = (torch.randn(k, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5).to(dtype)
    bias = (torch.randn(k, generator=g) * 0.1).to(dtype)
    grad = torch.randn(n, k, h, w, generator=g).to(dtype)
    return x, weight, bias, grad


def _close(got, want, dtype):
    assert got.dtype == want.dtype and got.shape == want.shape
    err = (got.double() - want.double()).abs().max().item()
    assert err <= REL[dtype] * max(want.double().abs().max().item(), 1.0), err


def _grads(fn, x, weight, bias, grad):
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    y = fn(x, weight, bias)
    inputs = [t for t in (x, weight, bias) if t is not None]
    return (y, *torch.autograd.grad(y, inputs, grad))


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, marks=PREFERRED[torch.float32]),
                                   pytest.param(torch.bfloat16, marks=PREFERRED[torch.bfloat16])])
@pytest.mark.parametrize("shape", [(2, 64, 64, 13, 11), (1, 16, 32, 4, 4), (3, 32, 16, 5, 8), (1, 48, 256, 9, 4)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_gradients_match_the_convolution(dtype, shape, with_bias):
    x, weight, bias, grad = _case(*shape, dtype)
    bias = bias if with_bias else None
    got = _grads(conv3x3_winograd, x, weight, bias, grad)
    # the reference: the float64 convolution of the same (rounded) operands
    ref = _grads(lambda a, w, b: F.conv2d(a, w, b, padding=1), x.double(), weight.double(),
                 None if bias is None else bias.double(), grad.double())
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    for g, r in zip(got, ref):
        _close(g, r.to(dtype), dtype)


def test_any_input_layout():
    x, weight, bias, grad = _case(2, 32, 32, 10, 7, torch.float32)
    want = _grads(conv3x3_winograd, x, weight, bias, grad)
    layouts = [x.contiguous(memory_format=torch.channels_last),
               x.transpose(2, 3).contiguous().transpose(2, 3),  # non-contiguous view
               torch.cat([x, x], 1)[:, ::2]]  # strided channels
    for xl in layouts[:2]:
        for g, w in zip(_grads(conv3x3_winograd, xl, weight, bias, grad), want):
            torch.testing.assert_close(g, w)
    got = _grads(conv3x3_winograd, layouts[2], weight, bias, grad)
    _close(got[0], F.conv2d(layouts[2], weight, bias, padding=1), torch.float32)


def test_double_backward_matches_the_convolution():
    """WGAN-GP differentiates the input gradient again: the backward is made of differentiable ops."""
    x, weight, bias, _ = _case(2, 32, 32, 9, 6, torch.float32)

    def penalty_grad(fn, x, w, b):
        x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
        (gx,) = torch.autograd.grad(fn(x, w, b).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), w)[0]

    got = penalty_grad(conv3x3_winograd, x, weight, bias)
    want = penalty_grad(lambda a, w, b: F.conv2d(a, w, b, padding=1), x.double(), weight.double(), bias.double())
    _close(got, want.float(), torch.float32)


def test_falls_back_to_the_direct_convolution():
    """Channel counts that are not multiples of 16, float64, images under TRAIN_MIN_SIDE: the
    direct convolution (oneDNN's; only its summation order may differ with the channels_last
    output)."""
    for c, k, dtype, h, w in ((3, 16, torch.float32, 6, 5), (16, 8, torch.float32, 6, 5),
                              (16, 16, torch.float64, 6, 5), (16, 16, torch.float32, 3, 9),
                              (16, 16, torch.float32, 1, 1)):
        x, weight, bias, grad = _case(1, c, k, h, w, dtype)
        assert not conv3x3_winograd_supported(x, weight)
        for g, w in zip(_grads(conv3x3_winograd, x, weight, bias, grad),
                        _grads(lambda a, w, b: F.conv2d(a, w, b, padding=1), x, weight, bias, grad)):
            torch.testing.assert_close(g, w)


def test_bad_arguments():
    x, weight, bias, _ = _case(1, 16, 16, 4, 4, torch.float32)
    with pytest.raises(ValueError, match="weight \\(K, C, 3, 3\\)"):
        conv3x3_winograd(x, weight[:, :, :2])
    with pytest.raises(ValueError, match="weight \\(K, C, 3, 3\\)"):
        conv3x3_winograd(x[:, :8], weight)
    with pytest.raises(ValueError, match="bias must be 1-D with 16"):
        conv3x3_winograd(x, weight, bias[:3])
    with pytest.raises(TypeError, match="weight must have x's dtype"):
        conv3x3_winograd(x, weight.double())


@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck(with_bias):
    x, weight, bias, _ = _case(2, 16, 32, 5, 6, torch.float32)
    args = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_() if with_bias else None)
    torch.library.opcheck(torch.ops.fastsr.conv3x3_winograd.default, args)


def _count_calls(monkeypatch):
    import fastsr.nn.conv as conv_mod

    calls = []
    real = conv_mod.conv3x3_winograd
    monkeypatch.setattr(conv_mod, "conv3x3_winograd", lambda *a: calls.append(1) or real(*a))
    return calls


@PREFERRED[torch.float32]
def test_fused_layers_use_it_and_match_the_plain_modules(monkeypatch):
    calls = _count_calls(monkeypatch)
    torch.manual_seed(0)
    conv, prelu = nn.Conv2d(32, 32, 3, padding=1), nn.PReLU(32)
    x = torch.randn(2, 32, 7, 9, requires_grad=True)
    residual = torch.randn(2, 32, 7, 9)
    for fn, plain in ((lambda t: conv_prelu(t, conv, prelu), lambda t: prelu(conv(t))),
                      (lambda t: conv_residual(t, conv, residual, 0.2), lambda t: residual + 0.2 * conv(t)),
                      (lambda t: conv_act(t, conv, "leaky_relu", 0.2), lambda t: F.leaky_relu(conv(t), 0.2))):
        got, want = fn(x), plain(x)
        _close(got, want, torch.float32)
        g = torch.randn_like(want)
        for a, b in zip(torch.autograd.grad(got, (x, conv.weight, conv.bias), g),
                        torch.autograd.grad(want, (x, conv.weight, conv.bias), g)):
            _close(a, b, torch.float32)
    assert len(calls) == 3
    use_winograd(False)
    conv_prelu(x, conv, prelu)
    assert len(calls) == 3


@PREFERRED[torch.float32]
def test_conv2d_module_and_upsampler_use_it(monkeypatch):
    from fastsr.nn import UpsampleStage

    calls = _count_calls(monkeypatch)
    torch.manual_seed(0)
    conv = Conv2d(16, 32, 3, 1, 1)
    x = torch.randn(1, 16, 6, 5)
    _close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), torch.float32)
    assert len(calls) == 1
    Conv2d(16, 32, 3, 2, 1)(x)  # stride 2: not eligible
    Conv2d(16, 32, 3, 1, 1, fused=False)(x)
    assert len(calls) == 1
    stage = UpsampleStage(16, 2)
    plain = UpsampleStage(16, 2, fused=False)
    plain.load_state_dict(stage.state_dict())
    _close(stage(x), plain(x), torch.float32)
    assert len(calls) == 2


@PREFERRED[torch.float32]
def test_autocast_casts_like_the_convolution(monkeypatch):
    """Under CPU bf16 autocast the fused conv gets bf16 operands, as F.conv2d does (the op then
    runs the bf16 kernel where preferred, else the direct bf16 convolution)."""
    torch.manual_seed(0)
    conv, prelu = nn.Conv2d(16, 16, 3, padding=1), nn.PReLU(16)
    x = torch.randn(1, 16, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = conv_prelu(x, conv, prelu), prelu(conv(x))
    assert got.dtype == want.dtype == torch.bfloat16
    _close(got, want, torch.bfloat16)


def test_train_winograd_setting_reaches_the_layers(tmp_path):
    from tests._cli_util import TINY_OVERRIDES
    from fastsr.train import Trainer, load_config

    for value in (False, True):
        config = load_config("nonbn_wgan_x4", [*TINY_OVERRIDES, f"train.winograd={str(value).lower()}"])
        Trainer(config, tmp_path / str(value), data=False, device="cpu", progress=False)
        assert use_winograd() is value


def _wgrad_reference(x, grad):
    return torch.ops.aten.convolution_backward(grad.double(), x.double(), torch.zeros(grad.shape[1], x.shape[1], 3, 3,
                                               dtype=torch.float64), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]


@PREFERRED[torch.float32]
@pytest.mark.parametrize("isa", ["native", "avx2"])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape", [(2, 16, 16, 5, 7), (1, 64, 64, 13, 11), (3, 32, 48, 8, 8), (2, 16, 32, 1, 1),
                                   (1, 48, 256, 9, 17), (0, 16, 16, 4, 4)])
def test_weight_gradient_kernel(monkeypatch, isa, tile, shape):
    """fastsr::winograd_conv3x3_wgrad turned into dW (G^T dU G) against the float64 weight gradient,
    both fp32 bodies (FASTSR_WINOGRAD_ISA=avx2 forces the AVX2 one on an AVX-512 CPU)."""
    from fastsr.ops.winograd import _MATRICES

    if isa == "avx2":
        monkeypatch.setenv("FASTSR_WINOGRAD_ISA", "avx2")
    n, c, k, h, w = shape
    g = torch.Generator().manual_seed(1)
    x, grad = torch.randn(n, c, h, w, generator=g), torch.randn(n, k, h, w, generator=g)
    cl = torch.channels_last
    du = torch.ops.fastsr.winograd_conv3x3_wgrad(x.contiguous(memory_format=cl), grad.contiguous(memory_format=cl),
                                                 tile)
    assert du.shape == ((tile + 2) ** 2, c, k) and du.dtype == torch.float32
    gg = torch.kron(_MATRICES[tile][1], _MATRICES[tile][1])
    dw = (gg.t() @ du.double().reshape(-1, c * k)).reshape(3, 3, c, k).permute(3, 2, 0, 1)
    want = _wgrad_reference(x, grad)
    assert (dw - want).abs().max().item() <= 2e-5 * max(want.abs().max().item(), 1.0)


def test_weight_gradient_kernel_checks():
    cl = torch.channels_last
    x, grad = torch.randn(1, 16, 4, 4).contiguous(memory_format=cl), torch.randn(1, 32, 4, 4).contiguous(memory_format=cl)
    op = torch.ops.fastsr.winograd_conv3x3_wgrad
    with pytest.raises(TypeError, match="must be float32"):
        op(x.double(), grad, 4)
    with pytest.raises(ValueError, match="must be channels_last"):
        op(x.contiguous(), grad, 4)
    with pytest.raises(ValueError, match="grad must be \\(N, K, H, W\\)"):
        op(x, grad[:, :, :3].contiguous(memory_format=cl), 4)
    with pytest.raises(ValueError, match="multiples of 16"):
        op(x, torch.randn(1, 8, 4, 4).contiguous(memory_format=cl), 4)
    with pytest.raises(ValueError, match="tile must be 2 or 4"):
        op(x, grad, 3)


@PREFERRED[torch.float32]
def test_weight_gradient_kernel_opcheck():
    cl = torch.channels_last
    x, grad = torch.randn(2, 16, 5, 6).contiguous(memory_format=cl), torch.randn(2, 32, 5, 6).contiguous(memory_format=cl)
    torch.library.opcheck(torch.ops.fastsr.winograd_conv3x3_wgrad.default, (x, grad, 4))


def test_fused_layers_refuse_other_padding_modes():
    """A reflect-padded conv must not silently get the fused path's zero padding."""
    conv, prelu = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"), nn.PReLU(16)
    x = torch.randn(1, 16, 6, 6)
    with pytest.raises(ValueError, match="zero padding"):
        conv_prelu(x, conv, prelu)
    with pytest.raises(ValueError, match="zero padding"):
        conv_residual(x, conv, x)


@PREFERRED[torch.float32]
def test_fp32_backward_leaves_aten_convolution_backward_alone():
    # the bias gradient is a sum: asked of aten.convolution_backward, oneDNN computes the whole
    # weight gradient beside it; the fp32 weight gradient is the Winograd kernel's
    x, weight, bias, grad = _case(2, 32, 64, 9, 7, torch.float32)
    x, weight, bias = (t.requires_grad_() for t in (x, weight, bias))
    y = conv3x3_winograd(x, weight, bias)
    with AtenOps() as ops:
        gx, gw, gb = torch.autograd.grad(y, (x, weight, bias), grad)
    assert "convolution_backward" not in ops.names, sorted(ops.names)
    _close(gb, grad.sum((0, 2, 3)), torch.float32)


@pytest.fixture
def _bf16_wgrad_mode():
    from fastsr.ops import winograd

    before = winograd.winograd_bf16_weight_grad()
    yield winograd.winograd_bf16_weight_grad
    winograd.winograd_bf16_weight_grad(before)


@PREFERRED[torch.float32]
@pytest.mark.parametrize("shape", [(2, 64, 64, 13, 11), (1, 16, 32, 4, 4), (3, 32, 16, 5, 8)])
def test_bf16_weight_gradient_by_float32_winograd(monkeypatch, _bf16_wgrad_mode, shape):
    """The bf16 weight gradient of the op's backward: x and the output gradient widened to float32
    (exactly), the float32 Winograd-domain gradient, rounded once to bf16, against the float64
    gradient of the same bf16 operands, and no less accurate than oneDNN's bf16 gradient. Called
    on the backward directly, so that it runs on CPUs without the bf16 forward kernel too."""
    from types import SimpleNamespace

    from fastsr.ops import winograd

    x, weight, _, grad = _case(*shape, torch.bfloat16)
    x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(winograd, "conv3x3_winograd_supported", lambda a, w: True)
    ctx = SimpleNamespace(saved_tensors=(x, weight), needs_input_grad=(False, True, False), has_bias=False)
    want = _wgrad_reference(x, grad)
    errs = {}
    for mode in BF16_WEIGHT_GRADS:
        _bf16_wgrad_mode(mode)
        with AtenOps() as ops, torch.no_grad():  # as the autograd engine runs it without create_graph
            _, gw, _ = winograd._conv3x3_winograd_backward(ctx, grad)
        assert ("convolution_backward" in ops.names) == (mode == "onednn"), (mode, sorted(ops.names))
        assert gw.dtype == torch.bfloat16 and gw.shape == weight.shape
        errs[mode] = (gw.double() - want).abs().max().item(), (gw.double() - want).pow(2).mean().sqrt().item()
    scale = want.abs().max().item()
    assert errs["winograd"][0] <= 2 ** -8 * scale, errs  # bf16's own rounding (half an ulp of the largest)
    # both are bf16 roundings of float32 sums: the RMS error over thousands of weights is that rounding's
    assert errs["winograd"][1] <= errs["onednn"][1] * 1.1, errs


def test_bf16_weight_gradient_setting(_bf16_wgrad_mode):
    assert _bf16_wgrad_mode() in BF16_WEIGHT_GRADS
    assert _bf16_wgrad_mode("onednn") == "onednn" == _bf16_wgrad_mode()
    with pytest.raises(ValueError, match="mode must be one of"):
        _bf16_wgrad_mode("direct")
    assert _bf16_wgrad_mode() == "onednn"


@PREFERRED[torch.bfloat16]
@pytest.mark.parametrize("mode", BF16_WEIGHT_GRADS)
def test_bf16_backward_weight_gradient_setting(_bf16_wgrad_mode, mode):
    """End to end on a CPU with the bf16 kernel: the setting picks the weight gradient's algorithm
    and both match the float64 convolution."""
    _bf16_wgrad_mode(mode)
    x, weight, bias, grad = _case(2, 32, 64, 9, 7, torch.bfloat16)
    with AtenOps() as ops:
        got = _grads(conv3x3_winograd, x, weight, bias, grad)
    assert ("convolution_backward" in ops.names) == (mode == "onednn"), sorted(ops.names)
    ref = _grads(lambda a, w, b: F.conv2d(a, w, b, padding=1), x.double(), weight.double(), bias.double(),
                 grad.double())
    for g, r in zip(got, ref):
        _close(g, r.to(torch.bfloat16), torch.bfloat16)
