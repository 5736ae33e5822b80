"""ONNX export of the community families: with dynamic height and width where the graph
keeps the size arithmetic symbolic (checked in onnxruntime at sizes other than the traced
one, against the PyTorch model), else a one-line error pointing to a fixed-size export,
which then matches at its size."""
from __future__ import annotations

import pytest
import torch

from fastsr import cli
from fastsr.export import export_onnx
from fastsr.models import load
from helpers import spandrel_arch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported graphs")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
pytest.importorskip("einops", reason="einops is needed by spandrel's architecture files (the reference)")

#: id -> (spandrel family, module, class, kwargs)
DYNAMIC = {
    "SwinIR": ("SwinIR", "SwinIR", "SwinIR", dict(upscale=2, img_size=16, window_size=4, depths=[2], embed_dim=12,
                                                 num_heads=[2], mlp_ratio=2.0, upsampler="pixelshuffledirect")),
    "SPAN": ("SPAN", "span", "SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)),
    "RealPLKSR": ("PLKSR", "RealPLKSR", "RealPLKSR", dict(dim=16, n_blocks=2, upscaling_factor=2, kernel_size=7)),
}
FIXED_ONLY = {
    "RealCUGAN": ("RealCUGAN", "upcunet_v3", "UpCunet3x", dict()),
    "OmniSR": ("OmniSR", "OmniSR", "OmniSR", dict(num_feat=8, window_size=4, up_scale=2)),
}


def _file(case, tmp_path):
    family, module, cls, kwargs = case
    torch.manual_seed(0)
    ref = getattr(spandrel_arch(family, module), cls)(**kwargs).eval()
    path = tmp_path / "model.pth"
    torch.save(ref.state_dict(), path)
    return path


def _matches(onnx_path, model, sizes):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            want = model(x)
        got = torch.from_numpy(sess.run(None, {"lr": x.numpy()})[0])
        assert got.shape == want.shape, (h, w)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(DYNAMIC))
def test_dynamic_export_runs_at_other_sizes(name, tmp_path):
    path = _file(DYNAMIC[name], tmp_path)
    model, _ = load(path)
    export_onnx(path, tmp_path / "m.onnx")
    _matches(tmp_path / "m.onnx", model.eval(), [(37, 45), (50, 41)])


@pytest.mark.parametrize("name", list(FIXED_ONLY))
def test_fixed_size_only_families(name, tmp_path, capsys):
    """Real-CUGAN's crops are Python-int arithmetic (a traced graph would keep the traced
    size's: silently wrong elsewhere) and Omni-SR's window padding defeats torch.export's
    shape solver: a dynamic export is refused in one line; a fixed one matches."""
    path = _file(FIXED_ONLY[name], tmp_path)
    assert cli.main(["export", "--checkpoint", str(path), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"fastsr: error: export_onnx: {name} does not export with a dynamic height and width")
    assert "--fixed-shape" in err[-1]
    model, _ = load(path)
    export_onnx(path, tmp_path / "m.onnx", fixed_shape=(37, 45))
    _matches(tmp_path / "m.onnx", model.eval(), [(37, 45)])


def test_no_onnx_form_is_a_one_line_error(tmp_path):
    """SAFMN pools to sizes that are not a divisor of the input (adaptive max pooling with
    uneven bins), which ONNX cannot express."""
    path = _file(("SAFMN", "safmn", "SAFMN", dict(dim=8, n_blocks=1, upscaling_factor=2)), tmp_path)
    with pytest.raises(ValueError, match="SAFMN has no ONNX form at opset 18"):
        export_onnx(path, tmp_path / "m.onnx", fixed_shape=(37, 45))
