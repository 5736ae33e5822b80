"""fastsr.models.load of Real-CUGAN, OmniSR and SAFMN checkpoints against spandrel 0.4.2's
architecture code (the independent reference; ``tests/helpers.spandrel_arch`` imports one
architecture file, or skips when spandrel / einops are missing).

Each test: spandrel's class with small random weights (biases, norms and scalar parameters
randomised too) -> its state_dict saved as upstream saves it (a bare state dict in ``.pth``
or ``.safetensors``) -> ``fastsr.models.load`` -> the architecture and sizes read from the
shapes, the same output in float32 (fused and unfused) within 1e-5, and the loaded model's
state_dict loads back into the upstream class.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import assert_same_output, save_state_dict, spandrel_arch

from fastsr.errors import DataError
from fastsr.inference import optimize_for_inference
from fastsr.models import UnknownCheckpointError, create, load
from fastsr.models._utils import input_channels

ATOL, RTOL = 1e-5, 1e-5
# spandrel's Omni-SR calls torch.meshgrid without indexing=
pytestmark = [pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"), pytest.mark.usefixtures("one_thread")]


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Upstream initialisation plus noise on every 1-d (and scalar-per-head) parameter:
    biases, norm weights, temperatures are otherwise constants that hide mix-ups."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 or p.shape[1:] == (1, 1):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _save(sd: dict, path: Path) -> Path:
    return save_state_dict(sd, path)


def _same_output(model: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    assert_same_output(model, ref, x, ATOL, RTOL)


def _round_trip(ref: nn.Module, path: Path, arch: str, scale: int, sizes, make_ref) -> nn.Module:
    """Save ``ref``, load it with fastsr, compare on inputs of ``sizes``, load the fastsr
    state_dict back into a fresh upstream model (``make_ref()``) and compare again."""
    model, det = load(_save(ref.state_dict(), path))
    assert (det.architecture, det.scale) == (arch, scale)
    assert type(model).__name__ == arch and model.fused and not model.training
    g = torch.Generator().manual_seed(1)
    for h, w in sizes:
        _same_output(model, ref, torch.rand(1, 3, h, w, generator=g))
    back = make_ref().eval()
    back.load_state_dict(model.state_dict(), strict=True)
    _same_output(model, back, torch.rand(1, 3, *sizes[0], generator=g))
    return model, det


# ------------------------------------------------------------------------------ Real-CUGAN
@pytest.fixture(scope="module")
def cugan():
    return spandrel_arch("RealCUGAN", "upcunet_v3")


@pytest.mark.parametrize("scale,pro,suffix", [(2, False, ".pth"), (2, True, ".safetensors"), (3, False, ".safetensors"),
                                              (3, True, ".pth"), (4, False, ".pth"), (4, True, ".safetensors")])
def test_realcugan(cugan, scale, pro, suffix, tmp_path):
    cls = {2: cugan.UpCunet2x, 3: cugan.UpCunet3x, 4: cugan.UpCunet4x}[scale]
    torch.manual_seed(scale)
    ref = _randomise(cls(pro=pro), seed=scale)
    model, det = _round_trip(ref, tmp_path / f"cugan{suffix}", "RealCUGAN", scale, [(20, 22), (23, 21)],
                             lambda: cls(pro=pro))
    assert det.params == dict(scale=scale, in_channels=3, out_channels=3, pro=pro, fast=False)
    assert det.layout == "real-cugan" and model.is_pro == pro and not det.notes


def test_realcugan_fast(cugan, tmp_path):
    """UpCunet2x_fast: the x4 design on the pixel-unshuffled input (its shapes equal a
    UpCunet4x for 12-channel images: the fast model is assumed, and said so)."""
    torch.manual_seed(7)
    ref = _randomise(cugan.UpCunet2x_fast(), seed=7)
    model, det = _round_trip(ref, tmp_path / "fast.safetensors", "RealCUGAN", 2, [(40, 44), (43, 47)],
                             cugan.UpCunet2x_fast)  # sizes upstream runs: padded to 4k, not just 2k
    with torch.no_grad():
        assert model(torch.rand(1, 3, 42, 45)).shape == (1, 3, 84, 90)
    assert det.params == dict(scale=2, in_channels=3, out_channels=3, pro=False, fast=True) and model.fast
    assert any("UpCunet2x_fast" in n for n in det.notes)
    with pytest.raises(DataError, match="too small"):
        model(torch.rand(1, 3, 39, 40))
    with pytest.raises(ValueError, match="fast"):
        create("RealCUGAN", scale=4, fast=True)


def test_realcugan_alpha_and_errors(cugan):
    torch.manual_seed(0)
    ref = _randomise(cugan.UpCunet2x(), seed=0)
    model, _ = load(ref.state_dict())
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(x, alpha=0.5), ref(x, alpha=0.5), atol=ATOL, rtol=RTOL)
    with pytest.raises(DataError, match="too small"):
        model(torch.rand(1, 3, 19, 24))  # the reflect padding of 18 (+1 to even) needs 20
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 1, 24, 24))
    with pytest.raises(ValueError, match="scale"):
        create("RealCUGAN", scale=8)
    sd = dict(ref.state_dict())
    sd["unet1.conv_bottom.weight"] = torch.zeros(64, 3, 6, 6)
    with pytest.raises(UnknownCheckpointError, match="6x6 transposed"):
        load(sd)


# ------------------------------------------------------------------------------ OmniSR
@pytest.fixture(scope="module")
def omnisr():
    return spandrel_arch("OmniSR", "OmniSR")


OMNISR = {  # id -> upstream kwargs (small widths; the released models: 64 features, window 8)
    "x4_w8": dict(num_feat=16, block_num=1, window_size=8, res_num=1, up_scale=4),
    "x2_w4_deep": dict(num_feat=16, block_num=2, window_size=4, res_num=2, up_scale=2),
    "x3_nobias": dict(num_feat=8, block_num=1, window_size=4, res_num=1, up_scale=3, bias=False),
}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("case", list(OMNISR))
def test_omnisr(omnisr, case, suffix, tmp_path):
    kw = OMNISR[case]
    torch.manual_seed(0)
    ref = _randomise(omnisr.OmniSR(**kw), seed=1)
    model, det = _round_trip(ref, tmp_path / f"omnisr{suffix}", "OmniSR", kw["up_scale"], [(16, 16), (15, 21)],
                             lambda: omnisr.OmniSR(**kw))
    want = dict(scale=kw["up_scale"], num_in_ch=3, num_out_ch=3, num_feat=kw["num_feat"], block_num=kw["block_num"],
                pe=True, window_size=kw["window_size"], res_num=kw["res_num"], bias=kw.get("bias", True))
    assert det.params == want and det.layout == "omni-sr" and not det.notes


def test_omnisr_profiler_counters_and_window_override(omnisr):
    """Released files carry thop's total_ops / total_params buffers (dropped); without the
    position bias the window size is not in the file: 8 is assumed and said so."""
    kw = dict(num_feat=8, block_num=1, window_size=4, res_num=1, up_scale=2, pe=False)
    torch.manual_seed(0)
    ref = _randomise(omnisr.OmniSR(**kw), seed=2)
    sd = dict(ref.state_dict())
    sd.update({"total_ops": torch.zeros(1, dtype=torch.float64), "total_params": torch.zeros(1),
               "input.total_ops": torch.zeros(1), "residual_layer.0.esa.conv1.total_params": torch.zeros(1)})
    model, det = load(sd)
    assert det.params["window_size"] == 8 and det.params["pe"] is False and any("window_size" in n for n in det.notes)
    model, det = load(sd, window_size=4)
    assert det.params["window_size"] == 4 and not det.notes
    _same_output(model, ref, torch.rand(1, 3, 16, 20))
    with pytest.raises(DataError, match="too small"):
        model(torch.rand(1, 3, 8, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        create("OmniSR", num_feat=6)


# ------------------------------------------------------------------------------ SAFMN
@pytest.fixture(scope="module")
def safmn():
    return spandrel_arch("SAFMN", "safmn")


SAFMN_CASES = {  # id -> upstream kwargs (released: dim 36, 8 blocks, ffn_scale 2)
    "x4": dict(dim=8, n_blocks=2, ffn_scale=2.0, upscaling_factor=4),
    "x2_ffn1.5": dict(dim=12, n_blocks=1, ffn_scale=1.5, upscaling_factor=2),
    "x3": dict(dim=16, n_blocks=3, ffn_scale=2.0, upscaling_factor=3),
}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("case", list(SAFMN_CASES))
def test_safmn(safmn, case, suffix, tmp_path):
    kw = SAFMN_CASES[case]
    torch.manual_seed(0)
    ref = _randomise(safmn.SAFMN(**kw), seed=3)
    model, det = _round_trip(ref, tmp_path / f"safmn{suffix}", "SAFMN", kw["upscaling_factor"],
                             [(16, 16), (13, 19)], lambda: safmn.SAFMN(**kw))
    assert det.params == dict(scale=kw["upscaling_factor"], dim=kw["dim"], n_blocks=kw["n_blocks"],
                              ffn_scale=kw["ffn_scale"]) and det.layout == "safmn"


def test_safmn_errors(safmn):
    model = create("SAFMN", scale=2, dim=8, n_blocks=1)
    with pytest.raises(DataError, match="too small"):
        model(torch.rand(1, 3, 7, 16))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="multiple of 4"):
        create("SAFMN", dim=10)
    sd = dict(safmn.SAFMN(dim=8, n_blocks=1, upscaling_factor=2).state_dict())
    sd["to_img.0.weight"] = torch.zeros(13, 8, 3, 3)
    with pytest.raises(UnknownCheckpointError, match="3 \\* scale\\^2"):
        load(sd)


# ------------------------------------------------------------------------------ all three
@pytest.mark.parametrize("family,module,cls,kwargs,size", [
    ("RealCUGAN", "upcunet_v3", "UpCunet4x", dict(pro=True), 20),
    ("OmniSR", "OmniSR", "OmniSR", dict(num_feat=8, window_size=4, up_scale=2), 16),
    ("SAFMN", "safmn", "SAFMN", dict(dim=8, n_blocks=1, upscaling_factor=3), 12),
])
def test_prepared_for_inference(family, module, cls, kwargs, size):
    """fastsr upscale's CPU path: the convolutions prepacked with their epilogues as oneDNN
    post-ops (:func:`fastsr.optimize_for_inference`), channels_last; the image channels read
    from the first convolution."""
    torch.manual_seed(0)
    ref = _randomise(getattr(spandrel_arch(family, module), cls)(**kwargs), seed=4)
    model, _ = load(ref.state_dict())
    assert input_channels(model) == 3
    x = torch.rand(1, 3, size, size + 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(optimize_for_inference(model, "cpu", "fp32")(x), ref(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("family,module,cls,kwargs,size,scale", [
    ("RealCUGAN", "upcunet_v3", "UpCunet3x", dict(), 18, 3),
    ("OmniSR", "OmniSR", "OmniSR", dict(num_feat=8, window_size=4, up_scale=2), 16, 2),
    ("SAFMN", "safmn", "SAFMN", dict(dim=8, n_blocks=1, upscaling_factor=2), 8, 2),
])
def test_trained_weights_load_upstream(family, module, cls, kwargs, size, scale):
    """One training step of the fused fastsr model (gradients through the fused epilogues
    and attention), then its state_dict into the upstream class: the same output."""
    make = getattr(spandrel_arch(family, module), cls)
    torch.manual_seed(0)
    model, _ = load(_randomise(make(**kwargs), seed=6).state_dict())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (model(x) - torch.rand(2, 3, size * scale, size * scale)).abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    model.eval()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    back = make(**kwargs).eval()
    back.load_state_dict(model.state_dict(), strict=True)
    _same_output(model, back, x)
