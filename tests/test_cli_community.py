"""The fastsr command with a community checkpoint: upscale, eval and export of a
Real-ESRGAN compact file (the README's commands), and one-line errors for unknown files."""
import numpy as np
import pytest
import torch
from PIL import Image

from _cli_util import run
from fastsr.data import read_image, sample_images
from fastsr.models import create, load


@pytest.fixture(scope="module")
def community(tmp_path_factory):
    """A small SRVGGNetCompact saved as Real-ESRGAN saves it ({'params': state_dict}), and a
    61 x 71 crop of a sample photograph."""
    d = tmp_path_factory.mktemp("community")
    torch.manual_seed(0)
    m = create("SRVGGNetCompact", num_feat=8, num_conv=2, scale=4)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    torch.save({"params": m.state_dict()}, d / "realesr-general-x4v3.pth")
    x = sample_images("val")[0][1][:, 40:101, 100:171]
    Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(d / "photo.png")
    return d


def test_upscale_with_community_checkpoint(community, tmp_path):
    ckpt = community / "realesr-general-x4v3.pth"
    p = run("upscale", community / "photo.png", "-o", tmp_path / "photo_x4.png", "--checkpoint", ckpt,
            "--precision", "fp32")  # the model's own fp32 numbers (auto is bf16 on CPUs with native bf16)
    assert "model: SRVGGNetCompact x4" in p.stdout
    got = read_image(tmp_path / "photo_x4.png")
    assert got.shape == (3, 61 * 4, 71 * 4)
    model, _ = load(ckpt)
    with torch.no_grad():
        want = model(read_image(community / "photo.png")[None]).clamp(0, 1)[0]
    assert (got - want).abs().max().item() <= 0.5 / 255 + 1e-5  # 8-bit rounding of the PNG


def test_eval_with_community_checkpoint(community):
    p = run("eval", "--checkpoint", community / "realesr-general-x4v3.pth", "--sample-data")
    lines = p.stdout.splitlines()
    assert "realesr-general-x4v3.pth: SRVGGNetCompact x4" in lines[0] and "SR PSNR" in lines[1]
    assert lines[-1].startswith("Mean")


def test_export_and_run_with_onnxruntime(community, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed")
    ckpt = community / "realesr-general-x4v3.pth"
    p = run("export", "--checkpoint", ckpt, "-o", tmp_path / "realesr-general-x4v3.onnx")
    assert "SRVGGNetCompact x4" in p.stdout
    # as in the README
    sess = ort.InferenceSession(str(tmp_path / "realesr-general-x4v3.onnx"), providers=["CPUExecutionProvider"])
    img = np.asarray(Image.open(community / "photo.png").convert("RGB"), dtype=np.float32) / 255
    lr = img.transpose(2, 0, 1)[None]
    sr = sess.run(["sr"], {"lr": lr})[0]
    model, _ = load(ckpt)
    for x in (lr, lr[:, :, :32, :40]):  # two image sizes
        out = sess.run(["sr"], {"lr": np.ascontiguousarray(x)})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        assert out.shape == want.shape == (1, 3, 4 * x.shape[2], 4 * x.shape[3])
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-4)
    assert sr.shape == (1, 3, 244, 284)


def test_unknown_checkpoint_is_one_line(community, tmp_path):
    sd = create("SRVGGNetCompact", num_feat=4, num_conv=1).state_dict()
    torch.save({"params": {k.replace("body", "layers"): v for k, v in sd.items()}}, tmp_path / "odd.pth")
    for cmd in (["upscale", community / "photo.png", "-o", tmp_path / "o.png"], ["export", "-o", tmp_path / "o.onnx"]):
        p = run(*cmd, "--checkpoint", tmp_path / "odd.pth", check=False)
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr
        # no family explains half of its keys: the file's key prefixes, not a far "closest" family
        assert "odd.pth" in err[0] and "no supported family" in err[0] and "layers (8)" in err[0]
