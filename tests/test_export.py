"""fastsr.export_onnx: fused models and community checkpoints exported to ONNX, run by
onnxruntime (CPU) at two image sizes and two batch sizes, against PyTorch."""
import numpy as np
import pytest
import torch

import fastsr
from fastsr.export import REFERENCE_DECOMPOSITIONS, exporter_for, reference_program
from fastsr.models import create, load

pytestmark = pytest.mark.usefixtures("one_thread")

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (torch's ONNX exporter needs it)")

# Float32 with a different operation order in onnxruntime (its own conv kernels): a few
# ulps of the per-layer sums, well below one 8-bit level (3.9e-3).
ATOL = 1e-4


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
    for opset in (8, 18.0, True):
        with pytest.raises(ValueError, match="opset must be an int >= 9"):
            fastsr.export_onnx(m, tmp_path / "m.onnx", opset=opset)
    for shape in ((0, 8), (8,), (8.0, 8), "8x8"):
        with pytest.raises(ValueError, match="fixed_shape must be"):
            fastsr.export_onnx(m, tmp_path / "m.onnx", fixed_shape=shape)
    x2 = create("RRDBNet", scale=2, num_block=1, num_feat=8, num_grow_ch=4)
    with pytest.raises(ValueError, match="multiples of 2"):
        fastsr.export_onnx(x2, tmp_path / "m.onnx", fixed_shape=(8, 9))
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(TypeError, match="model_or_path"):
        fastsr.export_onnx(42, tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError):
        fastsr.export_onnx(tmp_path / "missing.pth", tmp_path / "m.onnx")


# ---------------------------------------------------------------------------- opsets, fp16, fixed shape
@pytest.mark.parametrize("opset", [9, 11, 17, 21])
def test_every_opset_and_both_exporters(tmp_path, opset):
    """Opsets 9-20 go through torch.onnx.export(dynamo=False), 21 and later through
    dynamo=True; either way the graph has the asked opset, dynamic batch / height / width,
    and the model's numbers (fused model, unshuffled RRDBNet x2 with its nearest-neighbour
    upsampling)."""
    import onnx

    assert exporter_for(opset) == ("dynamo" if opset == 21 else "torchscript")
    assert exporter_for(18) == exporter_for(20) == "torchscript" and exporter_for(23) == "dynamo"
    for name, model in (("nonbn", _randomised("NonBNResNet", num_blocks=1, channels=8)),
                        ("x2", _randomised("RRDBNet", scale=2, num_block=1, num_feat=8, num_grow_ch=4))):
        path = fastsr.export_onnx(model, tmp_path / f"{name}.onnx", opset=opset)
        proto = onnx.load(str(path))
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
        assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
        assert model.fused
        _check(model, path, [(1, 3, 8, 12), (2, 3, 18, 10)])


# float16 carries 11 significant bits: each stored weight and activation is off by up to
# 2**-12 relative (2.4e-4 at 1.0). Through the few layers of these test models that stays
# well below half an 8-bit level (0.5 / 255 = 2.0e-3), which is what an fp16 export must
# keep for 8-bit images; measured about 2e-4.
FP16_ATOL = 0.5 / 255


@pytest.mark.parametrize("opset", [11, 21])
def test_fp16_export_runs_in_onnxruntime(tmp_path, opset):
    import onnx

    model = _randomised("RRDBNet", scale=2, num_block=1, num_feat=8, num_grow_ch=4)
    path = fastsr.export_onnx(model, tmp_path / "half.onnx", opset=opset, fp16=True)
    fp32 = fastsr.export_onnx(model, tmp_path / "full.onnx", opset=opset)
    proto = onnx.load(str(path))
    f16 = onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == f16
    assert proto.graph.output[0].type.tensor_type.elem_type == f16
    weights = [t for t in proto.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == f16 for t in weights)
    full = [t for t in onnx.load(str(fp32)).graph.initializer if len(t.dims) == 4]
    assert 2 * sum(len(t.raw_data) for t in weights) == sum(len(t.raw_data) for t in full) > 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 8, 12), (2, 3, 18, 10)):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(shape[2]))
        got = sess.run(None, {"lr": x.numpy().astype(np.float16)})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.dtype == np.float16 and got.shape == want.shape
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=FP16_ATOL)


@pytest.mark.parametrize("opset", [11, 21])
def test_fixed_shape_has_no_dynamic_axes(tmp_path, opset):
    model = _randomised("NonBNResNet", num_blocks=1, channels=8)
    path = fastsr.export_onnx(model, tmp_path / "fixed.onnx", opset=opset, fixed_shape=(10, 14))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 10, 14] and sess.get_outputs()[0].shape == [1, 3, 40, 56]
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(sess.run(None, {"lr": x.numpy()})[0], want, rtol=0, atol=ATOL)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime refuses other sizes
        sess.run(None, {"lr": torch.rand(1, 3, 12, 14).numpy()})


def test_reference_program_skips_the_retrace_for_models_with_a_fused_switch(monkeypatch):
    """A model whose fused switch turns it into plain PyTorch is captured as such: no
    run_decompositions (a second trace of the whole graph, which doubled the export time of
    RRDBNet)."""
    calls = []
    real = torch.export.ExportedProgram.run_decompositions
    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    model = _randomised("NonBNResNet", num_blocks=1, channels=8)
    ep = reference_program(model)
    assert not calls and model.fused
    assert not [n for n in ep.graph.nodes if str(n.target).startswith("fastsr.")]


class _RawOps(torch.nn.Module):
    """Calls fastsr's ops directly, without a fused switch: only the reference
    decompositions can make it exportable."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bias = torch.nn.Parameter(torch.randn(12) * 0.1)
        self.slope = torch.nn.Parameter(torch.full((12,), 0.2))

    def forward(self, x):
        y = torch.ops.fastsr.bias_prelu(self.conv(x), self.bias, self.slope)
        return torch.nn.functional.pixel_shuffle(y, 2)


def test_raw_fastsr_ops_are_decomposed(tmp_path):
    """From opset 18 such a module goes through the dynamo exporter and the decompositions
    (the TorchScript tracer cannot write fastsr's ops)."""
    torch.manual_seed(0)
    model = _RawOps().eval()
    for opset in (18, 21):
        path = fastsr.export_onnx(model, tmp_path / f"raw{opset}.onnx", opset=opset, in_channels=3)
        _check(model, path, [(1, 3, 8, 12), (2, 3, 5, 7)])
    with pytest.raises(ValueError, match="fastsr::bias_prelu.*use opset 18 or later"):  # TorchScript: no decompositions
        fastsr.export_onnx(model, tmp_path / "raw11.onnx", opset=11, in_channels=3)


def test_export_command_options(tmp_path):
    from _cli_util import run

    ref = _randomised("RRDBNet", scale=2, num_block=1, num_feat=8, num_grow_ch=4)
    torch.save({"params_ema": ref.state_dict()}, tmp_path / "RealESRGAN_x2.pth")
    p = run("export", "--checkpoint", tmp_path / "RealESRGAN_x2.pth", "-o", tmp_path / "x2.onnx", "--opset", "13",
            "--fp16", "--fixed-shape", "16x20")
    assert "input 'lr' (1, C, 16, 20), output 'sr' (1, C, 32, 40), float16" in p.stdout
    assert "opset 13, TorchScript exporter (dynamo=False)" in p.stdout
    sess = ort.InferenceSession(str(tmp_path / "x2.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 16, 20] and sess.get_inputs()[0].type == "tensor(float16)"
    for args, needle in ((["--fixed-shape", "15x20"], "--fixed-shape must be (height, width), positive integers "
                                                      "that are multiples of 2"),
                         (["--opset", "7"], "--opset must be an int >= 9")):
        p = run("export", "--checkpoint", tmp_path / "RealESRGAN_x2.pth", "-o", tmp_path / "bad.onnx", *args,
                check=False)
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(err) == 1 and needle in err[0], p.stderr
    p = run("export", "-o", tmp_path / "bad.onnx", "--fixed-shape", "0x20", check=False)
    assert p.returncode == 2 and "expected positive HxW" in p.stderr
    assert not (tmp_path / "bad.onnx").exists()
