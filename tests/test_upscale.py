"""The upscaler: blended fixed-size tiles, auto tile size, precision with an fp32 safety net,
every kind of image file in and out in kind, and the `fastsr upscale` command's file handling.

Small models (a random SRVGGNetCompact, a 1-block NonBNResNet) on crops of scikit-image's
photographs and on synthetic 16-bit / gray / alpha / palette / CMYK / EXIF / ICC images.
"""
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from _cli_util import run
from fastsr.data import ImageTooLargeError, degrade, imresize, load_image, sample_images, save_image
from fastsr.evaluate import (NonFiniteOutputError, auto_tile, resolve_precision, tile_starts, tile_weights,
                             upscale_image)
from fastsr.models import create


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    m = create("NonBNResNet", scale=4, num_blocks=1, channels=8, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def photo_lr():
    """An 75 x 112 LR photograph (chelsea, bicubic x4 degradation)."""
    hr = sample_images("val")[0][1]
    hr = hr[:, : hr.shape[1] // 4 * 4, : hr.shape[2] // 4 * 4].contiguous()
    return degrade(hr, 4)[None]


class Recorder(torch.nn.Module):
    """Wraps a model; records input shapes; optionally fails like a full GPU above a side
    length, or returns NaN in reduced precision for tiles whose mean is above a threshold."""

    def __init__(self, inner, oom_above=None, nan_above=None):
        super().__init__()
        self.inner, self.oom_above, self.nan_above, self.shapes = inner, oom_above, nan_above, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        if self.oom_above is not None and max(x.shape[-2:]) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        y = self.inner(x)
        if self.nan_above is not None and y.dtype != torch.float32:
            y = y.clone()
            y[x.mean((1, 2, 3)) > self.nan_above] = float("nan")
        return y


# ---------------------------------------------------------------------------- tiling
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 120), pad=st.integers(0, 24), scale=st.sampled_from([1, 2, 4]))
def test_tile_weights_partition_unity(n, t, pad, scale):
    t = min(max(t, 2 * pad + 1), n) if n > t else t
    if t < n and t <= 2 * pad:
        return
    t = min(t, n)
    starts = tile_starts(n, t, pad)
    assert starts[0] == 0 and starts[-1] + t == n and all(b - a <= t - 2 * pad for a, b in zip(starts, starts[1:]))
    total = torch.zeros(n * scale, dtype=torch.float64)
    for s, w in zip(starts, tile_weights(starts, t, n, scale, pad)):
        assert w.shape == (t * scale,) and bool((w >= 0).all()) and bool((w <= 1 + 1e-6).all())
        total[s * scale:(s + t) * scale] += w.double()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


@pytest.mark.parametrize("tile,pad,batch", [(48, 8, 1), (40, 12, 3)])
def test_tiled_matches_untiled(photo_lr, tile, pad, batch):
    model = Recorder(_tiny())
    ref = upscale_image(model, photo_lr, 4)
    model.shapes.clear()
    out = upscale_image(model, photo_lr, 4, tile, pad, tile_batch=batch)
    assert out.shape == ref.shape == (1, 3, 300, 448)
    # the receptive field of the 1-block model (~8 LR px) is inside the blended context
    assert (out - ref).abs().max().item() < 1 / 255
    # one shape for every forward: fixed tile size, the last batch filled up
    assert set(model.shapes) == {(batch, 3, tile, tile)}


def test_blending_has_no_hard_seam(photo_lr):
    """With too little context the error is spread over the overlap instead of jumping at a
    cut: the blended result is closer to the untiled one than pasting tile centres."""
    model = _tiny()
    ref = upscale_image(model, photo_lr, 4)
    out = upscale_image(model, photo_lr, 4, 24, 2)
    err = (out - ref).abs()
    assert 0 < err.max().item() < 0.1  # a real difference, and a small one
    # away from overlaps the tile output is taken as is
    assert err[..., :40, :40].max().item() == 0


def test_image_smaller_than_tile_runs_whole(photo_lr):
    model = Recorder(_tiny())
    small = photo_lr[..., :20, :30]
    upscale_image(model, small, 4, 64, 16)
    assert model.shapes == [(1, 3, 20, 30)]


def test_non_finite_tile_recomputed_in_fp32(photo_lr):
    inner = _tiny()
    model = Recorder(inner, nan_above=0.45)
    ref = upscale_image(inner, photo_lr, 4, 48, 8)
    with pytest.warns(RuntimeWarning, match="recomputed in fp32"):
        out = upscale_image(model, photo_lr, 4, 48, 8, precision="bf16")
    assert bool(torch.isfinite(out).all())
    assert (out - ref).abs().max().item() < 8 / 255  # bf16 elsewhere


def test_nan_weights_raise():
    model = _tiny()
    with torch.no_grad():
        model.conv_first.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match="NaN"):
        upscale_image(model, torch.rand(1, 3, 16, 16), 4)


def test_auto_tile_halves_on_out_of_memory(photo_lr):
    inner = _tiny()
    model = Recorder(inner, oom_above=48)
    ref = upscale_image(inner, photo_lr, 4)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        out = upscale_image(model, photo_lr, 4, "auto", 8)
    assert max(model.shapes[-1][-2:]) <= 48
    assert (out - ref).abs().max().item() < 1 / 255
    with pytest.raises(torch.OutOfMemoryError):  # a given tile is not changed behind the user's back
        upscale_image(model, photo_lr, 4, 64, 8)


def test_auto_tile_follows_free_memory():
    model = _tiny()
    small, big = auto_tile(model, free=64 << 20), auto_tile(model, free=4 << 30)
    assert small % 8 == 0 and big % 8 == 0 and 2 * 16 + 8 <= small < big <= 4096


def test_precision_choices(monkeypatch):
    import fastsr.evaluate as ev

    for native, expected in ((True, "bf16"), (False, "fp32")):  # auto = bf16 only where the CPU computes it natively
        monkeypatch.setattr(ev, "native_bf16", lambda device, native=native: native)
        assert resolve_precision("auto", "cpu") == expected
    monkeypatch.undo()
    assert resolve_precision("auto", "cpu") == ("bf16" if ev.native_bf16("cpu") else "fp32")
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("kw,needle", [({"tile": -1}, "tile"), ({"tile": "big"}, "tile"),
                                       ({"tile": 16, "tile_pad": 8}, "larger than 2 \\* tile_pad"),
                                       ({"tile_batch": 0}, "tile_batch")])
def test_bad_tiling_arguments(kw, needle):
    with pytest.raises(ValueError, match=needle):
        upscale_image(_tiny(), torch.rand(1, 3, 40, 40), 4, **kw)


# ---------------------------------------------------------------------------- image files
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels,with_alpha", [(1, False), (1, True), (3, False), (3, True)])
def test_16bit_round_trip(tmp_path, ext, channels, with_alpha):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 65536, (channels, 9, 11)).astype(np.float32) / 65535)
    a = torch.from_numpy(rng.integers(0, 65536, (1, 9, 11)).astype(np.float32) / 65535) if with_alpha else None
    assert save_image(tmp_path / f"x{ext}", x, a, 16, SRGB) == []
    img = load_image(tmp_path / f"x{ext}")
    assert img.bit_depth == 16 and img.icc_profile == SRGB and img.notes == []
    torch.testing.assert_close(img.pixels, x, atol=0.5 / 65535, rtol=0)  # exact 16-bit levels
    if with_alpha:
        torch.testing.assert_close(img.alpha, a, atol=0.5 / 65535, rtol=0)
    else:
        assert img.alpha is None


def test_exif_orientation_applied(tmp_path):
    arr = (np.random.default_rng(2).random((6, 10, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    im.save(tmp_path / "r.png", exif=exif)
    img = load_image(tmp_path / "r.png")
    assert img.pixels.shape == (3, 10, 6) and any("orientation 6" in n for n in img.notes)
    want = np.rot90(arr, -1)
    assert np.array_equal((img.pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), want)


def test_palette_and_cmyk_converted_with_a_note(tmp_path):
    arr = (np.random.default_rng(3).random((8, 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).convert("P").save(tmp_path / "p.png")
    Image.fromarray(arr).convert("CMYK").save(tmp_path / "c.tif")
    p, c = load_image(tmp_path / "p.png"), load_image(tmp_path / "c.tif")
    assert p.pixels.shape == c.pixels.shape == (3, 8, 8)
    assert "palette" in p.notes[0] and "CMYK" in c.notes[0]


def _bomb_png(path, side=20000):
    """A PNG whose header claims side x side pixels (Pillow refuses it at open)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


def test_decompression_bomb_is_a_read_error(tmp_path):
    _bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        load_image(tmp_path / "bomb.png")


# ---------------------------------------------------------------------------- fastsr upscale
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny .pth model, a NaN one, and a folder of every kind of image (crops of a photo)."""
    d = tmp_path_factory.mktemp("upscale")
    torch.manual_seed(0)
    m = create("SRVGGNetCompact", num_feat=8, num_conv=2, scale=4)
    torch.save({"params": m.state_dict()}, d / "tiny.pth")
    sd = m.state_dict()
    next(v for k, v in sd.items() if k.endswith("weight"))[0].fill_(float("nan"))
    torch.save({"params": sd}, d / "nan.pth")
    x = sample_images("val")[1][1][:, 20:52, 30:70]  # 32 x 40
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    src = d / "in"
    src.mkdir()
    save_image(src / "deep.png", x, None, 16)
    Image.fromarray(arr).convert("L").save(src / "gray.png")
    alpha = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (32, 1))[:, :, None]
    Image.fromarray(np.concatenate([arr, alpha], 2)).save(src / "rgba.png")
    Image.fromarray(arr).convert("P").save(src / "palette.png")
    Image.fromarray(arr).convert("CMYK").save(src / "cmyk.jpg", quality=95)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 8
    im.save(src / "rotated.jpg", exif=exif, quality=95)
    im.save(src / "icc.png", icc_profile=SRGB)
    return d


def test_upscale_every_kind_of_image(files, tmp_path):
    p = run("upscale", files / "in", "-o", tmp_path, "--checkpoint", files / "tiny.pth", "--suffix", "_x4",
            "--tile", "24", "--tile-pad", "4", "--alpha", "bicubic", "--no-progress")
    out = {f.stem: f for f in tmp_path.iterdir()}
    assert set(out) == {f"{n}_x4" for n in ("deep", "gray", "rgba", "palette", "cmyk", "rotated", "icc")}
    deep = load_image(out["deep_x4"])
    assert deep.bit_depth == 16 and deep.pixels.shape == (3, 128, 160)
    assert len(np.unique((deep.pixels * 65535).round().numpy())) > 256  # really 16-bit levels
    assert Image.open(out["gray_x4"]).mode == "L"
    rgba = load_image(out["rgba_x4"])
    src = load_image(files / "in" / "rgba.png")
    assert (rgba.alpha - imresize(src.alpha[None], 4.0).clamp(0, 1)[0]).abs().max() <= 0.5 / 255 + 1e-6
    assert load_image(out["rotated_x4"]).pixels.shape == (3, 160, 128)
    assert load_image(out["icc_x4"]).icc_profile == SRGB
    assert "palette image converted" in p.stderr and "CMYK" in p.stderr and "orientation 8" in p.stderr


def test_upscale_outscale_and_skip_existing(files, tmp_path):
    src = files / "in" / "gray.png"
    run("upscale", src, "-o", tmp_path, "--checkpoint", files / "tiny.pth", "--outscale", "2.5", "--no-progress")
    assert Image.open(tmp_path / "gray.png").size == (100, 80)
    (tmp_path / "gray.png").write_bytes(b"kept")
    p = run("upscale", src, files / "in" / "icc.png", "-o", tmp_path, "--bicubic", "--skip-existing",
            "--no-progress")
    assert (tmp_path / "gray.png").read_bytes() == b"kept" and (tmp_path / "icc.png").is_file()
    assert "skipped" in p.stdout


def test_upscale_same_names_do_not_overwrite(files, tmp_path):
    for sub, ext in (("a", "png"), ("b", "png"), ("b", "jpg")):
        (tmp_path / sub).mkdir(exist_ok=True)
        Image.open(files / "in" / "icc.png").save(tmp_path / sub / f"x.{ext}")
    p = run("upscale", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out", "--bicubic", "--scale", "2",
            "--no-progress")
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["x.png", "x_2.png", "x_3.png"]
    assert "x_2.png" in p.stderr


def test_upscale_skips_too_large_images_in_a_folder(files, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.open(files / "in" / "icc.png").save(src / "a.png")
    _bomb_png(src / "bomb.png")
    p = run("upscale", src, "-o", tmp_path / "out", "--bicubic", "--no-progress")
    assert (tmp_path / "out" / "a.png").is_file() and not (tmp_path / "out" / "bomb.png").exists()
    assert "bomb.png" in p.stderr.strip().splitlines()[-1]
    p = run("upscale", src / "bomb.png", "-o", tmp_path / "one.png", "--bicubic", check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "bomb.png" in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["{in}/gray.png", "-o", "{in}/gray.png", "--bicubic"], "gray.png is one of the inputs"),
    (["{in}", "-o", "{in}", "--bicubic"], "is one of the inputs"),
    (["{in}/gray.png", "-o", "{tmp}/x.foo", "--bicubic"], "unknown image extension '.foo'"),
    (["{in}/gray.png", "-o", "{tmp}/o", "--bicubic", "--scale", "0"], "--scale must be >= 1"),
    (["{in}/gray.png", "-o", "{tmp}/o", "--checkpoint", "{d}/nan.pth"], "NaN/Inf"),
    (["{in}/gray.png", "-o", "{tmp}/o", "--precision", "fp16", "--device", "cpu", "--checkpoint", "{d}/tiny.pth"],
     "fp16 needs a CUDA"),
    (["{in}/gray.png", "-o", "{tmp}/o", "--cuda-graph", "on", "--device", "cpu", "--checkpoint", "{d}/tiny.pth"],
     "--cuda-graph on needs a CUDA device"),
    (["{in}/gray.png", "-o", "{tmp}/o", "--tile", "16", "--tile-pad", "8", "--bicubic"], "--tile 16"),
])
def test_upscale_user_errors(files, tmp_path, args, needle):
    args = [a.format(**{"in": files / "in", "tmp": tmp_path, "d": files}) for a in args]
    p = run("upscale", *args, check=False)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and needle in err[0], p.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- fastsr.upscale_file
@pytest.mark.parametrize("name,opts", [
    ("rgba.png", ["--tile", "24", "--tile-pad", "4"]),
    ("gray.png", ["--outscale", "2.5"]),
    ("deep.png", []),
    ("rotated.jpg", []),
])
def test_upscale_file_writes_what_the_command_writes(files, tmp_path, name, opts):
    """fastsr.upscale_file is the command's per-file work: the same bytes for tiles, alpha,
    grayscale, 16 bits, EXIF orientation and --outscale."""
    import fastsr
    from fastsr.upscale import prepare_model

    src = files / "in" / name
    cli_out, lib_out = tmp_path / "cli" / f"x{src.suffix}", tmp_path / "lib" / f"x{src.suffix}"
    run("upscale", src, "-o", cli_out, "--checkpoint", files / "tiny.pth", "--device", "cpu", "--no-progress", *opts)
    kw = dict(zip((o.lstrip("-").replace("-", "_") for o in opts[::2]), (float(v) if "." in v else int(v)
                                                                          for v in opts[1::2])))
    up = prepare_model(files / "tiny.pth", device="cpu")
    res = fastsr.upscale_file(src, lib_out, up, **kw)
    assert lib_out.read_bytes() == cli_out.read_bytes()
    assert res.src == src and res.dest == lib_out and res.out_size == Image.open(lib_out).size


def test_upscale_file_checks_its_arguments(files, tmp_path):
    import fastsr
    from fastsr.errors import CheckpointError, UserError
    from fastsr.upscale import bicubic_upscaler, prepare_model

    up = bicubic_upscaler(2)
    for kw, needle in (({"tile": 16, "tile_pad": 8}, "--tile 16"), ({"tile": -1}, "--tile"),
                       ({"tile_batch": 0}, "--tile-batch"), ({"outscale": 0}, "--outscale")):
        with pytest.raises(UserError, match=needle):
            fastsr.upscale_file(files / "in" / "gray.png", tmp_path / "o.png", up, **kw)
    assert not (tmp_path / "o.png").exists()
    with pytest.raises(UserError, match="--scale must be >= 1"):
        bicubic_upscaler(0)
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        prepare_model(files / "nan.pth", device="cpu")
    with pytest.raises(UserError, match="does not match the model's scale 4"):
        prepare_model(files / "tiny.pth", device="cpu", scale=2)
    res = fastsr.upscale_file(files / "in" / "gray.png", tmp_path / "o.png", up)
    assert res.in_size == (40, 32) and res.out_size == (80, 64) and Image.open(tmp_path / "o.png").mode == "L"
