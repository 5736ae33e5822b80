"""PackedConv2d (prepacked oneDNN convolution + epilogue post-op) against nn.Conv2d and the
plain epilogues, and optimize_for_inference against the unprepared models: fp32 and bf16,
odd sizes, strides, layouts, weights changed after packing, the autograd fallback, and bf16
vs fp32 on real photographs."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastsr
from fastsr.nn import PackedConv2d, conv_act, conv_prelu, conv_residual, pack_convolutions

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-5), torch.bfloat16: dict(atol=3e-2, rtol=2e-2)}
#: oneDNN reorders bf16 weights only where it has a bf16 path (AVX512-BW/VL/DQ, AVX-NE-CONVERT);
#: elsewhere (AVX2 CPUs) PackedConv2d runs bf16 as the plain convolution
PACKS = {torch.float32: True, torch.bfloat16: bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def _pair(cin=8, cout=12, k=3, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, padding=kw.pop("padding", k // 2), **kw).to(dtype).requires_grad_(False)
    return conv, PackedConv2d.from_conv(conv)


def _layouts(x):
    yield "contiguous", x
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    wide = torch.cat([x, x], dim=-1)
    yield "strided", wide[..., ::2]  # neither contiguous nor channels_last


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kw", [dict(), dict(k=1), dict(k=9), dict(stride=2), dict(dilation=2, padding=2),
                                dict(groups=4), dict(bias=False), dict(cin=3, cout=48)])
def test_packed_conv_matches_conv2d(dtype, kw):
    conv, packed = _pair(dtype=dtype, **kw)
    assert packed.weight is conv.weight and packed.state_dict().keys() == conv.state_dict().keys()
    x = torch.randn(2, conv.in_channels, 17, 23).to(dtype)
    for name, xi in _layouts(x):
        with torch.no_grad():
            assert packed.packable(xi) is PACKS[dtype]
            out = packed(xi)
        ref = conv(xi.float() if dtype == torch.bfloat16 else xi).to(dtype) if dtype == torch.float32 else \
            F.conv2d(xi.float(), conv.weight.float(), None if conv.bias is None else conv.bias.float(),
                     conv.stride, conv.padding, conv.dilation, conv.groups)
        assert out.dtype == dtype and out.shape == ref.shape, name
        torch.testing.assert_close(out.float(), ref.float(), **TOL[dtype], msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_epilogues(dtype):
    conv, packed = _pair(8, 8, dtype=dtype)
    x = torch.randn(1, 8, 13, 11).to(dtype).contiguous(memory_format=torch.channels_last)
    res = torch.randn(1, 8, 13, 11).to(dtype)
    y = F.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=1)
    with torch.no_grad():
        cases = {
            "relu": (packed.conv_act(x, "relu"), F.relu(y)),
            "leaky": (packed.conv_act(x, "leaky_relu", 0.2), F.leaky_relu(y, 0.2)),
            "no bias": (packed.conv_act(x, bias=False), y - conv.bias.float().view(1, -1, 1, 1)),
            "add": (packed.conv_add(x, res), res.float() + y),
            "scaled add": (packed.conv_add(x, res, 0.2), res.float() + 0.2 * y),
            "fp32 residual": (packed.conv_add(x, res.float(), 0.1), res.float() + 0.1 * y),
        }
    for name, (out, ref) in cases.items():
        # the packed path rounds once to x's dtype; the plain one promotes with an fp32 residual
        promoted = name == "fp32 residual" and not PACKS[dtype]
        assert out.dtype == (torch.float32 if promoted else dtype), name
        torch.testing.assert_close(out.float(), ref, **TOL[dtype], msg=name)


def test_helpers_route_to_the_packed_primitive_and_match():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 6, 3, padding=1).requires_grad_(False)
    packed = PackedConv2d.from_conv(conv)
    x, res = torch.randn(2, 6, 9, 10), torch.randn(2, 6, 9, 10)
    for slopes in (1, 6):
        prelu = nn.PReLU(slopes).requires_grad_(False)
        prelu.weight.uniform_(0.05, 0.4)
        with torch.no_grad():
            torch.testing.assert_close(conv_prelu(x, packed, prelu), prelu(conv(x)), atol=2e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(conv_residual(x, packed, res, 0.2), res + 0.2 * conv(x), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(conv_act(x, packed, "leaky_relu", 0.1), F.leaky_relu(conv(x), 0.1))
        torch.testing.assert_close(conv_act(x, conv, "relu"), F.relu(conv(x)))
    with pytest.raises(ValueError, match="act must be"):
        conv_act(x, conv, "gelu")
    with pytest.raises(ValueError, match="act must be"):
        packed.conv_act(x, "gelu")
    with pytest.raises(ValueError, match="residual must have the output shape"), torch.no_grad():
        packed.conv_add(x, res[:, :, :-1])


def test_weights_changed_after_packing_are_repacked():
    conv, packed = _pair(4, 4)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        first = packed(x)
        conv.weight.mul_(-2.0)  # in place, as load_state_dict / an optimizer step do
        conv.bias.add_(1.0)
        second, expected = packed(x), conv(x)
        packed.load_state_dict({"weight": torch.zeros_like(conv.weight), "bias": torch.ones_like(conv.bias)})
        third = packed(x)
    torch.testing.assert_close(second, expected, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(third, torch.ones_like(third))


def test_autograd_uses_the_plain_convolution():
    torch.manual_seed(2)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    packed = PackedConv2d.from_conv(copy.deepcopy(conv))
    x = torch.randn(2, 5, 6, 7, requires_grad=True)
    assert not packed.packable(x)
    res = torch.randn(2, 7, 6, 7)
    (conv(x).square().sum() + (res + 0.5 * conv(x)).sum()).backward()
    gx, gw = x.grad.clone(), conv.weight.grad.clone()
    x.grad = None
    (packed(x).square().sum() + packed.conv_add(x, res, 0.5).sum()).backward()
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(packed.weight.grad, gw)


def test_pack_convolutions_keeps_the_state_dict():
    model = fastsr.models.create("NonBNResNet", scale=4, num_blocks=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pack_convolutions(model)
    assert all(type(m) is not nn.Conv2d for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


MODELS = {
    "NonBNResNet": dict(num_blocks=3),
    "SRResNet": dict(num_blocks=2),
    "MSRResNet": dict(num_block=2),
    "RRDBNet": dict(num_block=1),
    "SRVGGNetCompact": dict(num_conv=4),
    "SRVGGNetCompact-relu": dict(num_conv=3, act_type="relu"),
    "SRVGGNetCompact-lrelu": dict(num_conv=3, act_type="leakyrelu"),
    "EDSR": dict(num_block=2),
    "RCAN": dict(num_group=1, num_block=2),
}


def _model(key, scale=4):
    torch.manual_seed(3)
    m = fastsr.models.create(key.split("-")[0], scale=scale, **MODELS[key]).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.PReLU):
                mod.weight.uniform_(0.05, 0.4)
    return m


@pytest.mark.parametrize("key", sorted(MODELS))
@pytest.mark.parametrize("scale", [4, 2])
def test_optimize_for_inference_matches_the_model(key, scale):
    if key.startswith("SRResNet") and scale == 2 or key == "RRDBNet" and scale == 2:
        scale = 4  # (RRDBNet x2 pixel-unshuffles: needs even sizes; covered at x4)
    model = _model(key, scale)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        ref = model(x)
    fp32 = fastsr.optimize_for_inference(model, precision="fp32")
    bf16 = fastsr.optimize_for_inference(model, precision="bf16")
    assert any(isinstance(m, PackedConv2d) for m in fp32.modules())
    assert fp32.scale == scale and bf16.memory_format == torch.channels_last
    out32, out16 = fp32(x), bf16(x)
    assert out32.dtype == out16.dtype == torch.float32 and out32.shape == ref.shape
    torch.testing.assert_close(out32, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out16, ref, atol=0.06, rtol=0.05)
    # the user's model is untouched: same class of layers, weights, gradients on
    assert all(type(m) is not PackedConv2d for m in model.modules())
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_optimize_for_inference_arguments():
    with pytest.raises(ValueError, match="no parameters"):
        fastsr.optimize_for_inference(nn.PixelShuffle(2))
    with pytest.raises(ValueError, match="precision must be"):
        fastsr.optimize_for_inference(_model("EDSR"), precision="int8")
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        fastsr.optimize_for_inference(_model("EDSR"), precision="fp16")
    auto = fastsr.optimize_for_inference(_model("EDSR"))
    assert auto.precision == fastsr.evaluate.resolve_precision("auto", "cpu")


def test_reduced_precision_overflow_is_recomputed_in_fp32():
    model = _model("EDSR")
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    im = fastsr.optimize_for_inference(model, precision="bf16")
    im.model.conv_last.bias.fill_(float("inf"))  # Inf in the bf16 copy only stands for an overflow
    with pytest.warns(RuntimeWarning, match="recomputing this batch in fp32"):
        out = im(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bf16_is_within_a_few_hundredths_of_a_db_on_photos():
    """The inference precision auto picks on a bf16 CPU, against fp32, on real photographs
    with the shipped model: the Y-PSNR of each crop changes by less than 0.05 dB."""
    from fastsr.data import degrade, sample_images
    from fastsr.metrics import psnr

    model = fastsr.models.pretrained("nonbn_x4")
    fp32 = fastsr.optimize_for_inference(model, precision="fp32")
    bf16 = fastsr.optimize_for_inference(model, precision="bf16")
    for name, hr in sample_images("all")[:4]:
        h, w = hr.shape[-2:]
        hr = hr[:, (h - 128) // 2:(h + 128) // 2, (w - 128) // 2:(w + 128) // 2][None]
        lr = degrade(hr, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fp32 recompute
            a, b = fp32(lr).clamp(0, 1), bf16(lr).clamp(0, 1)
        pa = psnr(a, hr, crop_border=4, test_y_channel=True)
        pb = psnr(b, hr, crop_border=4, test_y_channel=True)
        assert abs(float(pa) - float(pb)) < 0.05, (name, pa, pb)


# ---------------------------------------------------------------------------- SelfEnsemble
def _dihedral(x):
    """The eight flips / 90-degree rotations of x and the inverse of each."""
    for k in range(4):
        for flip in (False, True):
            fwd = (lambda t, k=k, f=flip: (t.rot90(k, (-2, -1)).flip(-1) if f else t.rot90(k, (-2, -1))))
            inv = (lambda t, k=k, f=flip: (t.flip(-1) if f else t).rot90(-k, (-2, -1)))
            yield fwd, inv


def test_self_ensemble_is_the_mean_over_the_eight_transforms():
    model = _model("EDSR")
    x = torch.rand(2, 3, 11, 13)  # not square: rotations swap h and w
    with torch.no_grad():
        want = torch.stack([inv(model(fwd(x))) for fwd, inv in _dihedral(x)]).mean(0)
        got = fastsr.SelfEnsemble(model)(x)
    assert got.shape == (2, 3, 44, 52) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_self_ensemble_is_equivariant_where_the_model_is_not():
    model = _model("NonBNResNet")
    ens = fastsr.SelfEnsemble(model)
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        for fwd, inv in _dihedral(x):
            torch.testing.assert_close(ens(fwd(x)), fwd(ens(x)), atol=1e-5, rtol=1e-5)
        single_gap = (model(x.flip(-1)) - model(x).flip(-1)).abs().max()
    assert single_gap > 1e-3  # the model alone is not: the check above can fail


def test_self_ensemble_of_a_prepared_model_and_its_errors():
    model = _model("SRVGGNetCompact")
    x = torch.rand(1, 3, 9, 14)
    with torch.no_grad():
        ref = fastsr.SelfEnsemble(model)(x)
    prepared = fastsr.SelfEnsemble(fastsr.optimize_for_inference(model, precision="fp32"))
    assert prepared.scale == 4
    torch.testing.assert_close(prepared(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"x must be \(N, C, h, w\)"):
        prepared(x[0])
