"""The shipped nonbn_x4 on crops of the corpus's held-back photographs (tests/data/heldback,
never trained on; cut by scripts/make_heldback_crops.py): it beats bicubic, keeps the
colours, draws no checkerboard. The bounds are regression guards set from the shipped
model's own figures on these crops with a margin (the per-photo targets on the full images
are scripts/judge_model.py's)."""
import json
from pathlib import Path

import pytest
import torch

from fastsr import metrics
from fastsr.data import degrade, imresize, mod_crop, read_image, sample_images
from fastsr.inference import SelfEnsemble
from fastsr.models import pretrained

CROPS = Path(__file__).resolve().parent / "data" / "heldback"
NAMES = [r["file"] for r in json.loads((CROPS / "LICENSES.json").read_text())]
#: every crop: SR Y-PSNR - bicubic Y-PSNR (dB, crop_border 4) at least this. Shipped model:
#: Wine +3.51, picosdeeuropa +0.98, LadyBird +0.99, Storm +0.36, DarkestHour +1.02; the model it
#: replaced (trained 8400 fewer updates): +3.45, +0.94, +0.91, +0.47, +0.88; before that: +3.33,
#: +0.84, +0.65, +0.68, +0.84; with no checkerboard loss: +3.18, +0.84, -0.45 (this crop is
#: out-of-focus background at 48 dB bicubic), +0.46, +0.54; earlier: +3.19, +0.72, -9.56, -0.38,
#: -0.25. The Storm crop (flat cloud, 70 % smooth blocks) moves both ways between models while the
#: full Storm photograph gains (+2.19, +2.82, +3.74 dB): its bound is the per-photo target, 0.3
MIN_GAIN_DB = {"lomiri_Wine.png": 3.0, "lomiri_picosdeeuropa.png": 0.8, "mate_LadyBird.png": 0.75,
               "mate_Storm.png": 0.3, "plasma_DarkestHour.png": 0.75}
#: every crop and channel: |mean SR - HR| at most this many 8-bit levels (shipped: <= 0.012,
#: its back-projection keeps SR consistent with LR; the model before last: up to 3.28)
MAX_COLOUR_ERROR = 0.05
#: checkerboard energy (levels^2) on the smooth blocks of every crop that has some, at most
#: (shipped: <= 0.0021; earlier models: <= 0.0016, <= 0.005, <= 0.11, 1.63 on LadyBird; the HR photographs
#: themselves have about 0.017 at these frequencies)
MAX_CHECKER = 0.01


def _triple(image: torch.Tensor):
    """``(hr, lr, bicubic)`` of an HR photograph (3, H, W): HR (1, 3, H, W) cropped to a multiple
    of 4, its x4 MATLAB-bicubic LR, and the LR upscaled back by MATLAB bicubic (clamped to [0, 1])."""
    hr = mod_crop(image, 4)[None].contiguous()
    lr = degrade(hr[0], 4)[None]
    return hr, lr, imresize(lr, 4.0).clamp(0, 1)


def _crop(name: str):
    """:func:`_triple` of a held-back crop of ``tests/data/heldback``."""
    return _triple(read_image(CROPS / name))


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    model = pretrained("nonbn_x4")
    out = {}
    for name in NAMES:
        hr, lr, bic = _crop(name)
        with torch.inference_mode():
            sr = model(lr).clamp(0, 1)
            ens = SelfEnsemble(model)(lr).clamp(0, 1)
        out[name] = {
            "gain": (metrics.psnr(sr, hr, crop_border=4, test_y_channel=True)
                     - metrics.psnr(bic, hr, crop_border=4, test_y_channel=True)).item(),
            "colour": metrics.channel_mean_error(sr, hr, crop_border=4)[0].abs().max().item(),
            "checker": float(metrics.checkerboard_energy(sr, bic, hr, 4)),
            "ensemble_gain": (metrics.psnr(ens, hr, crop_border=4, test_y_channel=True)
                              - metrics.psnr(sr, hr, crop_border=4, test_y_channel=True)).item(),
            "ensemble_checker": float(metrics.checkerboard_energy(ens, bic, hr, 4)),
        }
    return out


def test_crops_are_the_listed_held_back_photographs():
    records = json.loads((CROPS / "LICENSES.json").read_text())
    assert len(records) >= 5 and set(MIN_GAIN_DB) == set(NAMES)
    for r in records:
        assert r["license"] and r["copyright"] and (CROPS / r["file"]).is_file()


@pytest.mark.parametrize("name", NAMES)
def test_beats_bicubic(results, name):
    assert results[name]["gain"] >= MIN_GAIN_DB[name], results[name]


@pytest.mark.parametrize("name", NAMES)
def test_no_colour_cast(results, name):
    assert results[name]["colour"] <= MAX_COLOUR_ERROR, results[name]


@pytest.mark.parametrize("name", NAMES)
def test_no_checkerboard(results, name):
    checker = results[name]["checker"]
    assert checker != checker or checker <= MAX_CHECKER, results[name]  # NaN: no smooth block


#: checkerboard energy (levels^2) below which a grid is not there to remove: a tenth of what the
#: HR photographs have at these frequencies
CHECKER_FLOOR = 0.002


def test_self_ensemble_gains_and_draws_no_grid(results):
    """The geometric self-ensemble (fastsr.SelfEnsemble) of the shipped model: no crop loses
    more than 0.02 dB to the single pass, the mean gains (shipped: +0.03 to +0.33 dB), and on
    the crops with smooth blocks its checkerboard energy is at most half the single pass's or
    below :data:`CHECKER_FLOOR` (the averaging of the eight flips and rotations cancels a
    grid; the shipped model draws none left to cancel: 0.0010-0.0021 single, 0.0009-0.0017
    ensembled; an earlier model 0.005 -> 0.0013)."""
    gains = [r["ensemble_gain"] for r in results.values()]
    assert min(gains) >= -0.02 and sum(gains) / len(gains) > 0.05, results
    pairs = [(r["ensemble_checker"], r["checker"]) for r in results.values() if r["checker"] == r["checker"]]
    assert pairs and all(e <= max(0.5 * c, CHECKER_FLOOR) for e, c in pairs), pairs


# ---------------------------------------------------------------------------- nonbn_wgan_x4
#: crops with texture, where NIQE means something (on the flat crops of sky and out-of-focus
#: background it reads 12-28 for every image, HR included)
TEXTURED = ["lomiri_Wine.png", "lomiri_picosdeeuropa.png"]


@pytest.fixture(scope="module")
def gan_results():
    """The GAN model and the shipped PSNR model on the same crops. Shipped figures: Y-PSNR
    PSNR model - GAN -0.48 to +0.95 dB, NIQE on the textured crops 6.51 / 7.30 against
    6.56 / 6.95 (bicubic 8.78 / 7.94), colour <= 0.011, checkerboard <= 0.015."""
    gan, ref = pretrained("nonbn_wgan_x4"), pretrained("nonbn_x4")
    out = {}
    for name in NAMES:
        hr, lr, bic = _crop(name)
        with torch.inference_mode():
            g, p = gan(lr).clamp(0, 1), ref(lr).clamp(0, 1)
        out[name] = {
            "psnr_drop": (metrics.psnr(p, hr, crop_border=4, test_y_channel=True)
                          - metrics.psnr(g, hr, crop_border=4, test_y_channel=True)).item(),
            "colour": metrics.channel_mean_error(g, hr, crop_border=4)[0].abs().max().item(),
            "checker": float(metrics.checkerboard_energy(g, bic, hr, 4)),
        }
        if name in TEXTURED:
            out[name].update({k: float(metrics.niqe(x, crop_border=4)) for k, x in
                              (("niqe", g), ("niqe_ref", p), ("niqe_bic", bic))})
    return out


def test_gan_model_is_more_natural_than_bicubic_on_textured_crops(gan_results):
    """NIQE (lower is more natural): the GAN model at least 0.5 below bicubic on every textured
    crop. Against the PSNR model these 224 px crops do not decide (NIQE pools 96 px blocks:
    four per crop; the GAN 6.51 / 7.30 against 6.56 / 6.95): the full photographs below do."""
    rows = [gan_results[n] for n in TEXTURED]
    assert all(r["niqe"] < r["niqe_bic"] - 0.5 for r in rows), rows


def test_gan_model_is_more_natural_than_the_psnr_model_on_full_photographs():
    """The held-back sample photographs chelsea and coffee (bundled with scikit-image, never
    trained on), full images: the GAN model's NIQE at least 0.5 below bicubic on each and below
    the PSNR model's on their mean (the issue's target, on the two held-back photographs that
    ship; shipped: GAN 6.85 / 6.28, PSNR model 6.88 / 6.83, bicubic 8.01 / 7.64). On all seven
    held-back photographs (scripts/judge_model.py) the GAN's mean is 7.55 against 7.95."""
    gan, ref = pretrained("nonbn_wgan_x4"), pretrained("nonbn_x4")
    rows = []
    for _, img in sample_images("val"):
        _, lr, bic = _triple(img)
        with torch.inference_mode():
            g, p = gan(lr).clamp(0, 1), ref(lr).clamp(0, 1)
        rows.append({k: float(metrics.niqe(x, crop_border=4)) for k, x in (("gan", g), ("psnr", p), ("bic", bic))})
    assert len(rows) == 2, rows
    assert all(r["gan"] < r["bic"] - 0.5 for r in rows), rows
    assert sum(r["gan"] for r in rows) < sum(r["psnr"] for r in rows), rows


@pytest.mark.parametrize("name", NAMES)
def test_gan_model_keeps_psnr_colour_and_draws_no_grid(gan_results, name):
    r = gan_results[name]
    assert r["psnr_drop"] <= 1.0, r  # the target on the full photographs: mean drop <= 1.5 dB
    assert r["colour"] <= MAX_COLOUR_ERROR, r
    # the GAN stage alone (no train.d_shift) scored 0.8 on the full photographs, with it 0.08
    assert r["checker"] != r["checker"] or r["checker"] <= 0.05, r
