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
from fastsr.data import degrade, imresize, mod_crop, read_image
from fastsr.inference import SelfEnsemble
from fastsr.models import pretrained

CROPS = Path(__file__).resolve().parent / "data" / "heldback"
NAMES = [r["file"] for r in json.loads((CROPS / "LICENSES.json").read_text())]
#: every crop: SR Y-PSNR - bicubic Y-PSNR (dB, crop_border 4) at least this. Shipped model:
#: Wine +3.45, picosdeeuropa +0.94, LadyBird +0.91, Storm +0.47, DarkestHour +0.88; the model it
#: replaced (trained 5600 fewer updates): +3.33, +0.84, +0.65, +0.68, +0.84; the one before that
#: (no checkerboard loss): +3.18, +0.84, -0.45 (this crop is out-of-focus background at 48 dB
#: bicubic), +0.46, +0.54; earlier: +3.19, +0.72, -9.56, -0.38, -0.25
#: The Storm crop is flat cloud (49.5 dB bicubic) above a horizon that runs along its lower edge,
#: 1-5 LR pixels from it: its figure moves with how a model handles that edge (the image border,
#: zero-padded), and between two models the rest of the crop differs by about 0.01 dB
#: (scripts/judge_model.py's Edge / Inner columns split a photograph's gain the same way).
MIN_GAIN_DB = {"lomiri_Wine.png": 3.0, "lomiri_picosdeeuropa.png": 0.8, "mate_LadyBird.png": 0.75,
               "mate_Storm.png": 0.45, "plasma_DarkestHour.png": 0.75}
#: every crop and channel: |mean SR - HR| at most this many 8-bit levels (shipped: <= 0.009,
#: its back-projection keeps SR consistent with LR; the model before last: up to 3.28)
MAX_COLOUR_ERROR = 0.05
#: checkerboard energy (levels^2) on the smooth blocks of every crop that has some, at most
#: (shipped: <= 0.0016; earlier models: <= 0.005, <= 0.11, 1.63 on LadyBird; the HR photographs
#: themselves have about 0.017 at these frequencies)
MAX_CHECKER = 0.01


def _crop(name: str):
    """``(hr, lr, bicubic)`` of a held-back crop: HR (1, 3, H, W), its x4 MATLAB-bicubic LR,
    and the LR upscaled back by MATLAB bicubic (clamped to [0, 1])."""
    hr = mod_crop(read_image(CROPS / name), 4)[None].contiguous()
    lr = degrade(hr[0], 4)[None]
    return hr, lr, imresize(lr, 4.0).clamp(0, 1)


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
    more than 0.02 dB to the single pass, the mean gains (shipped: +0.02 to +0.30 dB), and on
    the crops with smooth blocks its checkerboard energy is at most half the single pass's or
    below :data:`CHECKER_FLOOR` (the averaging of the eight flips and rotations cancels a
    grid; the shipped model draws none left to cancel: 0.0011-0.0016 single, 0.0008-0.0015
    ensembled; the model before it 0.005 -> 0.0013)."""
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
    PSNR model - GAN -0.37 to +0.88 dB, NIQE on the textured crops 6.51 / 7.30 against
    6.98 / 6.93 (bicubic 8.78 / 7.94), colour <= 0.011, checkerboard <= 0.015."""
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


def test_gan_model_is_more_natural_than_the_psnr_model(gan_results):
    """NIQE (lower is more natural): the GAN model below bicubic on every textured crop and
    below the PSNR model on their mean. On the full photographs (scripts/judge_model.py) it
    is below the PSNR model on six of seven (mean 7.55 against 8.03; DarkestHour's flat sky
    12.35 against 12.34); on the small picosdeeuropa crop the PSNR model reads 6.93 against
    the GAN's 7.30."""
    rows = [gan_results[n] for n in TEXTURED]
    assert all(r["niqe"] < r["niqe_bic"] - 0.5 for r in rows), rows
    assert sum(r["niqe"] for r in rows) < sum(r["niqe_ref"] for r in rows), rows


@pytest.mark.parametrize("name", NAMES)
def test_gan_model_keeps_psnr_colour_and_draws_no_grid(gan_results, name):
    r = gan_results[name]
    assert r["psnr_drop"] <= 1.0, r  # the target on the full photographs: mean drop <= 1.5 dB
    assert r["colour"] <= MAX_COLOUR_ERROR, r
    # the GAN stage alone (no train.d_shift) scored 0.8 on the full photographs, with it 0.08
    assert r["checker"] != r["checker"] or r["checker"] <= 0.05, r
