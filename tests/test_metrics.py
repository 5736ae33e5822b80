"""fastsr.metrics against hand-checked values and an independent float64 numpy SSIM."""
import math

import numpy as np
import pytest
import torch
from skimage import data as skdata

from fastsr.metrics import format_table, psnr, psnr_ssim_lists, rgb_to_ycbcr, ssim, ycbcr_to_rgb


# ---------------------------------------------------------------- independent oracle
def _y_numpy(rgb255):
    """MATLAB rgb2ycbcr Y (BT.601) written out, on [0, 255] float64."""
    r, g, b = (rgb255[..., i].astype(np.float64) / 255.0 for i in range(3))
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _ssim_numpy(a, b):
    """Wang et al. 2004 SSIM of one channel, [0, 255] float64, 11x11 Gaussian sigma 1.5, valid."""
    i = np.arange(11) - 5
    g = np.exp(-(i**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()

    def filt(img):
        win = np.lib.stride_tricks.sliding_window_view(img, (11, 11))
        return np.einsum("hwij,ij->hw", win, w)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a**2
    s_bb = filt(b * b) - mu_b**2
    s_ab = filt(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return m.mean()


def _psnr_numpy(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def pair():
    """A real photograph crop (uint8 HWC) and a distorted copy (noise), both uint8."""
    hr = skdata.astronaut()[100:148, 180:236]  # 48x56x3
    rng = np.random.default_rng(0)
    sr = np.clip(hr.astype(np.int16) + rng.integers(-12, 13, hr.shape), 0, 255).astype(np.uint8)
    return sr, hr


def _to_tensor(img):
    return torch.from_numpy(img.transpose(2, 0, 1).copy()).float().div(255.0)[None]


# ---------------------------------------------------------------- Y conversion
@pytest.mark.parametrize(
    "rgb, y",
    [
        ((255, 255, 255), 235.0),
        ((0, 0, 0), 16.0),
        ((255, 0, 0), 16.0 + 65.481),
        ((0, 255, 0), 16.0 + 128.553),
        ((0, 0, 255), 16.0 + 24.966),
        ((128, 128, 128), 16.0 + 219.0 * 128 / 255),
    ],
)
def test_y_known_values(rgb, y):
    img = np.array(rgb, dtype=np.uint8).reshape(1, 1, 3)
    assert rgb_to_ycbcr(img, y_only=True)[0, 0, 0] == pytest.approx(y, abs=1e-9)
    t = torch.tensor(rgb, dtype=torch.float64).view(3, 1, 1) / 255.0
    assert rgb_to_ycbcr(t, y_only=True).item() * 255.0 == pytest.approx(y, abs=1e-9)


def test_ycbcr_known_chroma_and_round_trip():
    white = rgb_to_ycbcr(np.full((1, 1, 3), 255, np.uint8))[0, 0]
    np.testing.assert_allclose(white, [235.0, 128.0, 128.0], atol=1e-9)
    red = rgb_to_ycbcr(np.array([[[255, 0, 0]]], np.uint8))[0, 0]
    np.testing.assert_allclose(red, [81.481, 128 - 37.797, 240.0], atol=1e-9)
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    ycc = rgb_to_ycbcr(x)
    assert ycc.shape == x.shape and ycc.dtype == torch.float64
    torch.testing.assert_close(ycbcr_to_rgb(ycc), x, rtol=0, atol=1e-12)
    # numpy HWC and tensor CHW agree; data_range scales in and out
    xn = x[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(rgb_to_ycbcr(xn * 255, data_range=255), ycc[0].permute(1, 2, 0).numpy() * 255, atol=1e-9)


def test_ycbcr_errors():
    with pytest.raises(ValueError, match="3"):
        rgb_to_ycbcr(torch.rand(1, 4, 2, 2))
    with pytest.raises(ValueError, match="3"):
        rgb_to_ycbcr(np.zeros((2, 2, 1), np.uint8))
    with pytest.raises(TypeError):
        rgb_to_ycbcr([1, 2, 3])
    with pytest.raises(TypeError):
        rgb_to_ycbcr(torch.zeros(3, 2, 2, dtype=torch.int32))


# ---------------------------------------------------------------- PSNR
def test_identical_images():
    x = torch.rand(3, 3, 16, 16)
    p, s = psnr(x, x), ssim(x, x)
    assert p.shape == (3,) and p.dtype == torch.float64 and torch.isinf(p).all() and (p > 0).all()
    torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [1, 5])
def test_constant_offset_known_psnr(d):
    hr = np.full((16, 16, 3), 100, np.uint8)
    sr = hr + np.uint8(d)
    expected = 20 * math.log10(255.0 / d)  # MSE = d^2
    assert psnr(sr, hr).item() == pytest.approx(expected, abs=1e-12)
    # Y channel: Y shifts by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255
    assert psnr(sr, hr, test_y_channel=True).item() == pytest.approx(20 * math.log10(255.0 / (d * 219 / 255)), abs=1e-9)
    # the same through [0, 1] tensors
    assert psnr(_to_tensor(sr), _to_tensor(hr)).item() == pytest.approx(expected, abs=1e-12)


def test_quantize_rounds_like_tensor2img():
    hr = torch.randint(0, 255, (1, 3, 12, 12), dtype=torch.float64) / 255  # 255 excluded: no clamping
    sr = hr + 0.4 / 255  # below half a level: vanishes when quantised to 8 bits
    assert torch.isinf(psnr(sr, hr)).all()
    assert torch.isinf(psnr(sr.float(), hr.float())).all()
    # without quantisation: MSE = 0.4^2 on the [0, 255] scale
    p = psnr(sr, hr, quantize=False).item()
    assert p == pytest.approx(10 * math.log10(255.0**2 / 0.16), abs=1e-6)
    # out-of-range values are clamped before rounding, as tensor2img does
    hr[0, 0, 0, 0] = 1.0
    assert torch.isinf(psnr(hr + 2.0 * (hr == 1), hr)).all()
    assert torch.isfinite(psnr(hr + 2.0 * (hr == 1), hr, quantize=False)).all()


def test_psnr_against_numpy_rgb_and_y(pair):
    sr, hr = pair
    assert psnr(sr, hr).item() == pytest.approx(_psnr_numpy(sr, hr), abs=1e-10)
    c = 4
    want = _psnr_numpy(_y_numpy(sr)[c:-c, c:-c], _y_numpy(hr)[c:-c, c:-c])
    assert psnr(sr, hr, crop_border=c, test_y_channel=True).item() == pytest.approx(want, abs=1e-10)


# ---------------------------------------------------------------- SSIM
def test_ssim_against_independent_numpy(pair):
    sr, hr = pair
    rgb = np.mean([_ssim_numpy(sr[..., i].astype(np.float64), hr[..., i].astype(np.float64)) for i in range(3)])
    assert ssim(sr, hr).item() == pytest.approx(rgb, abs=1e-12)
    c = 3
    y = _ssim_numpy(_y_numpy(sr)[c:-c, c:-c], _y_numpy(hr)[c:-c, c:-c])
    got = ssim(sr, hr, crop_border=c, test_y_channel=True).item()
    assert got == pytest.approx(y, abs=1e-12)
    assert 0.3 < got < 0.99  # a real distortion, not a degenerate case


def test_uint8_path_equals_tensor_path(pair):
    sr, hr = pair
    t_sr, t_hr = _to_tensor(sr), _to_tensor(hr)
    for kw in ({}, {"crop_border": 4, "test_y_channel": True}):
        assert psnr(t_sr, t_hr, **kw).item() == psnr(sr, hr, **kw).item()
        assert ssim(t_sr, t_hr, **kw).item() == pytest.approx(ssim(sr, hr, **kw).item(), abs=1e-14)
    # CHW tensors and uint8 tensors are accepted too
    u_sr = torch.from_numpy(sr.transpose(2, 0, 1).copy())
    u_hr = torch.from_numpy(hr.transpose(2, 0, 1).copy())
    assert psnr(u_sr, u_hr).item() == psnr(sr, hr).item()


def test_per_image_batch(pair):
    sr, hr = pair
    t_sr = torch.cat([_to_tensor(sr), _to_tensor(hr)])
    t_hr = torch.cat([_to_tensor(hr), _to_tensor(hr)])
    p, s = psnr(t_sr, t_hr, 2, True), ssim(t_sr, t_hr, 2, True)
    assert p.shape == s.shape == (2,)
    assert p[0].item() == psnr(sr, hr, 2, True).item() and torch.isinf(p[1])
    assert s[1].item() == pytest.approx(1.0, abs=1e-12)


def test_crop_border_excludes_border():
    hr = torch.rand(1, 3, 20, 20)
    sr = hr.clone()
    sr[..., :3, :] = 1 - sr[..., :3, :]  # differ only in the top 3 rows
    assert torch.isfinite(psnr(sr, hr, crop_border=2)).all()
    assert torch.isinf(psnr(sr, hr, crop_border=3)).all()
    # crop_border c equals measuring the cropped images
    sr2 = torch.rand(1, 3, 24, 26)
    assert psnr(sr2, hr.new_zeros(1, 3, 24, 26) + 0.5, crop_border=2).item() == pytest.approx(
        psnr(sr2[..., 2:-2, 2:-2], hr.new_zeros(1, 3, 20, 22) + 0.5).item(), abs=1e-12
    )
    assert ssim(sr2, sr2.flip(-1), crop_border=4).item() == pytest.approx(
        ssim(sr2[..., 4:-4, 4:-4], sr2.flip(-1)[..., 4:-4, 4:-4]).item(), abs=1e-12
    )


def test_lists_of_different_sizes(pair):
    sr, hr = pair
    p, s = psnr_ssim_lists([sr, hr[:30, :40]], [hr, hr[:30, :40]], crop_border=2, test_y_channel=True)
    assert p[0] == psnr(sr, hr, 2, True).item() and math.isinf(p[1])
    assert s[1] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- errors
def test_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.rand(1, 3, 16, 15))
    with pytest.raises(TypeError, match="same kind"):
        psnr(x, x[0].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="crop_border"):
        psnr(x, x, crop_border=8)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(x, x, crop_border=-1)
    with pytest.raises(ValueError, match="3 channels"):
        psnr(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8), test_y_channel=True)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x, crop_border=3)
    with pytest.raises(TypeError, match="uint8 or floating"):
        psnr(torch.zeros(1, 3, 8, 8, dtype=torch.int32), torch.zeros(1, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="NCHW"):
        psnr(torch.rand(8, 8), torch.rand(8, 8))
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)


# ---------------------------------------------------------------- table
def test_format_table():
    out = format_table(["baby", "bird"], {"PSNR (dB)": torch.tensor([30.0, 31.0]), "SSIM": [0.8, 0.9]}, title="Set5 x4")
    lines = out.splitlines()
    assert lines[0] == "Set5 x4"
    assert lines[3].split() == ["baby", "30.00", "0.8000"]
    assert lines[-1].split() == ["Mean", "30.50", "0.8500"]
    with pytest.raises(ValueError, match="values"):
        format_table(["a"], {"SSIM": [0.1, 0.2]})


# ---------------------------------------------------------------- channel_mean_error
def test_channel_mean_error_known_offsets():
    from fastsr.metrics import channel_mean_error

    hr = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    hr = (hr * 255).round() / 255
    offsets = torch.tensor([-3.0, 0.0, 2.0])  # levels, per channel
    sr = hr + offsets.view(1, 3, 1, 1) / 255
    sr[1] = hr[1]  # second image: no cast
    e = channel_mean_error(sr, hr)
    assert e.shape == (2, 3) and e.dtype == torch.float64
    torch.testing.assert_close(e[0], offsets.double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(e[1], torch.zeros(3, dtype=torch.float64), rtol=0, atol=0)
    # a sub-level offset survives only without quantisation
    e_raw = channel_mean_error(hr + 0.25 / 255, hr, quantize=False)
    torch.testing.assert_close(e_raw, torch.full((2, 3), 0.25, dtype=torch.float64), rtol=0, atol=1e-4)


def test_channel_mean_error_crop_border_and_numpy_path():
    from fastsr.metrics import channel_mean_error

    hr = np.full((16, 16, 3), 100, np.uint8)
    sr = hr.copy()
    sr[:2] = 200  # a bright top border, cropped away with crop_border=2
    assert channel_mean_error(sr, hr)[0].tolist() == pytest.approx([100 * 2 / 16] * 3)
    assert channel_mean_error(sr, hr, crop_border=2)[0].tolist() == [0.0, 0.0, 0.0]
    # the same images as tensors in [0, 1] give the same levels
    t = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None] / 255  # noqa: E731
    torch.testing.assert_close(channel_mean_error(t(sr), t(hr)), channel_mean_error(sr, hr))


def test_channel_mean_error_bicubic_has_no_cast():
    from fastsr.data import degrade, imresize
    from fastsr.metrics import channel_mean_error

    hr = torch.from_numpy(skdata.astronaut()[:256, :256].transpose(2, 0, 1).copy()).float()[None] / 255
    bic = imresize(degrade(hr[0], 4)[None], 4.0).clamp(0, 1)
    e = channel_mean_error(bic, hr, crop_border=4)
    assert e.abs().max() < 0.15, e
    assert channel_mean_error(bic * 0.98, hr, crop_border=4).max() < -1.0  # a 2 % darker image is seen


def test_channel_mean_error_errors():
    from fastsr.metrics import channel_mean_error

    with pytest.raises(ValueError, match="same shape"):
        channel_mean_error(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="crop_border"):
        channel_mean_error(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), crop_border=4)
    with pytest.raises(ValueError, match="data_range"):
        channel_mean_error(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))
