"""fastsr.models.load on the convolutional community families, against spandrel's
architecture code (the independent reference: spandrel 0.4.2, imported one architecture
file at a time by :func:`helpers.spandrel_arch`).

Each case: spandrel's class built with small random weights (biases and norm parameters
randomised too) -> its state_dict saved as upstream saves it (.pth and .safetensors) ->
``fastsr.models.load`` -> the same SR output within 1e-5 in float32, fused and unfused ->
the loaded model's state_dict loads back into spandrel's class (strict) with the same output.
"""
from __future__ import annotations

import importlib.util
import re

from pathlib import Path

import pytest
import torch
from torch import nn

from fastsr.export import reference_program
from fastsr.models import UnknownCheckpointError, create, load

from helpers import assert_same_output, save_state_dict, spandrel_arch

pytestmark = pytest.mark.usefixtures("one_thread")

# find_spec, not importorskip: spandrel's package __init__ imports its registry, which needs
# torchvision; helpers.spandrel_arch imports the single architecture files.
if importlib.util.find_spec("spandrel") is None or importlib.util.find_spec("einops") is None:
    pytest.skip("spandrel (pip install --no-deps spandrel==0.4.2) and einops are the reference",
                allow_module_level=True)

ATOL, RTOL = 1e-5, 1e-5


def _esrgan(**kw):
    return spandrel_arch("ESRGAN", "RRDB").RRDBNet(**kw)


def _span(**kw):
    return spandrel_arch("SPAN", "span").SPAN(**kw)


def _plksr(**kw):
    return spandrel_arch("PLKSR", "PLKSR").PLKSR(**kw)


def _realplksr(**kw):
    return spandrel_arch("PLKSR", "RealPLKSR").RealPLKSR(**kw)


# id -> (spandrel constructor, kwargs, fastsr architecture, scale, expected params (subset), input size)
CASES = {
    "esrgan_old_x1": (_esrgan, dict(num_filters=8, num_blocks=1, scale=1), "RRDBNetOld", 1,
                      dict(num_feat=8, num_block=1, num_grow_ch=32, plus=False), 12),
    "esrgan_old_x2": (_esrgan, dict(num_filters=8, num_blocks=2, scale=2), "RRDBNetOld", 2,
                      dict(num_feat=8, num_block=2, plus=False), 12),
    "esrgan_old_x4": (_esrgan, dict(num_filters=8, num_blocks=1, scale=4), "RRDBNet", 4,
                      dict(num_feat=8, num_block=1), 8),
    "esrgan_old_x8": (_esrgan, dict(num_filters=8, num_blocks=1, scale=8), "RRDBNetOld", 8,
                      dict(num_feat=8, num_block=1), 6),
    "esrgan_old_x8_gray": (_esrgan, dict(in_nc=1, out_nc=1, num_filters=4, num_blocks=1, scale=8), "RRDBNetOld",
                           8, dict(num_in_ch=1, num_out_ch=1, num_feat=4), 6),
    "esrgan_plus_x4": (_esrgan, dict(num_filters=8, num_blocks=2, scale=4, plus=True), "RRDBNetOld", 4,
                       dict(num_feat=8, num_block=2, plus=True, noise_sigma=0.1), 8),
    "esrgan_plus_x2": (_esrgan, dict(num_filters=8, num_blocks=1, scale=2, plus=True), "RRDBNetOld", 2,
                       dict(plus=True), 8),
    "span_x4": (_span, dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4), "SPAN", 4,
                dict(num_feat=8, norm=True), 16),
    "span_x2_f12": (_span, dict(num_in_ch=3, num_out_ch=3, feature_channels=12, upscale=2), "SPAN", 2,
                    dict(num_feat=12, norm=True), 17),
    "span_x1_no_norm": (_span, dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=1, norm=False), "SPAN",
                        1, dict(num_feat=8, norm=False), 16),
    "plksr_x4": (_plksr, dict(dim=8, n_blocks=2, upscaling_factor=4, kernel_size=9), "PLKSR", 4,
                 dict(dim=8, n_blocks=2, ccm_type="CCM", kernel_size=9, lk_type="PLK", use_ea=True), 16),
    "plksr_x2_dccm_half": (_plksr, dict(dim=8, n_blocks=1, upscaling_factor=2, kernel_size=7, ccm_type="DCCM",
                                        split_ratio=0.5, use_ea=False), "PLKSR", 2,
                           dict(ccm_type="DCCM", split_ratio=0.5, use_ea=False), 16),
    "plksr_x3_iccm_rect": (_plksr, dict(dim=8, n_blocks=1, upscaling_factor=3, kernel_size=9, ccm_type="ICCM",
                                        lk_type="RectSparsePLK"), "PLKSR", 3,
                           dict(ccm_type="ICCM", lk_type="RectSparsePLK", kernel_size=9), 16),
    "plksr_x2_sparse": (_plksr, dict(dim=8, n_blocks=1, upscaling_factor=2, lk_type="SparsePLK"), "PLKSR", 2,
                        dict(lk_type="SparsePLK", sparse_kernels=[5, 5, 5, 5]), 16),
    "realplksr_x4": (_realplksr, dict(dim=8, n_blocks=2, upscaling_factor=4, kernel_size=9), "RealPLKSR", 4,
                     dict(dim=8, n_blocks=2, kernel_size=9, layer_norm=False, dysample=False), 16),
    "realplksr_x2_layernorm": (_realplksr, dict(dim=8, n_blocks=2, upscaling_factor=2, kernel_size=7,
                                                layer_norm=True, use_ea=False), "RealPLKSR", 2,
                               dict(layer_norm=True, use_ea=False), 16),
    "realplksr_x4_dysample": (_realplksr, dict(dim=8, n_blocks=1, upscaling_factor=4, kernel_size=7, dysample=True),
                              "RealPLKSR", 4, dict(dysample=True), 16),
    "realplksr_x3_dysample": (_realplksr, dict(dim=8, n_blocks=1, upscaling_factor=3, kernel_size=7, dysample=True),
                              "RealPLKSR", 3, dict(dysample=True), 16),
    "realplksr_x1_dysample": (_realplksr, dict(dim=12, n_blocks=1, upscaling_factor=1, kernel_size=7, dysample=True,
                                               split_ratio=0.5), "RealPLKSR", 1, dict(dim=12, dysample=True), 16),
}


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, biases and norm parameters too (many upstream inits are
    zero / one there). Weights are 0.3 / sqrt(fan_in) standard normal: activations stay O(1)
    through the deep stacks, as in trained SR networks; with gain 1 SPAN's 255-scaled input
    grows to outputs ~400 whose float32 rounding alone (upstream vs float64) exceeds 0.1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g) + (1.0 if "norm" in name and "weight" in name else 0))
            else:
                fan_in = p[0].numel()
                p.copy_(0.3 * torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return model.eval()


def _reference(case: str, seed: int = 0) -> nn.Module:
    ctor, kwargs, *_ = CASES[case]
    torch.manual_seed(seed)
    return _randomise(ctor(**kwargs), seed)


def _input(case: str, channels: int = 3) -> torch.Tensor:
    size = CASES[case][5]
    return torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(1))


def _save(sd: dict, path: Path) -> Path:
    return save_state_dict(sd, path)


def _check_outputs(model: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    assert_same_output(model, ref, x, ATOL, RTOL)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_loads_with_upstream_output(case, suffix, tmp_path):
    ref = _reference(case)
    model, det = load(_save(ref.state_dict(), tmp_path / f"{case}{suffix}"))
    arch, scale, params = CASES[case][2:5]
    assert (det.architecture, det.scale) == (arch, scale) and type(model).__name__ == arch
    assert {k: det.params[k] for k in params} == params
    assert model.fused and not model.training
    x = _input(case, det.params.get("num_in_ch", 3))
    _check_outputs(model, ref, x)
    if arch == "RRDBNet":  # BasicSR's key names, loaded back into BasicSR's class in test_community.py
        return
    # back into the upstream class, strictly, with the same output
    back = _reference(case, seed=7)
    back.load_state_dict(model.state_dict(), strict=True)
    _check_outputs(model, back, x)


def test_esrgan_old_x3_needs_the_scale_given():
    """An x3 old-arch file (one nearest-x3 stage) has an x2 file's keys: x2 is assumed and said
    so; scale=3 loads it."""
    ref = _reference("esrgan_old_x2")
    ref_x3 = _esrgan(num_filters=8, num_blocks=2, scale=3).eval()
    ref_x3.load_state_dict(ref.state_dict())
    model, det = load(ref.state_dict())
    assert det.scale == 2 and any("scale=3" in n for n in det.notes)
    model, det = load(ref.state_dict(), scale=3)
    assert det.scale == 3
    _check_outputs(model, ref_x3, _input("esrgan_old_x2"))


def test_esrgan_plus_noise_only_in_training():
    model = create("RRDBNetOld", scale=2, num_feat=8, num_block=1, num_grow_ch=4, plus=True, noise_sigma=0.1)
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(x), model(x))
        model.noise_sigma = 0.0
        for m in model.modules():
            if hasattr(m, "noise_sigma"):
                m.noise_sigma = 0.0
        model.eval()
        a = model(x)
        model.train()
        torch.testing.assert_close(model(x), a, rtol=0, atol=0)


def test_esrgan_old_malformed_tail_is_refused():
    sd = dict(_reference("esrgan_old_x8").state_dict())
    for kind in ("weight", "bias"):
        sd[f"model.20.{kind}"] = sd.pop(f"model.13.{kind}")  # last conv at a wrong index
    with pytest.raises(UnknownCheckpointError, match=r"RRDBNetOld.*11, 20\]"):
        load(sd)


def test_constructor_checks():
    with pytest.raises(ValueError, match="scale"):
        create("RRDBNetOld", scale=5)
    with pytest.raises(ValueError, match="noise_sigma"):
        create("RRDBNetOld", noise_sigma=-1.0)


def test_span_training_mode_and_merged_kernel():
    """Training mode runs the 1x1 -> 3x3 -> 1x1 + skip branches, as upstream's; in eval the
    merged kernel follows in-place weight updates (an optimiser step)."""
    ref = _reference("span_x2_f12")
    model, _ = load(ref.state_dict())
    x = _input("span_x2_f12")
    model.train()
    ref.train()
    for fused in (True, False):
        model.fused = fused
        torch.testing.assert_close(model(x), ref(x), atol=ATOL, rtol=RTOL)
    model.fused = True
    model(x).square().mean().backward()
    assert model.conv_1.conv[0].weight.grad is not None
    model.eval()
    ref.eval()
    _check_outputs(model, ref, x)
    with torch.no_grad():
        for m in (model, ref):
            m.block_3.c2_r.conv[1].weight.mul_(1.5)
            m.conv_1.sk.bias.add_(0.1)
    _check_outputs(model, ref, x)


@pytest.mark.parametrize("case", ["plksr_x4", "plksr_x3_iccm_rect", "realplksr_x4", "realplksr_x2_layernorm",
                                  "realplksr_x4_dysample", "esrgan_plus_x2"])
def test_training_mode_matches_upstream_and_backpropagates(case):
    """With gradients on, the partial large kernel runs out of place (upstream's training
    path) and every parameter that takes part gets a gradient."""
    ref = _reference(case)
    # ESRGAN+ files load with nESRGAN+'s training noise; the reference has none
    overrides = {"noise_sigma": 0.0} if case.startswith("esrgan_plus") else {}
    model, _ = load(ref.state_dict(), **overrides)
    model.train()
    ref.train()
    x = _input(case)
    for fused in (True, False):
        model.fused = fused
        torch.testing.assert_close(model(x), ref(x), atol=ATOL, rtol=RTOL, msg=lambda m: f"fused={fused}: {m}")
    model(x).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_file_lists_key_prefixes_instead_of_a_far_family():
    """A transformer-like file shares one key name with the families: no family is named
    'closest'; the top-level prefixes with their counts are."""
    sd = {f"layers.{i}.attn.qkv.weight": torch.zeros(4, 4) for i in range(6)}
    sd.update({"conv_first.weight": torch.zeros(4, 3, 3, 3), "norm.weight": torch.zeros(4),
               "norm.bias": torch.zeros(4)})
    with pytest.raises(UnknownCheckpointError) as e:
        load(sd)
    msg = str(e.value)
    assert "closest" not in msg and "no supported family" in msg
    assert "layers (6), norm (2), conv_first (1)" in msg and "SPAN" in msg


def test_unknown_file_close_to_a_family_names_it():
    """A PLKSR file with one extra layer: PLKSR is named, with the key that does not match."""
    sd = dict(_reference("plksr_x4").state_dict())
    sd["feats.1.extra.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(UnknownCheckpointError, match=r"closest: PLKSR .*feats\.1\.extra\.weight"):
        load(sd)


def test_span_traces_with_torch_export():
    """The merged kernel is computed from the parameters inside the traced graph (under
    no_grad, as ``fastsr export`` traces), with no state keyed on data pointers, which tracing
    cannot read."""
    ref = _reference("span_x2_f12")
    model, _ = load(ref.state_dict())
    x = _input("span_x2_f12")
    # one re-parameterised conv (a small graph), captured as `fastsr export` captures models
    program = reference_program(model.conv_1)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), ref.conv_1(x), atol=ATOL, rtol=RTOL)


def test_dysample_bfloat16_samples_at_float32_positions():
    """On a 600-pixel-wide input bf16 cannot hold the pixel coordinates: the grid is float32,
    so the bf16 model stays within bf16 rounding of the float32 one."""
    from fastsr.models.plksr import DySample

    torch.manual_seed(0)
    up = DySample(12, 3, scale=2, groups=4).eval()
    x = torch.rand(1, 12, 2, 600)
    with torch.no_grad():
        want = up(x)
        got = up.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.02)


def _old_to_new(sd: dict, repo: bool) -> dict:
    """Old ``model.N`` keys -> BasicSR's (``repo=False``) or the ESRGAN repository's
    RRDBNet names, for any number of upsampling stages (``conv_upK`` / ``upconvK``)."""
    top = sorted({int(k.split(".")[1]) for k in sd if re.fullmatch(r"model\.\d+\.(weight|bias)", k)})
    n = len(top) - 3
    nb = max(int(k.split(".")[3]) for k in sd if k.startswith("model.1.sub."))
    names = {0: "conv_first", 3 * n + 2: "HRconv" if repo else "conv_hr", 3 * n + 4: "conv_last",
             **{3 * k: f"upconv{k}" if repo else f"conv_up{k}" for k in range(1, n + 1)}}
    out = {}
    for k, v in sd.items():
        kind = k.rsplit(".", 1)[1]
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.\w+", k)
        if m:
            out[f"RRDB_trunk.{m[1]}.RDB{m[2]}.conv{m[3]}.{kind}" if repo else f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{kind}"] = v
        elif k.startswith(f"model.1.sub.{nb}."):
            out[f"{'trunk_conv' if repo else 'conv_body'}.{kind}"] = v
        else:
            out[f"{names[int(k.split('.')[1])]}.{kind}"] = v
    return out


@pytest.mark.parametrize("repo", [False, True], ids=["basicsr", "esrgan"])
@pytest.mark.parametrize("case", ["esrgan_old_x1", "esrgan_old_x2", "esrgan_old_x8"])
def test_new_arch_names_with_other_tails_load_as_old_arch(case, repo):
    """x1 / x2 / x8 ESRGAN models saved under BasicSR's or the ESRGAN repository's names
    (``conv_upK`` / ``upconvK``): renamed to the old layout, same output, and back upstream."""
    ref = _reference(case)
    model, det = load(_old_to_new(ref.state_dict(), repo))
    assert (det.architecture, det.scale, det.layout) == ("RRDBNetOld", CASES[case][3], "esrgan" if repo else "basicsr")
    _check_outputs(model, ref, _input(case))
    back = _reference(case, seed=7)
    back.load_state_dict(model.state_dict(), strict=True)
    _check_outputs(model, back, _input(case))
