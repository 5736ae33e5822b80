"""`fastsr upscale`'s Real-ESRGAN options: --denoise-strength (deep network interpolation of
realesr-general-x4v3 with its wdn companion), --alpha model|bicubic, --quality / --lossless;
and --self-ensemble (EDSR's geometric self-ensemble).

Small random SRVGGNetCompact files saved as Real-ESRGAN saves them; each result is checked
against a direct computation with the eager model. Errors go through ``fastsr.cli.main`` in
process: exit status 2 and one line on stderr.
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastsr.cli import main
from fastsr.data import imresize, load_image, save_image
from fastsr.models import create, interpolate_weights
from fastsr.upscale import load_denoised, upscale_files

# The eager model against fastsr's prepacked CPU convolutions (another summation order, a few
# fp32 ulps) after the PNG's 8-bit rounding: half a level plus slack.
TOL_8BIT = 0.5 / 255 + 1e-5


def _compact(seed, num_feat=8):
    torch.manual_seed(seed)
    m = create("SRVGGNetCompact", num_feat=num_feat, num_conv=2, scale=4)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """realesr-general-x4v3.pth and its -wdn- companion (two random compact models), a
    companion of another width, and an RGBA photo crop with a gradient alpha."""
    d = tmp_path_factory.mktemp("options")
    torch.save({"params": _compact(0).state_dict()}, d / "realesr-general-x4v3.pth")
    torch.save({"params": _compact(1).state_dict()}, d / "realesr-general-wdn-x4v3.pth")
    (d / "other").mkdir()
    torch.save({"params": _compact(2).state_dict()}, d / "other" / "my-wdn.pth")
    torch.save({"params": _compact(3, num_feat=4).state_dict()}, d / "other" / "narrow.pth")
    rng = np.random.default_rng(0)
    rgb = np.clip(np.cumsum(rng.integers(-9, 10, (20, 24, 3)), 1) + 128, 0, 255).astype(np.uint8)
    alpha = np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (20, 1))[:, :, None]
    Image.fromarray(np.concatenate([rgb, alpha], 2)).save(d / "rgba.png")
    Image.fromarray(np.concatenate([rgb, np.full_like(alpha, 255)], 2)).save(d / "opaque.png")
    return d


def _cli(*args):
    return main([str(a) for a in args] + ["--no-progress", "--precision", "fp32", "--device", "cpu"])


def _blend(a, b, s):
    sa, sb = a.state_dict(), b.state_dict()
    m = create("SRVGGNetCompact", num_feat=8, num_conv=2, scale=4).eval()
    m.load_state_dict({k: s * sa[k] + (1 - s) * sb[k] for k in sa})
    return m


# ---------------------------------------------------------------------------- --denoise-strength
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_load_denoised_is_the_parameterwise_blend(files, strength):
    model, scale, desc = load_denoised(files / "realesr-general-x4v3.pth", strength)
    want = _blend(_compact(0), _compact(1), strength)
    assert scale == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, want.state_dict()[k]), k
    assert ("realesr-general-wdn-x4v3.pth" in desc) == (strength != 1)


def test_denoise_strength_upscale_matches_direct_computation(files, tmp_path):
    out = tmp_path / "x.png"
    assert _cli("upscale", files / "rgba.png", "-o", out, "--checkpoint", files / "realesr-general-x4v3.pth",
                "--denoise-strength", "0.25", "--alpha", "bicubic") == 0
    lr = load_image(files / "rgba.png")
    with torch.no_grad():
        want = _blend(_compact(0), _compact(1), 0.25)(lr.pixels[None])[0].clamp(0, 1)
    got = load_image(out).pixels
    assert (got - want).abs().max().item() <= TOL_8BIT
    with torch.no_grad():  # and it is neither of the two models alone
        assert (got - _compact(0)(lr.pixels[None])[0].clamp(0, 1)).abs().max().item() > 10 * TOL_8BIT


def test_denoise_checkpoint_given_explicitly(files, tmp_path):
    out = tmp_path / "x.png"
    assert _cli("upscale", files / "rgba.png", "-o", out, "--checkpoint", files / "realesr-general-x4v3.pth",
                "--denoise-strength", "0.6", "--denoise-checkpoint", files / "other" / "my-wdn.pth",
                "--alpha", "bicubic") == 0
    lr = load_image(files / "rgba.png")
    with torch.no_grad():
        want = _blend(_compact(0), _compact(2), 0.6)(lr.pixels[None])[0].clamp(0, 1)
    assert (load_image(out).pixels - want).abs().max().item() <= TOL_8BIT


def test_interpolate_weights_refuses_other_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate_weights(_compact(0), _compact(3, num_feat=4), 0.5)
    with pytest.raises(ValueError, match="cannot interpolate"):
        interpolate_weights(_compact(0), create("ESPCN", scale=4), 0.5)


@pytest.mark.parametrize("args,needle", [
    (["--checkpoint", "{d}/realesr-general-x4v3.pth", "--denoise-strength", "1.5"], "--denoise-strength must be"),
    (["--checkpoint", "{d}/realesr-general-x4v3.pth", "--denoise-strength", "nan"], "--denoise-strength must be"),
    (["--checkpoint", "{d}/other/my-wdn.pth", "--denoise-strength", "0.5"], "give --denoise-checkpoint"),
    (["--checkpoint", "{d}/realesr-general-wdn-x4v3.pth", "--denoise-strength", "0.5"], "give --denoise-checkpoint"),
    (["--checkpoint", "{d}/realesr-general-x4v3.pth", "--denoise-strength", "0.5", "--denoise-checkpoint",
      "{d}/other/narrow.pth"], "does not match --checkpoint"),
    (["--checkpoint", "{d}/realesr-general-x4v3.pth", "--denoise-checkpoint", "{d}/other/my-wdn.pth"],
     "--denoise-checkpoint needs --denoise-strength"),
    (["--denoise-strength", "0.5"], "--denoise-strength needs --checkpoint"),
    (["--bicubic", "--denoise-strength", "0.5"], "does not apply to --bicubic"),
])
def test_denoise_user_errors(files, tmp_path, capsys, args, needle):
    args = [a.format(d=files) for a in args]
    assert _cli("upscale", files / "rgba.png", "-o", tmp_path / "o", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_denoise_companion_missing(files, tmp_path, capsys):
    (tmp_path / "realesr-general-x4v3.pth").write_bytes((files / "realesr-general-x4v3.pth").read_bytes())
    assert _cli("upscale", files / "rgba.png", "-o", tmp_path / "o", "--checkpoint",
                tmp_path / "realesr-general-x4v3.pth", "--denoise-strength", "0.5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "realesr-general-wdn-x4v3.pth" in err[0] and "is not there" in err[0], err


# ---------------------------------------------------------------------------- --alpha
def test_alpha_model_runs_the_alpha_plane_through_the_model(files, tmp_path):
    upscale_files([files / "rgba.png"], tmp_path / "m.png", files / "realesr-general-x4v3.pth", device="cpu",
                  precision="fp32", progress=False, write=lambda *a, **k: None)
    src, got = load_image(files / "rgba.png"), load_image(tmp_path / "m.png")
    with torch.no_grad():
        want = _compact(0)(src.alpha.expand(3, -1, -1)[None])[0].clamp(0, 1).mean(0, keepdim=True)
    assert got.alpha.shape == (1, 80, 96)
    assert (got.alpha - want).abs().max().item() <= TOL_8BIT
    upscale_files([files / "rgba.png"], tmp_path / "b.png", files / "realesr-general-x4v3.pth", device="cpu",
                  precision="fp32", progress=False, alpha="bicubic", write=lambda *a, **k: None)
    bic = load_image(tmp_path / "b.png").alpha
    assert (bic - imresize(src.alpha[None], 4.0).clamp(0, 1)[0]).abs().max().item() <= TOL_8BIT
    assert (bic - got.alpha).abs().max().item() > 10 * TOL_8BIT  # the two modes differ on this model
    assert torch.equal(load_image(tmp_path / "b.png").pixels, got.pixels)  # the colours do not depend on it


def test_alpha_model_keeps_an_opaque_image_opaque(files, tmp_path):
    upscale_files([files / "opaque.png"], tmp_path / "o.png", files / "realesr-general-x4v3.pth", device="cpu",
                  precision="fp32", progress=False, write=lambda *a, **k: None)
    a = np.asarray(Image.open(tmp_path / "o.png"))[:, :, 3]
    assert a.shape == (80, 96) and (a == 255).all()


def test_alpha_bad_value(files, tmp_path, capsys):
    with pytest.raises(SystemExit):  # argparse's choices
        _cli("upscale", files / "rgba.png", "-o", tmp_path / "o", "--bicubic", "--alpha", "nearest")
    assert "invalid choice: 'nearest'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- --quality, --lossless
@pytest.mark.parametrize("ext", ["jpg", "webp"])
def test_quality_reaches_the_encoder(files, tmp_path, ext):
    """The command's file is save_image's at that quality (Pillow's encoder, checked below);
    a lower quality gives a smaller file."""
    pixels, alpha = _bicubic_rgba(files / "rgba.png")
    sizes = {}
    for q in (30, 90):
        out = tmp_path / f"q{q}.{ext}"
        assert _cli("upscale", files / "rgba.png", "-o", out, "--bicubic", "--quality", q) == 0
        save_image(tmp_path / f"ref{q}.{ext}", pixels, alpha if ext == "webp" else None, quality=q)
        assert out.read_bytes() == (tmp_path / f"ref{q}.{ext}").read_bytes()
        sizes[q] = out.stat().st_size
    assert sizes[30] < sizes[90]


def test_save_image_quality_and_lossless(tmp_path):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((3, 24, 32), dtype=np.float32))
    arr = (x.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    for ext, fmt in (("jpg", "JPEG"), ("webp", "WEBP")):
        save_image(tmp_path / f"a.{ext}", x, quality=40)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, quality=40)
        assert (tmp_path / f"a.{ext}").read_bytes() == buf.getvalue()
    save_image(tmp_path / "l.webp", x, lossless=True)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "l.webp").convert("RGB")), arr)
    save_image(tmp_path / "q100.webp", x, quality=100)  # Pillow: quality 100 is still lossy WebP
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "q100.webp").convert("RGB")), arr)
    for q in (0, 101, 9.5, True):
        with pytest.raises(ValueError, match="quality must be an integer from 1 to 100"):
            save_image(tmp_path / "b.jpg", x, quality=q)


def test_lossless_webp_from_the_command(files, tmp_path):
    assert _cli("upscale", files / "rgba.png", "-o", tmp_path, "--bicubic", "--format", "webp", "--lossless") == 0
    got = np.asarray(Image.open(tmp_path / "rgba.webp"))
    save_image(tmp_path / "ref.png", *_bicubic_rgba(files / "rgba.png"))
    assert np.array_equal(got, np.asarray(Image.open(tmp_path / "ref.png")))


def _bicubic_rgba(path):
    from fastsr.evaluate import bicubic_upscale

    img = load_image(path)
    return bicubic_upscale(img.pixels[None], 4)[0], bicubic_upscale(img.alpha[None], 4)[0].clamp(0, 1)


@pytest.mark.parametrize("args,needle", [
    (["-o", "{tmp}/o", "--quality", "0"], "--quality must be an integer from 1 to 100, got 0"),
    (["-o", "{tmp}/o", "--quality", "101", "--format", "jpg"], "--quality must be an integer from 1 to 100"),
    (["-o", "{tmp}/o", "--quality", "80"], "--quality applies to JPEG and WebP outputs"),
    (["-o", "{tmp}/o.tif", "--quality", "80"], "--quality applies to JPEG and WebP outputs"),
    (["-o", "{tmp}/o", "--format", "jpg", "--lossless"], "--lossless applies to WebP outputs"),
])
def test_quality_user_errors(files, tmp_path, capsys, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    assert _cli("upscale", files / "rgba.png", "--bicubic", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------- --self-ensemble
@pytest.mark.parametrize("tile", ["0", "12"])
def test_self_ensemble_upscale_matches_direct_computation(files, tmp_path, tile):
    from fastsr import SelfEnsemble

    out = tmp_path / "x.png"
    assert _cli("upscale", files / "rgba.png", "-o", out, "--checkpoint", files / "realesr-general-x4v3.pth",
                "--self-ensemble", "--tile", tile, "--tile-pad", "4", "--alpha", "bicubic") == 0
    lr = load_image(files / "rgba.png")
    with torch.no_grad():
        want = SelfEnsemble(_compact(0))(lr.pixels[None])[0].clamp(0, 1)
        single = _compact(0)(lr.pixels[None])[0].clamp(0, 1)
    got = load_image(out).pixels
    # tiles see less context at their inner edges; away from those the tiled output is the untiled one
    border = slice(None) if tile == "0" else slice(0, 24)
    assert (got[..., border, border] - want[..., border, border]).abs().max().item() <= TOL_8BIT
    assert (got - single).abs().max().item() > 10 * TOL_8BIT


def test_self_ensemble_does_not_apply_to_bicubic(files, tmp_path, capsys):
    assert _cli("upscale", files / "rgba.png", "-o", tmp_path / "o", "--bicubic", "--self-ensemble") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--self-ensemble" in err[0] and "--bicubic" in err[0], err
