"""ICNR (Aitken et al. 2017): a sub-pixel upsampler initialised by it has no period-r
component at initialisation; the training recipes turn it on."""
import pytest
import torch
from torch import nn

from fastsr import models
from fastsr.metrics import periodic_component
from fastsr.nn import Upsampler, icnr_
from fastsr.train import load_config
from fastsr.train.builders import build_models


def _circular(model: nn.Module) -> nn.Module:
    """Every conv with circular padding: the image has no border, so a resize-convolution's
    output has exactly no energy at the period-r harmonics."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.padding_mode = "circular"
    return model


def _period_energy(y: torch.Tensor, r: int) -> float:
    return float(periodic_component(y.double(), r).pow(2).mean())


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_icnr_upsampler_stages_have_no_period_r_component(scale):
    torch.manual_seed(scale)
    plain = _circular(Upsampler(8, scale, fused=False))
    icnr = _circular(Upsampler(8, scale, fused=False))
    icnr.load_state_dict(plain.state_dict())
    for conv, r in icnr.subpixel_convs():
        icnr_(conv, r)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        for stage_plain, stage_icnr in zip(plain, icnr):
            r = stage_icnr.r
            y_plain, y_icnr = stage_plain(x), stage_icnr(x)
            assert _period_energy(y_plain, r) > 1e-4  # PyTorch's default init draws a checkerboard
            assert _period_energy(y_icnr, r) < 1e-14
            x = y_icnr
        # x4 / x8: the PReLU between stages acts on the second conv's phase-varying output,
        # which leaves a small period-scale residue; ICNR still removes most of the energy
        x = torch.randn(2, 8, 6, 6)
        assert _period_energy(icnr(x), scale) < 0.1 * _period_energy(plain(x), scale)


def test_icnr_single_stage_is_nearest_upsampling_plus_conv():
    torch.manual_seed(0)
    up = Upsampler(4, 2, fused=False)
    icnr_(up[0].conv, 2)
    x = torch.randn(1, 4, 5, 7)
    with torch.no_grad():
        y = up[0].shuffle(up[0].conv(x))
        ref = nn.functional.interpolate(nn.functional.conv2d(x, up[0].conv.weight[::4], up[0].conv.bias[::4],
                                                             padding=1), scale_factor=2, mode="nearest")
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("name,kw", [("NonBNResNet", dict(num_blocks=2, scale=2)),
                                     ("SRResNet", dict(num_blocks=2, scale=3)), ("ESPCN", {}),
                                     ("EDSR", dict(num_block=1)), ("SRVGGNetCompact", dict(num_conv=1))])
def test_models_icnr_option(name, kw):
    torch.manual_seed(1)
    plain = models.create(name, fused=False, **kw).eval()
    torch.manual_seed(1)
    g = models.create(name, fused=False, icnr=True, **kw).eval()
    assert g.state_dict().keys() == plain.state_dict().keys()
    _circular(plain), _circular(g)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        e_plain, e_icnr = _period_energy(plain(x), g.scale), _period_energy(g(x), g.scale)
    assert e_plain > 1e-9
    assert e_icnr < 1e-6 * e_plain


def test_init_icnr_keeps_the_layers_initialisation_and_refuses_models_without_pixelshuffle():
    g = models.create("MSRResNet", num_block=1)
    models.init_weights(g, "normal", std=0.02)
    models.init_icnr(g)
    w = g.upconv1.weight
    assert torch.equal(w, w[::4].repeat_interleave(4, dim=0))
    assert 0.015 < float(w[::4].detach().std()) < 0.025
    with pytest.raises(ValueError, match="no sub-pixel convolution"):
        models.init_icnr(models.create("RRDBNet", num_block=1))


def test_icnr_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiple of r"):
        icnr_(nn.Conv2d(4, 6, 3), 2)
    with pytest.raises(ValueError, match="r must be"):
        icnr_(nn.Conv2d(4, 8, 3), 0)
    with pytest.raises(TypeError, match="Conv2d"):
        icnr_(nn.Linear(4, 8), 2)


@pytest.mark.parametrize("icnr", [True, False])
def test_training_recipes_use_icnr_by_default(icnr):
    cfg = load_config("nonbn_x4", [] if icnr else ["model.icnr=false"])
    cfg["model"]["generator"] = dict(cfg["model"]["generator"], num_blocks=1)
    _, G, _ = build_models(cfg)
    w = G.upsampler[0].conv.weight
    assert torch.equal(w, w[::4].repeat_interleave(4, dim=0)) is icnr
