"""imresize_integer (MATLAB bicubic by strided convolutions) against imresize, and
NonBNResNet's back-projection: state_dict unchanged, SR consistent with its LR, the checks,
the ONNX export rule."""
import pytest
import torch

from fastsr.data.imresize import imresize, imresize_integer
from fastsr.models import NonBNResNet


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 8, 12), (1, 3, 4, 4), (3, 1, 6, 18), (1, 3, 12, 24),
                                   (3, 12, 24)])
@pytest.mark.parametrize("s", [2, 3, 4])
def test_imresize_integer_equals_imresize(shape, s):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
    torch.testing.assert_close(imresize_integer(x, float(s)), imresize(x, float(s)), rtol=0, atol=1e-12)
    if shape[-1] % s == 0 and shape[-2] % s == 0:
        torch.testing.assert_close(imresize_integer(x, 1 / s), imresize(x, 1 / s), rtol=0, atol=1e-12)


def test_imresize_integer_tiny_images_layouts_and_dtypes():
    x = torch.rand(2, 3, 1, 2, dtype=torch.float64)  # a mirror wider than the image
    torch.testing.assert_close(imresize_integer(x, 4.0), imresize(x, 4.0), rtol=0, atol=1e-12)
    y = torch.rand(1, 3, 16, 8)
    for t in (y.contiguous(memory_format=torch.channels_last), y.transpose(2, 3).contiguous().transpose(2, 3)):
        torch.testing.assert_close(imresize_integer(t, 0.25), imresize(y, 0.25), rtol=1e-5, atol=1e-6)
    out = imresize_integer(y.bfloat16(), 4.0)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 64, 32)


def test_imresize_integer_checks():
    x = torch.rand(1, 3, 8, 8)
    for bad in (2.5, 1.0, 0.3, 0, -4, float("nan")):
        with pytest.raises(ValueError, match="scale must be an integer"):
            imresize_integer(x, bad)
    with pytest.raises(ValueError, match="multiples of 3"):
        imresize_integer(x, 1 / 3)
    with pytest.raises(TypeError, match="floating-point"):
        imresize_integer(x.to(torch.uint8), 2)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        imresize_integer(x[0, 0], 2)


def _pair(back_projection, **kw):
    torch.manual_seed(0)
    plain = NonBNResNet(num_blocks=2, channels=16, **kw).eval()
    bp = NonBNResNet(num_blocks=2, channels=16, back_projection=back_projection, **kw).eval()
    bp.load_state_dict(plain.state_dict())  # no parameters of its own
    return plain, bp


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_back_projection_makes_sr_consistent_with_lr(scale):
    plain, bp = _pair(2, scale=scale)
    x = torch.rand(2, 3, 9, 12)
    with torch.no_grad():
        y0, y = plain(x), bp(x)
    err0 = (imresize(y0, 1 / scale) - x).abs().max().item()
    err = (imresize(y, 1 / scale) - x).abs().max().item()
    assert y.shape == y0.shape and err < 0.25 * err0, (err, err0)


def test_back_projection_keeps_state_dict_and_gradients():
    plain, bp = _pair(1)
    assert set(plain.state_dict()) == set(bp.state_dict())
    x = torch.rand(1, 3, 8, 8)
    bp(x).mean().backward()
    assert all(p.grad is not None for p in bp.parameters())
    assert "back_projection=1" in repr(bp)


def test_back_projection_checks():
    for bad in (-1, 9, 1.5, True, "1"):
        with pytest.raises(ValueError, match="back_projection must be an integer 0..8"):
            NonBNResNet(num_blocks=1, channels=8, back_projection=bad)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        NonBNResNet(num_blocks=1, channels=8, in_channels=1, out_channels=3, back_projection=1)


def test_back_projection_exports_only_at_a_fixed_size(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import fastsr

    _, bp = _pair(1)
    with pytest.raises(ValueError, match="back_projection exports only with a fixed input size"):
        fastsr.export_onnx(bp, tmp_path / "bp.onnx")
    path = fastsr.export_onnx(bp, tmp_path / "bp.onnx", fixed_shape=(8, 12))
    x = torch.rand(1, 3, 8, 12)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lr": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), bp(x), rtol=0, atol=1e-4)
