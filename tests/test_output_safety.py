"""Nothing is written outside where the user asked, nor half-written: symbolic links among
the outputs, suffixes that name other folders, hard links of an input, kills during a write;
and the fused models trace under torch.compile with dynamic shapes."""
import os

import pytest
import torch

import fastsr
from fastsr.data import io as image_io
from fastsr.data import load_image, save_image
from fastsr.errors import UserError
from fastsr.upscale import upscale_files


@pytest.fixture
def photo(tmp_path):
    src = tmp_path / "in" / "p.png"
    save_image(src, torch.rand(3, 12, 10))
    return src


def _bicubic(photo, out, **kw):
    return upscale_files([str(photo)], out, bicubic=True, scale=2, progress=False, **kw)


def test_an_output_that_is_a_symlink_is_refused(photo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "p.png").symlink_to(victim)
    (out / "q.png").symlink_to(tmp_path / "created-outside.png")  # dangling
    for skip in (False, True):
        with pytest.raises(UserError, match="symbolic link"):
            _bicubic(photo, out, skip_existing=skip)
    assert victim.read_text() == "keep me"
    os.replace(photo, photo.with_name("q.png"))
    with pytest.raises(UserError, match="symbolic link"):
        _bicubic(photo.with_name("q.png"), out)
    assert not (tmp_path / "created-outside.png").exists()
    with pytest.raises(ValueError, match="symbolic link"):  # the library call refuses too
        save_image(out / "p.png", torch.rand(3, 4, 4))


@pytest.mark.parametrize("suffix", ["/../../../escaped", "a/b", "..", "x\\y"])
def test_a_suffix_stays_a_part_of_the_file_name(photo, tmp_path, suffix):
    with pytest.raises(UserError, match="--suffix must be part of a file name"):
        _bicubic(photo, tmp_path / "out", suffix=suffix)
    assert not any(p.name.startswith("escaped") for p in tmp_path.rglob("*"))


def test_an_output_folder_that_leads_elsewhere_is_refused(photo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = photo.parent / "sub"
    folder.mkdir()
    os.replace(photo, folder / "p.png")
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UserError, match="outside -o"):
        upscale_files([str(photo.parent)], out, bicubic=True, scale=2, progress=False)
    assert not any(elsewhere.iterdir())


def test_a_hard_link_of_the_input_is_not_overwritten(photo, tmp_path):
    link = tmp_path / "link.png"
    os.link(photo, link)
    before = photo.read_bytes()
    with pytest.raises(UserError, match="one of the inputs"):
        _bicubic(photo, link)
    assert photo.read_bytes() == before


def test_a_failed_write_keeps_the_previous_file(photo, tmp_path, monkeypatch):
    dest = tmp_path / "out.png"
    save_image(dest, torch.zeros(3, 6, 6))
    good = dest.read_bytes()

    def killed(tmp, *args):
        tmp.write_bytes(good[:20])  # a partial file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(image_io, "_write_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_image(dest, torch.ones(3, 6, 6))
    assert dest.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.png"]  # no temporary file left behind
    monkeypatch.undo()
    save_image(dest, torch.ones(3, 6, 6))
    assert load_image(dest).pixels.min() == 1.0
    assert oct(dest.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_upscaled_files_replace_the_old_ones_whole(photo, tmp_path):
    out = tmp_path / "out"
    _bicubic(photo, out)
    first = (out / "p.png").read_bytes()
    save_image(photo, torch.rand(3, 12, 10))
    _bicubic(photo, out)
    assert (out / "p.png").read_bytes() != first
    assert sorted(p.name for p in out.iterdir()) == ["p.png"]


@pytest.mark.parametrize("name", ["/abs/dir", "../../x", "a/b", ".", "..", ".hidden", ""])
def test_a_recipe_name_is_one_folder_under_runs(name):
    from fastsr.errors import ConfigError
    from fastsr.train import load_config

    with pytest.raises(ConfigError, match="name must be a plain folder name"):
        load_config("nonbn_x4", [f"name={name}"])
    assert load_config("nonbn_x4", ["name=my-run_2"])["name"] == "my-run_2"


@pytest.mark.slow
def test_fused_models_compile_with_dynamic_shapes():
    """The ops' argument checks see symbolic numbers (the residual scale) under
    torch.compile(dynamic=True, fullgraph=True) and must not call math.isfinite on them."""
    torch._dynamo.reset()
    model = fastsr.models.create("EDSR", scale=2, num_feat=16, num_block=1, res_scale=0.1).eval()
    compiled = torch.compile(model, dynamic=True, fullgraph=True)
    with torch.no_grad():
        for size in ((9, 11), (12, 7)):
            x = torch.rand(1, 3, *size)
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied_once_in_every_format(tmp_path, orientation):
    """Pillow transposes 8-bit TIFFs by their orientation tag on load; PNG and JPEG it leaves
    as stored: either way the pixels come out oriented exactly once."""
    import numpy as np
    from PIL import Image

    arr = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 3).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    got = {}
    for ext in (".png", ".tif"):
        Image.fromarray(arr).save(tmp_path / f"o{ext}", exif=exif)
        img = load_image(tmp_path / f"o{ext}")
        assert f"EXIF orientation {orientation} applied" in img.notes
        got[ext] = img.pixels
    assert got[".png"].shape == got[".tif"].shape and torch.equal(got[".png"], got[".tif"])
    if orientation in (5, 6, 7, 8):
        assert got[".tif"].shape[1:] == (6, 4)


def test_multi_frame_files_say_which_frame_is_used(tmp_path):
    from PIL import Image

    frames = [Image.new("RGB", (5, 4), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    img = load_image(tmp_path / "a.gif")
    assert any("2 frames" in n and "first" in n for n in img.notes)
    assert img.pixels[0].mean() > 0.9  # red: the first frame


def test_a_run_folder_is_locked_while_a_run_uses_it(tmp_path):
    """A second run into the folder of a running one gets a one-line error (before, both
    finished and interleaved log.jsonl, or --overwrite deleted the other's checkpoints)."""
    import subprocess
    import sys

    from fastsr.train.run_dir import RunDir

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fastsr.train.run_dir import RunDir; d = RunDir(sys.argv[1]); d.prepare(False, False); "
        "print('locked', flush=True); time.sleep(60)"), str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / "run" / "log.jsonl").write_text("")
        for resume, overwrite in ((False, True), (True, False)):
            with pytest.raises(UserError, match="in use by another training run"):
                RunDir(tmp_path / "run").prepare(resume, overwrite)
        assert (tmp_path / "run" / "log.jsonl").exists()  # the other run's files are untouched
    finally:
        holder.kill()
        holder.wait()
    d = RunDir(tmp_path / "run")  # released with the process: a new run may take it
    d.prepare(False, True)
    d.release()
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_eval_saved_image_names_never_collide(capsys):
    from fastsr.cli import _flat_names

    names = _flat_names(["sub1/x", "sub1_x", "a/b/c", "a_b/c", "plain"])
    assert names["sub1/x"] == "sub1_x" and names["sub1_x"] == "sub1_x_2" and names["a_b/c"] == "a_b_c_2"
    assert len(set(names.values())) == 5 and names["plain"] == "plain"
    assert "sub1_x is saved as sub1_x_2" in capsys.readouterr().err


@pytest.mark.parametrize("seed,ok", [(2**63 - 1, True), (2**63, False), (-1, False), ("7", True)])
def test_seed_fits_torch(seed, ok):
    from fastsr.errors import ConfigError
    from fastsr.train import load_config

    if ok:
        assert load_config("nonbn_x4", [f"train.seed={seed}"])["train"]["seed"] == int(seed)
    else:
        with pytest.raises(ConfigError, match="train.seed must be"):
            load_config("nonbn_x4", [f"train.seed={seed}"])


def test_bench_report_without_matplotlib(tmp_path, monkeypatch):
    import sys

    from fastsr.bench import iteration

    fake = {"variant": "2", "times": [0.5, 0.6], "peak_mib": 1.0, "flops": 1e9}
    monkeypatch.setattr(iteration, "_run_worker", lambda variant, args: {**fake, "variant": variant.key})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    lines = []
    iteration.run_benchmark(variants=["2"], rounds=1, inference=False, parity=False, out_dir=tmp_path,
                            device="cpu", log=lines.append)
    assert (tmp_path / "iteration.md").exists() and not (tmp_path / "iteration.png").exists()
    assert any("matplotlib is not installed" in str(x) for x in lines)


def _rrdb_state_dict(num_feat=64, num_block=2, make=None):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in fastsr.models.create("RRDBNet", num_feat=num_feat,
                                                              num_block=num_block).state_dict().items()}
    return {k: make(s) for k, s in shapes.items()}


def test_tiny_files_do_not_allocate_huge_models(tmp_path):
    """Metadata or shapes that describe a model far larger than the data in the file are
    refused before the model is built (before: a 212-byte file asked for 4.3 GB)."""
    from fastsr.errors import CheckpointError
    from fastsr.models.checkpoint import load_generator, read_metadata, save_generator

    from fastsr.models.pretrained import pretrained_path

    meta = read_metadata(pretrained_path("nonbn_x4"))
    meta.pop("format", None)
    small = tmp_path / "bomb.safetensors"
    save_generator(small, {"conv_first.weight": torch.zeros(1)}, None,
                   {**meta, "generator": {"name": "RRDBNet", "num_feat": 4000, "num_block": 23}, "scale": 4})
    with pytest.raises(CheckpointError, match="does not fit|refusing to build it"):
        load_generator(small)
    # shapes that match but hold no data: zero-size and stride-0 (expanded) tensors in a .pth
    for make in (lambda s: torch.zeros(1).expand(s),
                 lambda s: torch.empty(*s[:2], 0, 0) if len(s) == 4 else torch.zeros(s)):  # (K, C, 0, 0) kernels
        path = tmp_path / "expanded.pth"
        torch.save(_rrdb_state_dict(num_feat=256, make=make), path)
        assert path.stat().st_size < 200_000
        with pytest.raises(ValueError, match="bytes of weights but describes a model|do not fit|zero-size tensor"):
            fastsr.models.load(path)


def test_weights_that_are_not_floating_point_are_refused(tmp_path):
    for dtype in (torch.int64, torch.bool, torch.complex64):
        path = tmp_path / "ints.pth"
        torch.save(_rrdb_state_dict(make=lambda s: torch.ones(s, dtype=dtype)), path)
        with pytest.raises(ValueError, match="not floating point"):
            fastsr.models.load(path)
    ok = tmp_path / "ok.pth"
    torch.save(_rrdb_state_dict(make=lambda s: torch.randn(s) * 0.01), ok)
    model, detected = fastsr.models.load(ok)
    assert detected.architecture == "RRDBNet" and next(model.parameters()).dtype == torch.float32


def test_forward_mode_ad_through_the_fused_ops_is_exact():
    """The kernels' autograd is reverse-mode only: under forward-mode AD the ops run their
    plain-PyTorch reference (before, every tangent through a fastsr op was zero or None)."""
    import torch.autograd.forward_ad as fwAD
    from torch.func import jacfwd, jvp

    from fastsr.ops import bias_prelu, bias_residual, l1_loss, pixel_shuffle_prelu, ssim

    g = torch.Generator().manual_seed(5)
    x, r = torch.randn(1, 8, 5, 6, generator=g, dtype=torch.float64), torch.randn(1, 8, 5, 6, dtype=torch.float64)
    b, w = torch.randn(8, dtype=torch.float64), torch.rand(8, dtype=torch.float64)
    img, ref_img = torch.rand(1, 3, 16, 16, dtype=torch.float64), torch.rand(1, 3, 16, 16, dtype=torch.float64)
    cases = {
        "bias_prelu": (lambda a: bias_prelu(a, b, w), x),
        "bias_residual": (lambda a: bias_residual(a, b, r, 0.2), x),
        "pixel_shuffle_prelu": (lambda a: pixel_shuffle_prelu(a, w[:2], 2), x),
        "l1_loss": (lambda a: l1_loss(a, r, "mean", eps=1e-3), x),
        "ssim": (lambda a: ssim(a, ref_img, data_range=1.0), img),
    }
    for name, (fn, inp) in cases.items():
        tangent = torch.randn(inp.shape, generator=g, dtype=torch.float64)
        _, t = jvp(fn, (inp,), (tangent,))
        h = 1e-6  # central difference in float64
        fd = (fn(inp + h * tangent) - fn(inp - h * tangent)) / (2 * h)
        assert t.abs().sum() > 0, name
        torch.testing.assert_close(t, fd, rtol=1e-5, atol=1e-7, msg=name)
        with fwAD.dual_level():
            out = fn(fwAD.make_dual(inp, tangent))
            torch.testing.assert_close(fwAD.unpack_dual(out).tangent, t, msg=name)
    model = fastsr.models.create("NonBNResNet", scale=2, num_blocks=1, channels=16).double()
    lr = torch.rand(1, 3, 6, 5, dtype=torch.float64)
    model.fused = True
    fused = jacfwd(model)(lr)
    model.fused = False
    torch.testing.assert_close(fused, jacfwd(model)(lr))


def test_renamed_outputs_do_not_replace_unrelated_files(tmp_path):
    for sub in ("a", "b"):
        save_image(tmp_path / "in" / sub / "x.png", torch.rand(3, 6, 6))
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_2.png").write_bytes(b"unrelated")
    notes = []
    upscale_files([str(tmp_path / "in" / "a" / "x.png"), str(tmp_path / "in" / "b" / "x.png")], out, bicubic=True,
                  scale=2, progress=False, write=notes.append)
    assert (out / "x_2.png").read_bytes() == b"unrelated"
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "x_2.png", "x_3.png"]
    notes.clear()
    upscale_files([str(tmp_path / "in" / "a" / "x.png")], out, bicubic=True, scale=2, progress=False,
                  write=notes.append)
    assert any("replacing 1 existing output file" in n for n in notes)


def _community(tmp_path, name, **kw):
    torch.manual_seed(0)
    model = fastsr.models.create("RRDBNet", num_block=1, num_feat=16, num_grow_ch=8, **kw).eval()
    path = tmp_path / f"{name}.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    return model, path


def test_odd_sizes_and_one_channel_models_upscale(tmp_path):
    """Real-ESRGAN x2 / x1 models pixel-unshuffle their input (odd sizes are padded by the
    replicated edge and the output cropped); a one-channel model runs on the gray plane or
    on each of R, G, B; other channel counts are a one-line error."""
    rgb = torch.rand(3, 9, 7)
    src = tmp_path / "odd.png"
    save_image(src, rgb)
    rgb = load_image(src).pixels
    x2, path = _community(tmp_path, "x2", scale=2)
    upscale_files([str(src)], tmp_path / "o2.png", path, precision="fp32", progress=False)
    with torch.no_grad():
        want = x2(torch.nn.functional.pad(rgb[None], (0, 1, 0, 1), mode="replicate"))[0, :, :18, :14].clamp(0, 1)
    got = load_image(tmp_path / "o2.png").pixels
    assert got.shape == (3, 18, 14) and (got - want).abs().max() <= 0.5 / 255 + 1e-4
    gray_model, gpath = _community(tmp_path, "gray", scale=4, num_in_ch=1, num_out_ch=1)
    upscale_files([str(src)], tmp_path / "og.png", gpath, precision="fp32", progress=False)
    with torch.no_grad():
        want = torch.cat([gray_model(p[None])[0] for p in rgb.split(1)]).clamp(0, 1)
    assert (load_image(tmp_path / "og.png").pixels - want).abs().max() <= 0.5 / 255 + 1e-4
    _, rgba = _community(tmp_path, "rgba", scale=4, num_in_ch=4, num_out_ch=4)
    with pytest.raises(UserError, match="takes 4-channel images"):
        upscale_files([str(src)], tmp_path / "o4.png", rgba, progress=False)


def test_run_dir_records_config_changes_at_resume(tmp_path):
    import json

    from fastsr.train.run_dir import RunDir, config_changes

    assert config_changes({"a": {"b": 1, "c": [1, 2]}, "d": 0}, {"a": {"b": 1, "c": [1, 3], "e": 5}, "d": 0}) == {
        "a.c": [[1, 2], [1, 3]], "a.e": [None, 5]}
    assert config_changes({"a": {"b": 1}}, {"a": None}) == {"a": [{"b": 1}, None]}
    d = RunDir(tmp_path / "run")
    assert d.start("train: {iters: 2}\n", 0) == {}  # a new run: nothing to compare
    d.log({"iter": 1, "loss_g": 0.5})
    d.log({"iter": 2, "loss_g": 0.4})
    d.log({"iter": 3, "loss_g": 0.3})  # after the checkpoint resumed from: trimmed
    assert d.start("train: {iters: 2}\n", 2) == {}  # same config: no record
    assert d.start("train: {iters: 4}\n", 2) == {"train.iters": [2, 4]}
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records == [{"iter": 1, "loss_g": 0.5}, {"iter": 2, "loss_g": 0.4},
                       {"iter": 2, "config_changes": {"train.iters": [2, 4]}}]
    assert (tmp_path / "run" / "config.yaml").read_text() == "train: {iters: 4}\n"
