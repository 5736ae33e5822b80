"""fastsr.models: shapes, paper parameter counts, fused == unfused, checkpoints, errors.

Everything runs on tiny inputs (1x3x12x12 LR) and small widths; full-size models are only
built on the meta device to count parameters (no memory, no forward)."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastsr
from fastsr import models
from fastsr.models import count_parameters, create, load_state_dict

torch.manual_seed(0)

# name -> (small constructor kwargs, supported scales)
GENERATORS = {
    "SRResNet": (dict(num_blocks=2, channels=8), (2, 3, 4, 8)),
    "NonBNResNet": (dict(num_blocks=2, channels=8), (2, 3, 4, 8)),
    "MSRResNet": (dict(num_block=2, num_feat=8), (2, 3, 4)),
    "SharpnessGenerator": (dict(num_blocks=2, channels=8), (1,)),
    "AttentiveGenerator": (dict(channels=8, num_steps=2, num_rdb=1, rdb_layers=2, growth=4, num_mapping=2), (2, 3, 4)),
    "RRDBNet": (dict(num_block=1, num_feat=8, num_grow_ch=4), (1, 2, 4)),
    "SRCNN": (dict(), (2, 3, 4)),
    "ESPCN": (dict(), (2, 3, 4, 8)),
    "VDSR": (dict(num_layers=3, channels=8), (2, 3, 4)),
    "EDSR": (dict(num_feat=8, num_block=2), (2, 3, 4, 8)),
    "RCAN": (dict(num_feat=8, num_group=2, num_block=1, squeeze_factor=4), (2, 3, 4, 8)),
}

# name -> (small kwargs, input size)
DISCRIMINATORS = {
    "SRGANDiscriminator": (dict(input_size=16, num_feat=4), 16),
    "WGANCritic": (dict(input_size=64, num_feat=4), 64),
    "SharpnessDiscriminator": (dict(input_size=24, num_feat=4), 24),
    "BEGANDiscriminator": (dict(input_size=16, num_feat=4, hidden=8), 16),
    "VGGStyleDiscriminator": (dict(num_feat=2), 128),
}

# generators whose fused path differs from the unfused one (fastsr epilogues in use)
FUSED_GENERATORS = ["SRResNet", "SRResNet-bn", "NonBNResNet", "MSRResNet", "SharpnessGenerator", "RRDBNet", "VDSR", "EDSR", "RCAN"]


def _gen(name, **kw):
    if name == "SRResNet-bn":
        return create("SRResNet", **{**GENERATORS["SRResNet"][0], "bn": True, **kw})
    if name == "SRResNet":
        return create("SRResNet", **{**GENERATORS["SRResNet"][0], "bn": False, **kw})
    return create(name, **{**GENERATORS[name][0], **kw})


def _lr(n=1, size=12, dtype=torch.float32):
    return torch.rand(n, 3, size, size, dtype=dtype)


def _pair(name, **kw):
    """Same weights, fused=True and fused=False."""
    torch.manual_seed(1)
    a = _gen(name, fused=True, **kw)
    b = _gen(name, fused=False, **kw)
    b.load_state_dict(a.state_dict())
    return a, b


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_model_and_rejects_unknown():
    names = models.list_models()
    for n in list(GENERATORS) + list(DISCRIMINATORS):
        assert n in names
    assert fastsr.models is models
    with pytest.raises(ValueError, match="unknown model 'nope'.*SRResNet"):
        create("nope")


def test_register_model_refuses_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("SRResNet")(torch.nn.Identity)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "name,scale", [(n, s) for n, (_, scales) in GENERATORS.items() for s in scales]
)
def test_generator_output_shape(name, scale):
    m = _gen(name, scale=scale)
    with torch.no_grad():
        y = m(_lr(2))
    assert y.shape == (2, 3, 12 * scale, 12 * scale)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generator_bad_scale(name):
    with pytest.raises(ValueError, match=rf"{name}: scale must be one of"):
        _gen(name, scale=5)


@pytest.mark.parametrize("name", list(DISCRIMINATORS))
def test_discriminator_shape_and_bad_input_size(name):
    kw, size = DISCRIMINATORS[name]
    d = create(name, **kw)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        y = d(x)
    expected = x.shape if name == "BEGANDiscriminator" else (2, 1)
    assert y.shape == expected
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(N, 3, {size}, {size}\)"):
        d(torch.rand(2, 3, size + 8, size + 8))


def test_wgan_critic_optional_skip_and_no_bn():
    x = torch.rand(2, 3, 64, 64)
    for kw in (dict(skip=True), dict(bn=False)):
        d = create("WGANCritic", input_size=64, num_feat=4, **kw)
        assert d(x).shape == (2, 1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())


def test_discriminator_bad_constructor_size():
    with pytest.raises(ValueError, match="VGGStyleDiscriminator: input_size must be 128 or 256"):
        create("VGGStyleDiscriminator", input_size=96)
    with pytest.raises(ValueError, match="BEGANDiscriminator: input_size must be a multiple of 8"):
        create("BEGANDiscriminator", input_size=20)
    with pytest.raises(ValueError, match="WGANCritic: input_size must be an int >= 64"):
        create("WGANCritic", input_size=32)


@pytest.mark.parametrize("name", [n for n in DISCRIMINATORS if n != "BEGANDiscriminator"])
def test_discriminators_return_logits(name):
    # no sigmoid in the module: a zero last layer with bias -10 must give exactly -10
    kw, size = DISCRIMINATORS[name]
    d = create(name, **kw)
    last = [m for m in d.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, -10.0)
    with torch.no_grad():
        y = d(torch.rand(2, 3, size, size))
    assert torch.equal(y, torch.full((2, 1), -10.0))


def test_rrdbnet_unshuffle_needs_divisible_size():
    m = _gen("RRDBNet", scale=1)
    with pytest.raises(ValueError, match="RRDBNet: scale=1 needs H and W divisible by 4"):
        m(torch.rand(1, 3, 10, 10))


def test_attentive_generator_attention_maps():
    m = _gen("AttentiveGenerator")
    y, maps = m(_lr(), return_attention=True)
    assert y.shape == (1, 3, 48, 48) and len(maps) == 2
    for a in maps:
        assert a.shape == (1, 1, 12, 12) and a.min() >= 0 and a.max() <= 1


def test_sharpness_generator_identity_at_zero_output_conv():
    # with the image skip the generator predicts a residual: zero last conv -> identity
    m = _gen("SharpnessGenerator")
    torch.nn.init.zeros_(m.conv_last.weight)
    torch.nn.init.zeros_(m.conv_last.bias)
    x = _lr()
    for fused in (True, False):
        m.fused = fused
        torch.testing.assert_close(m(x), x, rtol=0, atol=0)


# ----------------------------------------------------------------------------- parameter counts


def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def _meta(name, **kw):
    with torch.device("meta"):
        return create(name, **kw)


def test_srresnet_parameter_count_matches_paper_architecture():
    # Ledig et al. Fig. 4: k9n64 + PReLU; 16 x [k3n64, BN, PReLU, k3n64, BN]; k3n64 + BN;
    # 2 x [k3n256, PixelShuffle x2, PReLU]; k9n3 (per-channel PReLU, BN weight+bias).
    block = 2 * _conv(64, 64, 3) + 2 * 128 + 64
    expected = (_conv(3, 64, 9) + 64 + 16 * block + _conv(64, 64, 3) + 128
                + 2 * (_conv(64, 256, 3) + 64) + _conv(64, 3, 9))
    n = count_parameters(_meta("SRResNet"))
    assert n == expected == 1_550_659
    assert abs(n - 1.55e6) / 1.55e6 < 0.005  # the ~1.55 M usually quoted
    # bn=False drops the 16*2 + 1 BN layers (weight + bias each)
    assert count_parameters(_meta("SRResNet", bn=False)) == expected - 33 * 128


def test_nonbn_parameter_count_matches_table1():
    # head k9n64 + PReLU; 16 x [G1 k3n64, PReLU, G2 k3n64]; G3 k3n64; 2 x [G4 k3n256, PReLU]; G5 k1n3
    expected = (_conv(3, 64, 9) + 64 + 16 * (2 * _conv(64, 64, 3) + 64) + _conv(64, 64, 3)
                + 2 * (_conv(64, 256, 3) + 64) + _conv(64, 3, 1))
    assert count_parameters(_meta("NonBNResNet")) == expected == 1_531_075


def test_wgan_critic_parameter_count_matches_table2():
    table = [(4, 64), (4, 128), (4, 256), (4, 512), (4, 1024), (4, 2048), (1, 1024), (1, 512),
             (1, 128), (3, 128), (3, 512)]
    expected, cin = 0, 3
    for i, (k, c) in enumerate(table):
        expected += _conv(cin, c, k, bias=(i == 0)) + (2 * c if i > 0 else 0)
        cin = c
    expected += 512 * 1 * 1 + 1  # 96 -> 48, 24, 12, 6, 3, 1 after D1-D6
    assert count_parameters(_meta("WGANCritic")) == expected
    # 128 px input: 2x2 spatial before the FC layer
    assert count_parameters(_meta("WGANCritic", input_size=128)) == expected + 3 * 512


def test_published_parameter_counts():
    assert count_parameters(_meta("RRDBNet")) == 16_697_987  # ESRGAN's 16.7 M
    assert abs(count_parameters(_meta("EDSR")) - 1.5e6) / 1.5e6 < 0.02  # EDSR baseline 1.5 M
    assert abs(count_parameters(_meta("RCAN")) - 15.6e6) / 15.6e6 < 0.01  # RCAN ~15.6 M
    assert count_parameters(_meta("SRCNN", in_channels=1)) == 8129  # 9-1-5 with 64/32 filters
    assert count_parameters(_meta("MSRResNet")) == 1_517_571


def test_msrresnet_loads_basicsr_keys():
    # BasicSR MSRResNet x4 key names, written out independently of fastsr's module tree
    nf, nb = 8, 2
    g = torch.Generator().manual_seed(5)
    shapes = {"conv_first": (nf, 3), "upconv1": (4 * nf, nf), "upconv2": (4 * nf, nf),
              "conv_hr": (nf, nf), "conv_last": (3, nf)}
    shapes.update({f"body.{i}.conv{k}": (nf, nf) for i in range(nb) for k in (1, 2)})
    sd = {}
    for name, (co, ci) in shapes.items():
        sd[f"{name}.weight"] = torch.randn(co, ci, 3, 3, generator=g) * 0.1
        sd[f"{name}.bias"] = torch.randn(co, generator=g) * 0.1
    m = load_state_dict(create("MSRResNet", num_feat=nf, num_block=nb), {"params": sd})

    def conv(name, h):
        return F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    x = _lr()
    feat = F.leaky_relu(conv("conv_first", x), 0.1)
    out = feat
    for i in range(nb):
        out = out + conv(f"body.{i}.conv2", F.relu(conv(f"body.{i}.conv1", out)))
    out = F.leaky_relu(F.pixel_shuffle(conv("upconv1", out), 2), 0.1)
    out = F.leaky_relu(F.pixel_shuffle(conv("upconv2", out), 2), 0.1)
    out = conv("conv_last", F.leaky_relu(conv("conv_hr", out), 0.1))
    out = out + F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(m(x), out, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- fused == unfused


def _fwd_bwd(m, x):
    x = x.clone().requires_grad_(True)
    y = m(x)
    # positive upstream gradient: the bias gradients (sums over N*H*W) then do not cancel
    # catastrophically, so a relative tolerance is meaningful for them
    g = (0.5 + torch.rand(y.shape, generator=torch.Generator().manual_seed(7))).to(y.dtype)
    (y.float() * g.float()).sum().backward()
    grads = {k: p.grad.float().clone() for k, p in m.named_parameters()}
    return y.detach().float(), x.grad.float(), grads


@pytest.mark.parametrize("name", FUSED_GENERATORS)
def test_fused_matches_unfused_fp32(name):
    a, b = _pair(name)
    x = _lr(2)
    ya, gxa, ga = _fwd_bwd(a, x)
    yb, gxb, gb = _fwd_bwd(b, x)
    # fp32: the fused epilogue adds bias and residual in a different order than conv(+bias)
    # then add: a few ulp per layer, far below 1e-5 for O(1) activations of these tiny nets.
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gxa, gxb, rtol=1e-4, atol=1e-5)
    for k in ga:
        atol = 1e-5 * max(1.0, gb[k].abs().max().item())
        torch.testing.assert_close(ga[k], gb[k], rtol=1e-4, atol=atol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("name", ["NonBNResNet", "RRDBNet", "SharpnessGenerator"])
def test_fused_matches_unfused_bf16(name):
    a, b = _pair(name)
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    ref = _gen(name, fused=False)  # fp32 oracle with the same (bf16-rounded) weights
    ref.load_state_dict({k: v.float() for k, v in b.state_dict().items()})
    x = _lr(1, dtype=torch.bfloat16)
    ya, gxa, _ = _fwd_bwd(a, x)
    yb, gxb, _ = _fwd_bwd(b, x)
    yr, gxr, _ = _fwd_bwd(ref, x.float())
    # bf16 has an 8-bit mantissa (eps = 2^-8). Forward: the unfused path rounds after every
    # op, the fused one once per epilogue; both stay within ~1 eps of the oracle (measured
    # 0.85-1.04 eps), bound 4 eps. Input gradient: bf16 convolution backward itself loses
    # 3-4 % (relative L2) through cancelling sums on either path, so there the test is
    # "fused no worse than unfused" (measured ratios 0.83-1.1), bound 1.5x + 1 eps.
    eps = 2**-8
    scale = yr.abs().max().item()
    assert (ya - yr).abs().max().item() <= 4 * eps * scale
    assert (yb - yr).abs().max().item() <= 4 * eps * scale
    rel_f = ((gxa - gxr).norm() / gxr.norm()).item()
    rel_u = ((gxb - gxr).norm() / gxr.norm()).item()
    assert rel_f <= 1.5 * rel_u + eps, (rel_f, rel_u)
    assert rel_f < 0.1


def test_fused_flag_propagates_and_state_dict_round_trips():
    a, b = _pair("NonBNResNet")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(blk.fused for blk in a.body) and a.upsampler.fused
    a.fused = False
    assert not any(blk.fused for blk in a.body) and not a.upsampler.fused
    a.fused = True
    # unfused -> fused and back, through a state dict
    sd = {k: v.clone() for k, v in b.state_dict().items()}
    c = _gen("NonBNResNet", fused=True)
    c.load_state_dict(sd)
    d = _gen("NonBNResNet", fused=False)
    d.load_state_dict(c.state_dict())
    x = _lr()
    with torch.no_grad():
        torch.testing.assert_close(c(x), d(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["NonBNResNet", "RRDBNet", "SRResNet-bn"])
def test_channels_last_input(name):
    a, _ = _pair(name)
    a.eval()
    x = _lr(2)
    with torch.no_grad():
        ref = a(x)
        y = a(x.to(memory_format=torch.channels_last))
        a.to(memory_format=torch.channels_last)
        y2 = a(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y2, ref, rtol=1e-5, atol=1e-5)


def test_compile_fullgraph_nonbn_generator():
    torch._dynamo.reset()
    m = _gen("NonBNResNet", num_blocks=1, fused=True)
    x = _lr()
    explanation = torch._dynamo.explain(m)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    # aot_eager traces forward + backward through the custom ops' fake / autograd
    # registrations without inductor code generation (seconds, not minutes on 2 cores)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    ya, yb = compiled(xa), m(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-6, atol=1e-6)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- checkpoints


def _basicsr_rrdbnet_state_dict(num_feat, num_block, grow, in_ch=3, out_ch=3, gen=None):
    """A state dict with BasicSR's RRDBNet key names and shapes (written independently of
    fastsr's module tree)."""
    def t(*shape):
        return torch.randn(*shape, generator=gen) * 0.1

    sd = {"conv_first.weight": t(num_feat, in_ch, 3, 3), "conv_first.bias": t(num_feat)}
    for i in range(num_block):
        for j in (1, 2, 3):
            for k in range(1, 6):
                cin = num_feat + (k - 1) * grow
                cout = grow if k < 5 else num_feat
                sd[f"body.{i}.rdb{j}.conv{k}.weight"] = t(cout, cin, 3, 3)
                sd[f"body.{i}.rdb{j}.conv{k}.bias"] = t(cout)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        sd[f"{name}.weight"] = t(num_feat, num_feat, 3, 3)
        sd[f"{name}.bias"] = t(num_feat)
    sd["conv_last.weight"] = t(out_ch, num_feat, 3, 3)
    sd["conv_last.bias"] = t(out_ch)
    return sd


def _basicsr_rrdbnet_forward(sd, x, num_block):
    """BasicSR's RRDBNet.forward (x4), written with F.conv2d on the raw state dict."""
    def conv(name, h):
        return F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    def lrelu(h):
        return F.leaky_relu(h, 0.2)

    feat = conv("conv_first", x)
    body = feat
    for i in range(num_block):
        inp = body
        for j in (1, 2, 3):
            xs = [body]
            for k in range(1, 5):
                xs.append(lrelu(conv(f"body.{i}.rdb{j}.conv{k}", torch.cat(xs, 1))))
            body = conv(f"body.{i}.rdb{j}.conv5", torch.cat(xs, 1)) * 0.2 + body
        body = body * 0.2 + inp
    feat = feat + conv("conv_body", body)
    feat = lrelu(conv("conv_up1", F.interpolate(feat, scale_factor=2, mode="nearest")))
    feat = lrelu(conv("conv_up2", F.interpolate(feat, scale_factor=2, mode="nearest")))
    return conv("conv_last", lrelu(conv("conv_hr", feat)))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("key", ["params_ema", "params"])
def test_rrdbnet_loads_basicsr_checkpoint(tmp_path, fused, key):
    gen = torch.Generator().manual_seed(3)
    sd = _basicsr_rrdbnet_state_dict(8, 2, 4, gen=gen)
    path = tmp_path / "net_g.pth"
    torch.save({key: sd}, path)
    m = create("RRDBNet", num_feat=8, num_block=2, num_grow_ch=4, fused=fused)
    load_state_dict(m, path)
    x = _lr()
    with torch.no_grad():
        torch.testing.assert_close(m(x), _basicsr_rrdbnet_forward(sd, x, 2), rtol=1e-5, atol=1e-5)


def test_load_state_dict_prefers_params_ema_and_strips_module_prefix():
    m = _gen("NonBNResNet")
    ema = {"module." + k: torch.full_like(v, 0.5) for k, v in m.state_dict().items()}
    plain = {k: torch.zeros_like(v) for k, v in m.state_dict().items()}
    load_state_dict(m, {"params": plain, "params_ema": ema})
    assert all((v == 0.5).all() for v in m.state_dict().values())


def test_partial_or_wrong_checkpoint_lists_keys():
    m = _gen("RRDBNet")
    sd = dict(m.state_dict())
    before = {k: v.clone() for k, v in sd.items()}
    del sd["conv_hr.weight"]
    sd["conv_extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as exc:
        load_state_dict(m, {"params_ema": sd})
    msg = str(exc.value)
    assert "missing keys (1): ['conv_hr.weight']" in msg
    assert "unexpected keys (1): ['conv_extra.weight']" in msg
    # a checkpoint of another size: shape mismatch listed, nothing loaded
    other = create("RRDBNet", num_block=1, num_feat=16, num_grow_ch=4).state_dict()
    with pytest.raises(ValueError, match=r"shape mismatches .*conv_first.weight: checkpoint \(16, 3, 3, 3\) vs model \(8, 3, 3, 3\)"):
        load_state_dict(m, other)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(KeyError, match="no key 'params_ema'"):
        load_state_dict(m, {"params": other}, key="params_ema")


# ----------------------------------------------------------------------------- init


def test_init_weights_normal_and_default():
    torch.manual_seed(0)
    m = create("NonBNResNet", num_blocks=4, channels=32)
    models.init_weights(m, "normal", 0.02)
    w = torch.cat([mod.weight.flatten() for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert all((mod.bias == 0).all() for mod in m.modules() if isinstance(mod, torch.nn.Conv2d))
    models.init_weights(m, "default")
    conv = m.body[0].conv1  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1 / math.sqrt(32 * 9)
    assert conv.weight.abs().max() <= bound and conv.weight.std() > 0.5 * bound / math.sqrt(3)
    with pytest.raises(ValueError, match="method must be 'default' or 'normal'"):
        models.init_weights(m, "xavier")
