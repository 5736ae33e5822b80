"""scripts/judge_model.py's targets, scripts/make_readme_crops.py's sheet and fastsr.train.config.load_run_config as scripts/ship_pretrained.py uses it, on tiny inputs."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from fastsr import models

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def judge():
    return _script("judge_model")


def _row(name, gain, err=(0.0, 0.0, 0.0), checker=0.1):
    return {"image": name, "bic_psnr": 30.0, "sr_psnr": 30.0 + gain, "gain": gain, "sr_ssim": 0.9,
            "err_r": err[0], "err_g": err[1], "err_b": err[2], "checker": checker, "smooth": 0.5, "checker_hr": 0.01,
            "niqe_sr": 5.0, "niqe_bic": 6.0, "edge_gain": gain, "inner_gain": gain}


def test_verdicts(judge):
    good = [_row("a", 2.5, checker=0.04), _row("b", 1.8, (0.1, -0.2, 0.0), 0.05), _row("c", 3.0, checker=float("nan"))]
    base = {"rows": [_row("a", 0, checker=0.1), _row("b", 0, checker=0.12), _row("c", 0, checker=0.3)]}
    lines = judge.verdicts(good, base)
    assert all(line.startswith("PASS") for line in lines), lines
    bad = [_row("a", 0.2, (0.5, 0.0, 0.0), 0.09), _row("b", 1.0, checker=0.05)]
    lines = judge.verdicts(bad, base)
    assert [line.split()[0] for line in lines] == ["FAIL", "FAIL", "FAIL", "FAIL"]
    assert "(below: a)" in lines[0] and "a R +0.50" in lines[2]
    text = judge.table(good, "t")
    assert "Mean" in text and "NaN = no smooth block" in text


def test_gan_verdicts(judge):
    ref = {"rows": [_row("a", 2.0), _row("b", 1.0)]}  # PSNR 32 and 31 dB, NIQE 5.0, bicubic 6.0
    gan = [dict(_row("a", 1.0), niqe_sr=4.0), dict(_row("b", 0.5), niqe_sr=4.5)]  # PSNR -0.75 dB
    assert [line.split()[0] for line in judge.gan_verdicts(gan, ref)] == ["PASS", "PASS", "PASS"]
    worse = [dict(_row("a", 0.0), niqe_sr=5.5), dict(_row("b", -1.0), niqe_sr=6.6)]  # NIQE 6.05, -2 dB
    assert [line.split()[0] for line in judge.gan_verdicts(worse, ref)] == ["FAIL", "FAIL", "FAIL"]
    with pytest.raises(judge.UserError, match="no row for c"):
        judge.gan_verdicts([_row("c", 1.0)], ref)


def test_judge_rows_of_a_model(judge):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    hr = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 24, generator=g), size=(200, 200), mode="bilinear")[0]
    hr[:, :, :96] = 0.4 + 0.1 * torch.linspace(0, 1, 200).view(1, 200, 1)  # a smooth left part
    from fastsr.data import degrade

    rows = judge.judge(models.create("ESPCN", scale=4, icnr=True), [("x", degrade(hr, 4), hr)], 4)
    r = rows[0]
    assert r["image"] == "x" and math.isclose(r["gain"], r["sr_psnr"] - r["bic_psnr"])
    assert r["checker"] >= 0 and 0.2 <= r["smooth"] <= 0.8 and r["niqe_sr"] > 0 and r["checker_hr"] >= 0
    assert math.isfinite(r["edge_gain"]) and math.isfinite(r["inner_gain"])


def test_edge_inner_gain(judge):
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 3, 64, 80, generator=g)
    bic = (hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    sr = bic.clone()
    frame = torch.ones(64, 80, dtype=torch.bool)
    frame[4 + 8:-4 - 8, 4 + 8:-4 - 8] = False
    sr[..., frame] = (hr + 0.025 * torch.randn(hr.shape, generator=g)).clamp(0, 1)[..., frame]  # half the error
    edge, inner = judge.edge_inner_gain(sr, bic, hr, scale=4, width=8)
    assert 4.0 < edge < 8.0 and inner == 0.0  # about 6 dB on the frame, nothing inside
    edge, inner = judge.edge_inner_gain(bic, sr, hr, scale=4, width=8)
    assert -8.0 < edge < -4.0 and inner == 0.0
    with pytest.raises(ValueError, match="too small for a 30 px frame"):
        judge.edge_inner_gain(sr, bic, hr, scale=4, width=30)


def test_readme_crops_sheet(tmp_path):
    crops = _script("make_readme_crops")
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 64, 80, generator=g)
    x, y = crops.pick_window(hr, 32, 4, "detail")
    assert x % 4 == 0 and y % 4 == 0 and x + 32 <= 80 and y + 32 <= 64
    row = crops.crops_of("img", hr, [("espcn", models.create("ESPCN", scale=4).eval())], 4, x, y, 32, 4)
    assert [lab.split()[0] for lab, _ in row] == ["bicubic", "espcn", "HR"]
    assert all(img.shape == (3, 32, 32) for _, img in row)
    torch.testing.assert_close(row[-1][1], hr[:, y:y + 32, x:x + 32])
    sheet = crops.compose([row, row], zoom=2)
    assert sheet.size == (3 * 64 + 2 * 4, 2 * (64 + crops.LABEL_H) + 4)


def test_load_run_config_reads_the_runs_own_config(tmp_path, capsys):
    from fastsr.train import ConfigError, load_config
    from fastsr.train.config import dump_config, load_run_config

    assert load_run_config(tmp_path, "nonbn_refine_x4") is None  # a folder without config.yaml
    cfg = load_config("nonbn_refine_x4", ["train.ema_decay=0.99", "train.iters=30000"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    got = load_run_config(tmp_path, "nonbn_refine_x4")
    assert got["train"]["ema_decay"] == 0.99 and got["train"]["iters"] == 30000
    assert load_run_config(tmp_path, "nonbn_refine_x4", ["train.iters=40000"])["train"]["iters"] == 40000
    with pytest.raises(ConfigError, match="trained with config 'nonbn_refine_x4', not 'nonbn_x4'"):
        load_run_config(tmp_path, "nonbn_x4")
    # ship_pretrained --from-run reads it: a run of another recipe than --config is refused
    ship = _script("ship_pretrained")
    with pytest.raises(SystemExit):
        ship.main(["--from-run", str(tmp_path), "--config", "nonbn_x4", "--command", "x"])
    assert "--from-run: run folder" in capsys.readouterr().err
