"""The measures a shipped model is judged by, on synthetic images with known answers:
checkerboard energy, mean colour error, NIQE (BasicSR's code, offline)."""
import math

import pytest
import torch

from fastsr import metrics
from fastsr.metrics import checkerboard_energy, periodic_component, smooth_blocks


def _pattern(scale: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(scale, scale, generator=g, dtype=torch.float64)


def test_pure_period_pattern_has_its_energy():
    q = _pattern(4)
    img = q.repeat(10, 12)
    p = periodic_component(img, 4)
    torch.testing.assert_close(p, q - q.mean())
    torch.testing.assert_close(periodic_component(img, 4, window=True), q - q.mean())


def test_window_keeps_ramps_out():
    ramp = torch.arange(32, dtype=torch.float64).expand(32, 32) * 0.5  # 0.5 level / pixel
    assert float(periodic_component(ramp, 4).pow(2).mean()) > 0.1
    assert float(periodic_component(ramp, 4, window=True).pow(2).mean()) < 1e-4


@pytest.mark.parametrize("scale", [2, 4])
def test_checkerboard_energy_of_a_known_pattern_on_a_flat_image(scale):
    H, W = 16 * scale, 24 * scale
    hr = torch.full((1, 1, H, W), 100.0, dtype=torch.float64)
    q = _pattern(scale, scale) * 3  # levels
    sr = hr + q.repeat(H // scale, W // scale)
    e = checkerboard_energy(sr, hr, hr, scale, data_range=255.0, quantize=False)
    expected = float((q - q.mean()).pow(2).mean())
    assert e.shape == (1,) and math.isclose(float(e), expected, rel_tol=1e-9)
    # no pattern -> 0; a brightness offset is not a checkerboard
    assert float(checkerboard_energy(hr + 2.0, hr, hr, scale, data_range=255.0, quantize=False)) < 1e-20


def test_checkerboard_energy_counts_smooth_blocks_only():
    scale, B = 4, 32
    g = torch.Generator().manual_seed(1)
    hr = torch.full((1, 1, 64, 64), 120.0, dtype=torch.float64)
    hr[..., :, 32:] += 40 * torch.rand(1, 1, 64, 32, generator=g, dtype=torch.float64)  # texture on the right
    mask = smooth_blocks(hr, B, 1.0, data_range=255.0, quantize=False)
    assert mask.tolist() == [[[True, False], [True, False]]]
    q = _pattern(scale, 3)
    sr = hr.clone()
    sr[..., :, 32:] += q.repeat(16, 8)  # the pattern only where the image is textured
    assert float(checkerboard_energy(sr, hr, hr, scale, data_range=255.0, quantize=False)) < 1e-20
    flat_textured = torch.rand(1, 1, 64, 64, generator=g, dtype=torch.float64) * 255
    assert math.isnan(float(checkerboard_energy(flat_textured, flat_textured, flat_textured, 4, data_range=255.0)))


def test_checkerboard_energy_rgb_and_errors():
    hr = torch.full((2, 3, 32, 32), 0.5)
    q = _pattern(4).float() / 255
    sr = hr + q.repeat(8, 8)  # same pattern in R, G, B -> Y pattern = (65.481+128.553+24.966)/255 * q
    e = checkerboard_energy(sr, hr, hr, 4, quantize=False)
    k = (65.481 + 128.553 + 24.966) / 255
    expected = k * k * float((q.double() * 255 - q.double().mean() * 255).pow(2).mean())
    assert e.shape == (2,) and torch.allclose(e, torch.full((2,), expected, dtype=torch.float64), rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of scale"):
        checkerboard_energy(sr, hr, hr, 4, block=30)
    with pytest.raises(ValueError, match="one shape"):
        checkerboard_energy(sr[:, :, :16], hr, hr, 4)
    with pytest.raises(ValueError, match="max_gradient"):
        smooth_blocks(hr, 8, -1.0)


def test_mean_colour_error_of_a_constant_offset():
    g = torch.Generator().manual_seed(0)
    hr = (torch.rand(1, 3, 40, 40, generator=g, dtype=torch.float64) * 200 + 20).round()
    offset = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    # 8-bit images, as the judge measures them: exact in levels
    err = metrics.channel_mean_error((hr + offset).to(torch.uint8), hr.to(torch.uint8), crop_border=4)
    torch.testing.assert_close(err, torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64))


def test_niqe_is_basicsr_calculate_niqe_offline():
    import skimage.data

    from fastsr.metrics.niqe import basicsr_niqe_module

    img = skimage.data.astronaut()[:200, :300]
    ours = metrics.niqe(torch.from_numpy(img).permute(2, 0, 1), crop_border=4)
    ref = basicsr_niqe_module().calculate_niqe(img[:, :, ::-1].copy(), 4, input_order="HWC", convert_to="y")
    assert ours.shape == (1,) and math.isclose(float(ours), ref, rel_tol=1e-6)
    # the same photograph in 4x4 blocks (x4 nearest-neighbour upscaling) is far less natural
    small = torch.nn.functional.avg_pool2d(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, 4)
    blocky = torch.nn.functional.interpolate(small, scale_factor=4, mode="nearest")
    assert float(metrics.niqe(blocky, crop_border=4)) > float(ours) + 2
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        metrics.niqe(torch.rand(3, 100, 150))
