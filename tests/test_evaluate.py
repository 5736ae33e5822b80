"""fastsr.evaluate.evaluate: the SR-vs-bicubic table carries the mean colour error per channel."""
import pytest
import torch
from torch import nn

from fastsr.data import degrade, imresize, sample_images
from fastsr.evaluate import evaluate


class _BicubicPlus(nn.Module):
    """Bicubic x4 plus a fixed per-channel offset (in [0, 1] units)."""

    def __init__(self, offset):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(offset).view(1, 3, 1, 1))

    def forward(self, x):
        return imresize(x, 4.0) + self.offset


@pytest.fixture(scope="module")
def pairs():
    out = []
    for name, hr in sample_images("val"):
        hr = hr[:, 100:196, 100:196].contiguous()  # mid-tone crops: no clipping at +-3 levels
        out.append((name, degrade(hr, 4), hr))
    return out


def test_mean_error_of_a_known_cast(pairs):
    levels = [-3.0, 0.0, 2.0]
    res = evaluate(_BicubicPlus([v / 255 for v in levels]), pairs, 4)
    for sr_err, bic_err in zip(res.sr_mean_error, res.bicubic_mean_error):
        assert max(abs(v) for v in bic_err) < 0.1
        # SR = bicubic + offset, quantised to 8 bits: the error moves by the offset (to rounding)
        assert [s - b for s, b in zip(sr_err, bic_err)] == pytest.approx(levels, abs=0.02)
    rows, mean = res.rows(), res.mean()
    assert set(rows) == {n for n, _, _ in pairs}
    assert rows["chelsea"]["mean_error_rgb"] == res.sr_mean_error[0]
    assert rows["coffee"]["bicubic_mean_error_rgb"] == res.bicubic_mean_error[1]
    assert mean["mean_error_rgb"] == pytest.approx([sum(e[c] for e in res.sr_mean_error) / 2 for c in range(3)])
    lines = res.table().splitlines()
    header = lines[0].split("  ")
    assert [h.strip() for h in header if h.strip()][1:] == [
        "Bicubic PSNR", "Bicubic SSIM", "Bicubic err R", "Bicubic err G", "Bicubic err B",
        "SR PSNR", "SR SSIM", "SR err R", "SR err G", "SR err B"]
    assert float(lines[-1].split()[8]) == pytest.approx(mean["mean_error_rgb"][0], abs=0.006)


def test_without_bicubic(pairs):
    res = evaluate(_BicubicPlus([0.0, 0.0, 0.0]), pairs, 4, bicubic=False)
    assert res.bicubic_mean_error == [] and "bicubic_mean_error_rgb" not in res.mean()
    assert list(res.columns()) == ["SR PSNR", "SR SSIM", "SR err R", "SR err G", "SR err B"]
