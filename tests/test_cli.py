"""The fastsr command: eval table, upscale with and without tiles, one-line user errors."""
import numpy as np
import pytest
from PIL import Image

from _cli_util import TINY, run
from fastsr.data import imresize, read_image


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    run("train", *TINY, "--iters", "2", "--out", out)
    return out / "checkpoints" / "latest.safetensors"


def test_eval_table(ckpt, tmp_path):
    p = run("eval", "--checkpoint", ckpt, "--sample-data", "--save-images", tmp_path)
    lines = p.stdout.splitlines()
    assert "Bicubic PSNR" in lines[1] and "SR SSIM" in lines[1]
    assert any(line.startswith("chelsea") for line in lines) and lines[-1].startswith("Mean")
    bic_psnr = float(lines[-1].split()[1])
    assert 20 < bic_psnr < 40  # bicubic x4 on photographs
    comp = Image.open(tmp_path / "chelsea_bicubic_SR_HR.png")
    assert comp.size == (3 * 128 + 8, 128)


def test_eval_self_ensemble():
    """--self-ensemble measures the model's geometric self-ensemble: the title says so and
    the SR PSNR is that of the mean over the eight flips and rotations, not the plain one's
    (the shipped model: a 2-iteration model's near-constant output is the same either way)."""
    plain = run("eval", "--model", "nonbn_x4", "--sample-data").stdout.splitlines()
    ens = run("eval", "--model", "nonbn_x4", "--sample-data", "--self-ensemble").stdout.splitlines()
    assert "self-ensemble" in ens[0] and "self-ensemble" not in plain[0]
    header = [h.strip() for h in plain[1].split("  ") if h.strip()]
    bic, sr = ([float(line.split()[header.index(col)]) for line in (plain[-1], ens[-1])]
               for col in ("Bicubic PSNR", "SR PSNR"))
    assert bic[0] == bic[1] and sr[0] != sr[1], (plain[1], plain[-1], ens[-1])


def test_eval_scale_mismatch(ckpt):
    p = run("eval", "--checkpoint", ckpt, "--sample-data", "--scale", "2", check=False)
    assert p.returncode == 2 and "scale" in p.stderr and "Traceback" not in p.stderr


def _photo(tmp_path, alpha=False):
    from fastsr.data import sample_images

    x = sample_images("val")[0][1][:, 40:101, 100:171]  # 61 x 71: odd sizes
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if alpha:
        a = np.tile(np.linspace(0, 255, arr.shape[1], dtype=np.uint8), (arr.shape[0], 1))[:, :, None]
        Image.fromarray(np.concatenate([arr, a], 2), "RGBA").save(tmp_path / "in.png")
    else:
        Image.fromarray(arr).save(tmp_path / "in.png")
    return tmp_path / "in.png"


def test_upscale_tiled_equals_untiled(ckpt, tmp_path):
    src = _photo(tmp_path)
    run("upscale", src, "-o", tmp_path / "whole.png", "--checkpoint", ckpt)
    run("upscale", src, "-o", tmp_path / "tiled.png", "--checkpoint", ckpt, "--tile", "40", "--tile-pad", "16")
    a, b = read_image(tmp_path / "whole.png"), read_image(tmp_path / "tiled.png")
    assert a.shape == (3, 61 * 4, 71 * 4)
    assert (a - b).abs().max().item() <= 1 / 255 + 1e-6


def test_upscale_bicubic_keeps_alpha(tmp_path):
    src = _photo(tmp_path, alpha=True)
    run("upscale", src, "-o", tmp_path / "out", "--bicubic", "--scale", "2")
    rgb, a = read_image(tmp_path / "out" / "in.png", keep_alpha=True)
    assert rgb.shape == (3, 122, 142) and a is not None
    src_rgb, src_a = read_image(src, keep_alpha=True)
    assert (a - imresize(src_a[None], 2.0).clamp(0, 1)[0]).abs().max() <= 0.5 / 255 + 1e-6
    assert (rgb - imresize(src_rgb[None], 2.0).clamp(0, 1)[0]).abs().max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("args,needle", [
    (["upscale", "missing.png", "-o", "x"], "missing.png"),
    (["upscale", "README.md", "-o", "x.png"], "README.md"),
    (["train", "no_such_recipe"], "no_such_recipe"),
    (["train", "nonbn_wgan_x4", "--set", "train.lrg=1", "--print-config"], "train.lrg"),
    (["eval", "--checkpoint", "nope.safetensors", "--sample-data"], "nope.safetensors"),
    (["eval", "--sample-data", "--tile", "1"], "--tile 1 must be larger than twice --tile-pad"),
    (["export", "-o", "x.onnx", "--opset", "8"], "--opset must be an int >= 9"),
    (["upscale", "missing.png", "-o", "x", "--model", "no_such_model"], "--model: unknown pretrained model"),
])
def test_user_errors_are_one_line(args, needle):
    p = run(*args, check=False)
    assert p.returncode != 0
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in p.stderr, p.stderr


def test_model_and_checkpoint_exclude_each_other():
    p = run("eval", "--sample-data", "--model", "nonbn_x4", "--checkpoint", "x.safetensors", check=False)
    assert p.returncode == 2 and "argument --checkpoint: not allowed with argument --model" in p.stderr, p.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [["upscale", "in.png", "-o", "out.png"], ["eval", "--sample-data"]])
def test_device_cuda_without_cuda_is_one_line(command, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    p = run(*[str(tmp_path / a) if a.endswith(".png") else a for a in command], "--device", "cuda", check=False)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "--device cuda: CUDA is not available" in err[0], p.stderr


def test_print_config_dotted_option():
    p = run("train", "srresnet_x4", "--train.lr_g", "3e-4", "--print-config")
    assert "lr_g: 0.0003" in p.stdout


def _fake_command(monkeypatch, exc):
    from fastsr import cli

    def run_(args, extra):
        raise exc

    monkeypatch.setitem(cli.SUBCOMMANDS, "eval", ("fake", lambda p: None, run_))
    return cli


def test_user_error_types_are_one_line(monkeypatch, capsys):
    from fastsr.errors import CheckpointError, ConfigError, DataError, UserError

    for exc in (UserError("bad --flag"), ConfigError("bad key"), CheckpointError("bad file"), DataError("no image"),
                FileNotFoundError("missing.png")):
        cli = _fake_command(monkeypatch, exc)
        monkeypatch.delenv("FASTSR_DEBUG", raising=False)
        assert cli.main(["eval"]) == 2
        assert capsys.readouterr().err == f"fastsr: error: {exc}\n"
        monkeypatch.setenv("FASTSR_DEBUG", "1")  # the traceback on request
        with pytest.raises(type(exc)):
            cli.main(["eval"])


def test_internal_errors_keep_their_traceback(monkeypatch):
    """A ValueError that is not a user error is a bug: cli.main does not turn it into a line."""
    monkeypatch.delenv("FASTSR_DEBUG", raising=False)
    for exc in (ValueError("internal"), RuntimeError("internal"), TypeError("internal")):
        cli = _fake_command(monkeypatch, exc)
        with pytest.raises(type(exc), match="internal"):
            cli.main(["eval"])


def test_eval_skips_images_too_small_to_measure(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    for name, side in (("tiny", 6), ("ok", 40)):
        Image.fromarray((np.random.default_rng(0).random((side, side, 3)) * 255).astype(np.uint8)).save(
            folder / f"{name}.png")
    p = run("eval", "--data", folder, check=False)
    assert p.returncode == 0 and "skipped 1 image(s) under 19 px" in p.stderr and "tiny" in p.stderr, p.stderr
    assert "ok" in p.stdout and "Traceback" not in p.stderr
    (folder / "ok.png").unlink()
    p = run("eval", "--data", folder, check=False)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and err[-1].startswith("fastsr: error: no readable images large enough"), p.stderr
