"""winograd_conv3x3 (Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution + epilogue) against F.conv2d and its
plain-PyTorch reference: fp32 and bf16, odd and tiny sizes, batches, every activation, the
residual, layouts, the input checks, opcheck; and PackedConv2d's use of it."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastsr.nn import PackedConv2d
from fastsr.ops import winograd_conv3x3, winograd_conv3x3_reference, winograd_supported, winograd_weight

KERNEL = {dt: pytest.mark.skipif(not winograd_supported(dt), reason=f"this CPU has no {dt} Winograd kernel")
          for dt in (torch.float32, torch.bfloat16)}
#: max |error| against the float64 convolution, relative to the output's max |value|, by
#: (dtype, output tile): F(4x4, 3x3)'s transforms (coefficients up to 8 and 1/24) round about
#: 15x more than F(2x2, 3x3)'s (measured 4.5e-6 at 64 channels)
REL = {(torch.float32, 2): 2e-6, (torch.float32, 4): 1.5e-5, (torch.bfloat16, 2): 1.5e-2}
#: (dtype, tile) cases of the kernel: fp32 runs both tiles, bf16 F(2x2, 3x3) only
CASES = [pytest.param(torch.float32, 2, marks=KERNEL[torch.float32], id="fp32-F2"),
         pytest.param(torch.float32, 4, marks=KERNEL[torch.float32], id="fp32-F4"),
         pytest.param(torch.bfloat16, 2, marks=KERNEL[torch.bfloat16], id="bf16-F2")]
ACTS = ["none", "relu", "leaky_relu", "prelu"]


def _case(n, c, k, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, c, h, w, generator=g) * 2 - 0.5).to(dtype)
    weight = torch.randn(k, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
    bias, slopes = torch.randn(k, generator=g) * 0.1, torch.rand(k, generator=g) * 0.3
    residual = torch.randn(n, k, h, w, generator=g).to(dtype)
    return x, weight, bias, slopes, residual


def _expected(x, weight, bias, act, slopes, residual):
    y = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    if act == "relu":
        y = F.relu(y)
    elif act == "leaky_relu":
        y = F.leaky_relu(y, 0.2)
    elif act == "prelu":
        y = F.prelu(y, slopes.double())
    return y if residual is None else y + residual.double()


def _check_close(out, want, dtype, tile=2):
    assert out.dtype == dtype and out.shape == want.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    err = (out.double() - want).abs().max().item()
    assert err <= REL[dtype, tile] * max(want.abs().max().item(), 1.0), err


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("dtype, tile", CASES)
@pytest.mark.parametrize("shape", [(1, 64, 64, 31, 29), (2, 32, 48, 8, 9), (1, 16, 16, 1, 1), (1, 16, 32, 2, 3),
                                   (1, 192, 32, 13, 2), (3, 64, 256, 5, 6), (1, 16, 16, 7, 5)])
def test_matches_the_convolution(impl, dtype, tile, shape):
    x, weight, bias, slopes, residual = _case(*shape, dtype)
    u = winograd_weight(weight, dtype, tile)
    with torch.no_grad():
        for act in ACTS:
            for res in (None, residual):
                out = winograd_conv3x3(x, u, bias, act, 0.2, slopes, res, impl=impl)
                _check_close(out, _expected(x, weight, bias, act, slopes, res), dtype, tile)


@pytest.mark.parametrize("dtype, tile", CASES)
def test_kernel_equals_its_reference(dtype, tile):
    """Same algorithm, same roundings (transformed input and weight in the dtype, fp32 or
    exact products): bf16 agrees to the last bit here, fp32 to the order of the transforms'
    and the accumulation's roundings (F(4x4, 3x3)'s transforms round more)."""
    x, weight, bias, slopes, residual = _case(2, 32, 16, 11, 7, dtype, seed=1)
    u = winograd_weight(weight, dtype, tile)
    with torch.no_grad():
        for act in ACTS:
            out = winograd_conv3x3(x, u, bias, act, 0.1, slopes, residual)
            ref = winograd_conv3x3_reference(x, u, bias, act, 0.1, slopes, residual)
            tol = dict(atol=0, rtol=0) if dtype == torch.bfloat16 else dict(atol=1e-5 * tile ** 2, rtol=1e-5)
            torch.testing.assert_close(out, ref, **tol)


@pytest.mark.parametrize("dtype, tile", CASES)
def test_any_input_layout(dtype, tile):
    x, weight, bias, _, residual = _case(1, 16, 16, 9, 10, dtype, seed=2)
    u = winograd_weight(weight, dtype, tile)
    want = _expected(x, weight, bias, "none", None, residual)
    layouts = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
               "strided": torch.stack([x, torch.zeros_like(x)], -1)[..., 0]}  # neither layout
    with torch.no_grad():
        for name, xi in layouts.items():
            _check_close(winograd_conv3x3(xi, u, bias, residual=residual.contiguous()), want, dtype, tile)


def test_zero_batch_and_no_bias():
    x, weight, *_ = _case(1, 16, 16, 4, 4, torch.float32)
    u = winograd_weight(weight)
    with torch.no_grad():
        assert winograd_conv3x3(x[:0], u).shape == (0, 16, 4, 4)
        _check_close(winograd_conv3x3(x, u), F.conv2d(x.double(), weight.double(), padding=1), torch.float32)


def test_bad_arguments():
    x, weight, bias, slopes, residual = _case(1, 16, 32, 4, 4, torch.float32)
    u = winograd_weight(weight)
    cases = [
        (dict(x=x[:, :8]), ValueError, "Winograd-transformed weight"),
        (dict(act="gelu"), ValueError, "act must be one of"),
        (dict(act="prelu", prelu_weight=None), ValueError, "needs prelu_weight"),
        (dict(bias=bias[:5]), ValueError, "bias must be 1-D with 32"),
        (dict(residual=residual[:, :, :3]), ValueError, "residual must have the output shape"),
        (dict(x=x.double()), TypeError, r"x must be one of \(torch.float32, torch.bfloat16\)"),
        (dict(weight=u.bfloat16()), TypeError, "weight must be a tensor of the dtype of x"),
        (dict(x=x.clone().requires_grad_()), ValueError, "inference only"),
    ]
    for kw, exc, needle in cases:
        args = dict(x=x, weight=u, bias=bias, act="none", prelu_weight=slopes, residual=residual) | kw
        with pytest.raises(exc, match=needle):
            winograd_conv3x3(**args)
    with pytest.raises(ValueError, match="multiples of 16"):
        winograd_weight(torch.randn(8, 16, 3, 3))
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\)"):
        winograd_weight(torch.randn(16, 16, 5, 5))
    for dtype, tile in ((torch.float32, 3), (torch.bfloat16, 4)):
        with pytest.raises(ValueError, match="tile must be 2 or 4"):
            winograd_weight(weight, dtype, tile)
    # a weight of 25 components is neither tile's
    with pytest.raises(ValueError, match="Winograd-transformed weight"):
        winograd_conv3x3(x, u[:25].contiguous(), bias)


@pytest.mark.skipif(not winograd_supported(torch.float32), reason="this CPU has no Winograd kernel")
def test_the_kernel_checks_before_touching_memory():
    x, weight, bias, slopes, residual = _case(1, 16, 16, 4, 4, torch.float32)
    u = winograd_weight(weight)
    op = torch.ops.fastsr.winograd_conv3x3
    cl = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="must be channels_last"):
        op(x.contiguous()[:, :, :, :3].contiguous()[:, :, ::2], u, bias, 0, 0.0, None, None)
    with pytest.raises(ValueError, match="act must be 0"):
        op(cl, u, bias, 7, 0.0, None, None)
    with pytest.raises(ValueError, match="needs prelu_weight"):
        op(cl, u, bias, 3, 0.0, None, None)
    with pytest.raises(ValueError, match="residual must have the output shape"):
        op(cl, u, bias, 0, 0.0, None, residual[:, :8])
    with pytest.raises(TypeError, match="bias must be float32"):
        op(cl, u, bias.double(), 0, 0.0, None, None)


@pytest.mark.parametrize("dtype, tile", CASES)
def test_opcheck(dtype, tile):
    x, weight, bias, slopes, residual = _case(2, 16, 16, 5, 6, dtype)
    cl = x.contiguous(memory_format=torch.channels_last)
    res = residual.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.fastsr.winograd_conv3x3.default,
                          (cl, winograd_weight(weight, dtype, tile), bias, 3, 0.0, slopes, res))


@pytest.mark.skipif(not winograd_supported(torch.float32), reason="this CPU has no Winograd kernel")
def test_packed_conv_picks_winograd_only_where_it_applies():
    torch.manual_seed(4)
    x = torch.randn(1, 16, 10, 9).contiguous(memory_format=torch.channels_last)
    for conv, expected in ((nn.Conv2d(16, 32, 3, padding=1), True), (nn.Conv2d(16, 32, 3, padding=1, stride=2), False),
                           (nn.Conv2d(16, 3, 3, padding=1), False), (nn.Conv2d(16, 32, 1), False)):
        packed = PackedConv2d.from_conv(conv.requires_grad_(False))
        assert packed.winograd(x) is expected
        with torch.no_grad():
            out = packed(x)
            packed.use_winograd = False
            direct = packed(x)
        torch.testing.assert_close(out, direct, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(out, conv(x), atol=2e-5, rtol=1e-5)


def test_bf16_on_amx_cpus_stays_with_onednn(monkeypatch):
    import fastsr.ops.winograd as wg

    conv = PackedConv2d.from_conv(nn.Conv2d(16, 16, 3, padding=1))
    x = torch.empty(1, 16, 4, 4, dtype=torch.bfloat16)
    monkeypatch.setattr(wg, "_AVX512_BF16", True)
    monkeypatch.setattr(wg, "_AVX512", True)
    monkeypatch.setattr(wg, "_AVX2", True)
    for amx, expected in ((False, True), (True, False)):
        monkeypatch.setattr(wg, "_AMX", amx)
        assert conv.winograd(x) is expected
        assert conv.winograd(x.float()) is True  # fp32 has no AMX path


@pytest.mark.skipif(not winograd_supported(torch.float32), reason="this CPU has no Winograd kernel")
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape", [(1, 64, 64, 31, 29), (2, 16, 48, 7, 8), (1, 32, 16, 1, 3)])
def test_avx2_body_on_any_cpu(monkeypatch, shape, tile):
    """The fp32 body compiled for AVX2 (what CPUs without AVX-512 run) against the
    convolution and the AVX-512 body, forced by FASTSR_WINOGRAD_ISA on any CPU."""
    x, weight, bias, slopes, residual = _case(*shape, torch.float32, seed=5)
    u = winograd_weight(weight, tile=tile)
    with torch.no_grad():
        for act in ACTS:
            for res in (None, residual):
                monkeypatch.delenv("FASTSR_WINOGRAD_ISA", raising=False)
                native = winograd_conv3x3(x, u, bias, act, 0.2, slopes, res)
                monkeypatch.setenv("FASTSR_WINOGRAD_ISA", "avx2")
                avx2 = winograd_conv3x3(x, u, bias, act, 0.2, slopes, res)
                _check_close(avx2, _expected(x, weight, bias, act, slopes, res), torch.float32, tile)
                torch.testing.assert_close(avx2, native, atol=1e-5 * tile ** 2, rtol=1e-5)
