"""fastsr.export_onnx: fused models and community checkpoints exported to ONNX, run by
onnxruntime (CPU) at two image sizes and two batch sizes, against PyTorch."""
import numpy as np
import pytest
import torch

import fastsr
from fastsr.export import REFERENCE_DECOMPOSITIONS
from fastsr.models import create, load

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (torch's ONNX exporter needs it)")

# Float32 with a different operation order in onnxruntime (its own conv kernels): a few
# ulps of the per-layer sums, well below one 8-bit level (3.9e-3).
ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: thread hand-offs cost more than the work on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomised(name, **kw):
    torch.manual_seed(0)
    m = create(name, **kw).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _run_onnx(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "lr" and out.name == "sr"
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[2], str) and isinstance(inp.shape[3], str)
    return sess.run(None, {"lr": x.numpy()})[0]


def _check(model, path, shapes):
    for shape in shapes:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(shape[2]))
        with torch.no_grad():
            want = model(x).numpy()
        got = _run_onnx(path, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_export_module_dynamic_sizes(tmp_path):
    """NonBNResNet runs all three fused epilogues (bias_prelu, bias_residual,
    pixel_shuffle_prelu); the ONNX graph has only standard ops in their place."""
    import onnx

    m = _randomised("NonBNResNet", num_blocks=1, channels=8)
    path = fastsr.export_onnx(m, tmp_path / "sub" / "nonbn.onnx")
    assert m.fused  # the model itself keeps its fused layers
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for n in graph.node}
    assert {"Conv", "PRelu", "DepthToSpace"} <= ops, ops
    _check(m, path, [(1, 3, 9, 13), (3, 3, 20, 16)])
    assert set(REFERENCE_DECOMPOSITIONS) == {torch.ops.fastsr.bias_prelu.default,
                                              torch.ops.fastsr.bias_residual.default,
                                              torch.ops.fastsr.pixel_shuffle_prelu.default}


def test_export_community_checkpoint_with_unshuffle(tmp_path):
    """A Real-ESRGAN x2 RRDBNet file (pixel-unshuffled input: H, W even) straight from its path."""
    ref = _randomised("RRDBNet", scale=2, num_block=1, num_feat=8, num_grow_ch=4)
    torch.save({"params_ema": ref.state_dict()}, tmp_path / "RealESRGAN_x2.pth")
    path = fastsr.export_onnx(tmp_path / "RealESRGAN_x2.pth", tmp_path / "x2.onnx")
    model, det = load(tmp_path / "RealESRGAN_x2.pth")
    assert det.scale == 2
    _check(model, path, [(1, 3, 8, 12), (2, 3, 18, 10)])


def test_export_errors(tmp_path):
    m = create("SRVGGNetCompact", num_feat=4, num_conv=0)
    with pytest.raises(ValueError, match="opset"):
        fastsr.export_onnx(m, tmp_path / "m.onnx", opset=11)
    with pytest.raises(TypeError, match="model_or_path"):
        fastsr.export_onnx(42, tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError):
        fastsr.export_onnx(tmp_path / "missing.pth", tmp_path / "m.onnx")
