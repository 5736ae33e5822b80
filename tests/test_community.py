"""fastsr.models.load against the upstream architecture code (BasicSR, Real-ESRGAN).

The upstream classes come from the installed ``basicsr`` (and ``realesrgan``) packages,
installed for the tests only (``pip install --no-deps basicsr realesrgan``; see the test
extra). Their package ``__init__`` imports cv2, torchvision, lmdb and a compiled-ops
loader, none of which the architectures use and torchvision does not import next to this
torch, so the single arch files are loaded by path with :mod:`importlib` while the names
they import but never call (``torchvision``, ``basicsr.ops.dcn``, ``basicsr.utils``, the
registry) are stubbed in ``sys.modules`` just for the loading. The module under test never
sees the stubs.

Each test: a small, randomly initialised upstream model (biases and PReLU slopes randomised
too, since BasicSR initialises biases to zero) -> its state dict saved with upstream key
names (.pth / .safetensors, ``params_ema`` / ``params`` wrapping, ``module.`` prefix, the
old ESRGAN layouts by renaming) -> ``fastsr.models.load`` -> the same output in float32,
fused and unfused. And back: weights fastsr trains load into the upstream class.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fastsr import models
from fastsr.models import Detected, UnknownCheckpointError, create, load
from helpers import assert_same_output

# Float32 tolerance: the fused epilogues add the bias after the convolution instead of
# inside it (one extra rounding per layer), a few ulps of values of magnitude ~1.
ATOL, RTOL = 2e-5, 1e-5


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the package without importing it
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def _load_upstream() -> dict[str, types.ModuleType]:
    basicsr = _package_dir("basicsr")
    if basicsr is None:
        pytest.skip("basicsr is not installed (pip install --no-deps basicsr)")

    class _Registry:
        def register(self, *args, **kwargs):
            return lambda obj: obj

    def pkg(name, **attrs):
        m = types.ModuleType(name)
        m.__path__ = []
        m.__dict__.update(attrs)
        return m

    stubs = {
        "torchvision": pkg("torchvision", __version__="0.0.0"),
        "basicsr": pkg("basicsr"),
        "basicsr.archs": pkg("basicsr.archs"),
        "basicsr.utils": pkg("basicsr.utils", get_root_logger=lambda *a, **k: None),
        "basicsr.utils.registry": pkg("basicsr.utils.registry", ARCH_REGISTRY=_Registry()),
        "basicsr.ops": pkg("basicsr.ops"),
        "basicsr.ops.dcn": pkg("basicsr.ops.dcn", ModulatedDeformConvPack=nn.Module, modulated_deform_conv=None),
    }
    if importlib.util.find_spec("distutils") is None:  # Python >= 3.12; arch_util imports LooseVersion
        stubs["distutils"] = pkg("distutils")
        stubs["distutils.version"] = pkg("distutils.version", LooseVersion=str)
    files = {f"basicsr.archs.{n}": basicsr / "archs" / f"{n}.py"
             for n in ("arch_util", "rrdbnet_arch", "srvgg_arch", "srresnet_arch", "edsr_arch", "rcan_arch")}
    realesrgan = _package_dir("realesrgan")
    if realesrgan is not None:
        files["realesrgan.archs.srvgg_arch"] = realesrgan / "archs" / "srvgg_arch.py"
        stubs["realesrgan"] = pkg("realesrgan")
        stubs["realesrgan.archs"] = pkg("realesrgan.archs")
    loaded = {}
    with mock.patch.dict(sys.modules, stubs):
        for name, path in files.items():
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded[name] = module
    return loaded


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models here are tiny: with several threads on a busy machine the OpenMP
    hand-offs cost more than the convolutions."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def up():
    return _load_upstream()


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random biases and PReLU slopes on top of the upstream initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


# id -> (upstream module, class, upstream kwargs, expected fastsr architecture, scale, input H=W)
CASES = {
    "rrdb_x4": ("basicsr.archs.rrdbnet_arch", "RRDBNet", dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=2,
                                                      num_grow_ch=4), "RRDBNet", 4, 6),
    "rrdb_x2": ("basicsr.archs.rrdbnet_arch", "RRDBNet", dict(num_in_ch=3, num_out_ch=3, scale=2, num_feat=8, num_block=1,
                                                      num_grow_ch=4), "RRDBNet", 2, 8),
    "rrdb_x1": ("basicsr.archs.rrdbnet_arch", "RRDBNet", dict(num_in_ch=3, num_out_ch=3, scale=1, num_feat=8, num_block=1,
                                                      num_grow_ch=4), "RRDBNet", 1, 8),
    "srvgg_prelu": ("basicsr.archs.srvgg_arch", "SRVGGNetCompact", dict(num_feat=8, num_conv=3, upscale=4),
                    "SRVGGNetCompact", 4, 7),
    "srvgg_x2": ("basicsr.archs.srvgg_arch", "SRVGGNetCompact", dict(num_feat=8, num_conv=1, upscale=2),
                 "SRVGGNetCompact", 2, 7),
    "realesrgan_srvgg": ("realesrgan.archs.srvgg_arch", "SRVGGNetCompact", dict(num_feat=8, num_conv=2, upscale=4),
                         "SRVGGNetCompact", 4, 7),
    "srvgg_relu": ("basicsr.archs.srvgg_arch", "SRVGGNetCompact", dict(num_feat=8, num_conv=2, upscale=4, act_type="relu"),
                   "SRVGGNetCompact", 4, 7),
    "msrresnet_x4": ("basicsr.archs.srresnet_arch", "MSRResNet", dict(num_feat=8, num_block=2, upscale=4), "MSRResNet", 4, 7),
    "msrresnet_x3": ("basicsr.archs.srresnet_arch", "MSRResNet", dict(num_feat=8, num_block=1, upscale=3), "MSRResNet", 3, 7),
    "msrresnet_x2": ("basicsr.archs.srresnet_arch", "MSRResNet", dict(num_feat=8, num_block=1, upscale=2), "MSRResNet", 2, 7),
    "edsr_x2": ("basicsr.archs.edsr_arch", "EDSR", dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2),
                "EDSR", 2, 7),
    "edsr_x3": ("basicsr.archs.edsr_arch", "EDSR", dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=3),
                "EDSR", 3, 7),
    "edsr_x4": ("basicsr.archs.edsr_arch", "EDSR", dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4),
                "EDSR", 4, 7),
    "rcan_x2": ("basicsr.archs.rcan_arch", "RCAN", dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_group=2, num_block=2,
                                                squeeze_factor=4, upscale=2), "RCAN", 2, 7),
    "rcan_x3": ("basicsr.archs.rcan_arch", "RCAN", dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_group=1, num_block=1,
                                                squeeze_factor=2, upscale=3), "RCAN", 3, 7),
}


def _upstream_model(up, case: str, seed: int = 0) -> nn.Module:
    module, cls, kwargs, *_ = CASES[case]
    if module not in up:
        pytest.skip(f"{module.split('.')[0]} is not installed (pip install --no-deps {module.split('.')[0]})")
    torch.manual_seed(seed)
    return _randomise(getattr(up[module], cls)(**kwargs), seed)


def _input(case: str, n: int = 2) -> torch.Tensor:
    size = CASES[case][5]
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _save(sd: dict, path: Path, wrap: str) -> Path:
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    if "module" in wrap:
        sd = {f"module.{k}": v for k, v in sd.items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
        return path
    if wrap.startswith("params_ema"):
        sd = {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}}  # EMA wins
    elif wrap.startswith("params"):
        sd = {"params": sd}
    elif wrap.startswith("state_dict"):
        sd = {"state_dict": sd, "epoch": 3}
    torch.save(sd, path)
    return path


def _check_outputs(model: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    assert_same_output(model, ref, x, ATOL, RTOL)


@pytest.mark.parametrize("case", list(CASES))
def test_upstream_checkpoint_loads_with_same_output(up, case, tmp_path):
    ref = _upstream_model(up, case)
    path = _save(ref.state_dict(), tmp_path / f"{case}.pth", "params_ema")
    model, det = load(path)
    arch, scale = CASES[case][3], CASES[case][4]
    assert isinstance(det, Detected) and (det.architecture, det.scale) == (arch, scale)
    assert type(model).__name__ == arch and not model.training and model.fused
    assert det.wrapper == "params_ema" and det.source == path.name
    _check_outputs(model, ref, _input(case))


@pytest.mark.parametrize("suffix,wrap", [(".pth", ""), (".pth", "params+module"), (".pt", "state_dict"),
                                         (".pth", "params_ema+module"), (".safetensors", ""),
                                         (".safetensors", "module")])
def test_wrappers_and_file_formats(up, suffix, wrap, tmp_path):
    ref = _upstream_model(up, "rrdb_x2", seed=3)
    path = _save(ref.state_dict(), tmp_path / f"w{suffix}", wrap)
    model, det = load(path)
    assert det.architecture == "RRDBNet" and det.scale == 2 and det.layout == "basicsr"
    assert ("module." in det.wrapper) == ("module" in wrap)
    assert det.params == dict(scale=2, num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4)
    _check_outputs(model, ref, _input("rrdb_x2"))


def _to_esrgan_old(sd: dict) -> dict:
    """BasicSR RRDBNet x4 keys -> the original ESRGAN (old BasicSR) ``model.N`` layout."""
    nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    top = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    out = {}
    for k, v in sd.items():
        name, kind = k.rsplit(".", 1)
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)", name)
        if m:
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{kind}"] = v
        elif name == "conv_body":
            out[f"model.1.sub.{nb}.{kind}"] = v
        else:
            out[f"model.{top[name]}.{kind}"] = v
    return out


def _to_esrgan_repo(sd: dict) -> dict:
    """BasicSR RRDBNet keys -> the ESRGAN repository's (RRDB_trunk, trunk_conv, HRconv)."""
    ren = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}
    out = {}
    for k, v in sd.items():
        name, kind = k.rsplit(".", 1)
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.(conv\d)", name)
        out[f"RRDB_trunk.{m[1]}.RDB{m[2]}.{m[3]}.{kind}" if m else f"{ren.get(name, name)}.{kind}"] = v
    return out


@pytest.mark.parametrize("layout,convert", [("esrgan-old", _to_esrgan_old), ("esrgan", _to_esrgan_repo)])
def test_esrgan_layouts(up, layout, convert, tmp_path):
    ref = _upstream_model(up, "rrdb_x4", seed=5)
    path = _save(convert(ref.state_dict()), tmp_path / "esrgan.pth", "")
    model, det = load(path)
    assert (det.architecture, det.layout, det.scale) == ("RRDBNet", layout, 4)
    assert det.params["num_block"] == 2 and det.params["num_grow_ch"] == 4 and det.params["num_feat"] == 8
    _check_outputs(model, ref, _input("rrdb_x4"))
    # the loaded model's state_dict is in BasicSR's names: it loads straight back upstream
    back = _upstream_model(up, "rrdb_x4", seed=6)
    back.load_state_dict(model.state_dict(), strict=True)
    _check_outputs(model, back, _input("rrdb_x4"))


def test_esrgan_old_layout_with_broken_x4_tail_is_refused(up, tmp_path):
    """x1 / x2 / x8 old-arch files load as RRDBNetOld (test_community_conv.py); an x4 tail
    without its second upsampling conv fits neither."""
    sd = _to_esrgan_old(_upstream_model(up, "rrdb_x4").state_dict())
    for kind in ("weight", "bias"):  # drop the second upsampling conv (HR / last conv stay at 8 / 10)
        del sd[f"model.6.{kind}"]
    with pytest.raises(UnknownCheckpointError, match="1 upsampling stage"):
        load(sd)


def test_srvgg_activation_override(up):
    """Without PReLU slopes the activation is not in the file: ReLU is assumed and said so;
    act_type='leakyrelu' loads a LeakyReLU(0.1) model."""
    mod = up["basicsr.archs.srvgg_arch"]
    torch.manual_seed(0)
    lrelu = _randomise(mod.SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4, act_type="leakyrelu"))
    model, det = load(lrelu.state_dict())
    assert det.params["act_type"] == "relu" and any("activation" in n for n in det.notes)
    model, det = load(lrelu.state_dict(), act_type="leakyrelu")
    assert det.params["act_type"] == "leakyrelu" and not det.notes
    _check_outputs(model, lrelu, _input("srvgg_prelu"))


@pytest.mark.parametrize("case", ["rrdb_x4", "rrdb_x2", "srvgg_prelu", "msrresnet_x4", "msrresnet_x3", "edsr_x2",
                                  "rcan_x2"])
def test_fastsr_trained_weights_load_upstream(up, case):
    """One training step of the fused fastsr model, then its state_dict into the upstream class."""
    arch, scale = CASES[case][3], CASES[case][4]
    ref = _upstream_model(up, case)
    model, det = load(ref.state_dict())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = _input(case)
    loss = (model(x) - torch.rand(x.shape[0], 3, x.shape[2] * scale, x.shape[3] * scale)).abs().mean()
    loss.backward()
    opt.step()
    model.eval()
    trained = model.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in ref.state_dict().items())
    back = _upstream_model(up, case, seed=9)
    back.load_state_dict(trained, strict=True)
    _check_outputs(model, back, x)
    assert type(model).__name__ == arch


def test_fastsr_generator_file(tmp_path):
    """fastsr's own files (safetensors with params./params_ema. groups and metadata)."""
    path = models.pretrained_path("nonbn_x4")
    model, det = load(path)
    assert (det.architecture, det.scale, det.layout) == ("NonBNResNet", 4, "fastsr")
    assert det.params["num_blocks"] == 16 and det.params["channels"] == 64
    x = torch.rand(1, 3, 9, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), models.pretrained("nonbn_x4")(x), rtol=0, atol=0)


def test_shared_key_prefix_is_removed(up):
    ref = _upstream_model(up, "edsr_x2")
    model, det = load({"state_dict": {f"netG.{k}": v for k, v in ref.state_dict().items()}})
    assert det.architecture == "EDSR" and det.wrapper == "state_dict+netG."
    _check_outputs(model, ref, _input("edsr_x2"))


def test_unknown_architecture_names_closest_and_keys(up):
    sd = _upstream_model(up, "msrresnet_x4").state_dict()
    sd = {k.replace("conv_hr", "conv_high"): v for k, v in sd.items()}
    with pytest.raises(UnknownCheckpointError) as e:
        load(sd)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert "closest: MSRResNet" in msg and "conv_high.weight" in msg and "conv_hr" in msg


def test_shapes_that_do_not_fit_are_refused(up):
    sd = dict(_upstream_model(up, "srvgg_prelu").state_dict())
    sd["body.3.weight"] = torch.zeros(5)  # a PReLU with the wrong channel count
    with pytest.raises(UnknownCheckpointError, match="body.3.weight"):
        load(sd)
    rrdb = dict(_upstream_model(up, "rrdb_x4").state_dict())
    rrdb["conv_first.weight"] = torch.zeros(8, 6, 3, 3)
    with pytest.raises(UnknownCheckpointError, match="6 input channels"):
        load(rrdb)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load(tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported suffix"):
        load(tmp_path / "w.onnx")
    torch.save({"params": argparse.Namespace(a=1)}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match="weights_only"):
        load(tmp_path / "pickle.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load(tmp_path / "bad.safetensors")
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(UnknownCheckpointError, match="no tensors"):
        load(tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="does not take"):
        load(create("EDSR", num_feat=8, num_block=1).state_dict(), num_conv=3)


def test_srvgg_registered_and_fused_equals_unfused():
    m = create("SRVGGNetCompact", scale=3, num_feat=8, num_conv=2)
    assert "SRVGGNetCompact" in models.list_models() and "realesr_compact" in models.list_models()
    _randomise(m)
    x = torch.rand(2, 3, 5, 6)
    with torch.no_grad():
        a = m(x)
        m.fused = False
        torch.testing.assert_close(a, m(x), atol=ATOL, rtol=RTOL)
    assert a.shape == (2, 3, 15, 18)
    with pytest.raises(ValueError, match="act_type"):
        create("SRVGGNetCompact", act_type="gelu")
    with pytest.raises(ValueError, match="scale"):
        create("SRVGGNetCompact", scale=0)
