"""fastsr.models.load on the Swin-Transformer families (SwinIR, Swin2SR, HAT, DAT) against
spandrel 0.4.2's copies of the reference architectures (``tests/helpers.spandrel_arch``).

Each case: a tiny reference model (embed dim 12-24, 1-2 layers, depth 2, window 4-8) with
every parameter randomised -> its state dict saved as the reference saves it (buffers
included; ``.pth`` in ``params_ema`` and bare ``.safetensors``) -> ``fastsr.models.load``
-> the detected hyper-parameters, the same output in float32 (fused and unfused) on an
input that is not a multiple of the window, and the loaded model's state dict loading
back into the reference class. Files without the buffers load as well.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fastsr.models import Detected, UnknownCheckpointError, load
from helpers import assert_same_output, save_state_dict, spandrel_arch

pytest.importorskip("einops", reason="einops is needed by spandrel's architecture files (the reference)")
# spandrel's reference code calls torch.meshgrid without indexing=
pytestmark = [pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"), pytest.mark.usefixtures("one_thread")]

ATOL, RTOL = 1e-5, 1e-5
BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")

_SMALL = dict(embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, mlp_ratio=2.0, img_size=16)

_HAT = dict(_SMALL, compress_ratio=4, squeeze_factor=8)
_DAT = dict(embed_dim=32, split_size=[2, 4], expansion_factor=2.0, img_size=16)

# id -> (spandrel family, module, class, reference kwargs, fastsr architecture, expected params, input H, W)
CASES = {
    "swinir_classical_x2": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, upscale=2, upsampler="pixelshuffle"),
                            "SwinIR", dict(scale=2, upsampler="pixelshuffle", window_size=4, img_size=16), (11, 13)),
    "swinir_classical_x3": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, depths=[2], num_heads=[2], upscale=3,
                                                               upsampler="pixelshuffle"),
                            "SwinIR", dict(scale=3, depths=[2], num_heads=[2]), (9, 8)),
    "swinir_lightweight_x4": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, embed_dim=12, num_heads=[3, 3], upscale=4,
                                                                 upsampler="pixelshuffledirect"),
                              "SwinIR", dict(scale=4, embed_dim=12, upsampler="pixelshuffledirect"), (10, 7)),
    "swinir_real_x4_3conv": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, upscale=4, upsampler="nearest+conv",
                                                                resi_connection="3conv"),
                             "SwinIR", dict(scale=4, upsampler="nearest+conv", resi_connection="3conv"), (7, 9)),
    "swinir_real_x2": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, window_size=8, img_size=24, depths=[2],
                                                          num_heads=[2], upscale=2, upsampler="nearest+conv"),
                       "SwinIR", dict(scale=2, window_size=8, img_size=24), (10, 12)),
    "swinir_real_x8": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, depths=[2], num_heads=[2], upscale=8,
                                                          upsampler="nearest+conv"),
                       "SwinIR", dict(scale=8, upsampler="nearest+conv"), (5, 6)),
    "swinir_classical_x8": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, depths=[2], num_heads=[2], upscale=8,
                                                               upsampler="pixelshuffle"),
                            "SwinIR", dict(scale=8, upsampler="pixelshuffle"), (6, 5)),
    "swinir_denoise_gray": ("SwinIR", "SwinIR", "SwinIR", dict(_SMALL, in_chans=1, upscale=1, upsampler=""),
                            "SwinIR", dict(scale=1, in_chans=1, upsampler="", img_range=1.0), (9, 10)),
    "swin2sr_classical_x2": ("Swin2SR", "Swin2SR", "Swin2SR", dict(_SMALL, upscale=2, upsampler="pixelshuffle"),
                             "Swin2SR", dict(scale=2, upsampler="pixelshuffle", window_size=4, img_size=16),
                             (11, 13)),
    "swin2sr_classical_x4_w8": ("Swin2SR", "Swin2SR", "Swin2SR", dict(_SMALL, window_size=8, depths=[2], num_heads=[2],
                                                                      upscale=4, upsampler="pixelshuffle"),
                                "Swin2SR", dict(scale=4, window_size=8, img_size=16), (9, 11)),
    "swin2sr_lightweight_x3": ("Swin2SR", "Swin2SR", "Swin2SR", dict(_SMALL, embed_dim=12, num_heads=[3, 2],
                                                                     upscale=3, upsampler="pixelshuffledirect"),
                               "Swin2SR", dict(scale=3, upsampler="pixelshuffledirect"), (9, 6)),
    "swin2sr_compressed_x4_aux": ("Swin2SR", "Swin2SR", "Swin2SR", dict(_SMALL, upscale=4,
                                                                        upsampler="pixelshuffle_aux"),
                                  "Swin2SR", dict(scale=4, upsampler="pixelshuffle_aux"), (7, 10)),
    "swin2sr_real_x4_3conv": ("Swin2SR", "Swin2SR", "Swin2SR", dict(_SMALL, upscale=4, upsampler="nearest+conv",
                                                                    resi_connection="3conv"),
                              "Swin2SR", dict(scale=4, upsampler="nearest+conv", resi_connection="3conv"), (9, 9)),
    "swin2sr_jpeg": ("Swin2SR", "Swin2SR", "Swin2SR", dict(_SMALL, window_size=7, img_size=14, depths=[2],
                                                           num_heads=[2], upscale=1, upsampler="", img_range=255.0),
                     "Swin2SR", dict(scale=1, upsampler="", window_size=7, img_range=255.0), (10, 9)),
    "hat_x2": ("HAT", "HAT", "HAT", dict(_HAT, upscale=2), "HAT",
               dict(scale=2, window_size=4, compress_ratio=4, squeeze_factor=8, overlap_ratio=0.5,
                    resi_connection="1conv"), (11, 13)),
    "hat_x3_identity_w8": ("HAT", "HAT", "HAT", dict(_HAT, window_size=8, depths=[2], num_heads=[2], upscale=3,
                                                     resi_connection="identity"), "HAT",
                           dict(scale=3, window_size=8, resi_connection="identity"), (9, 10)),
    "hat_x4_overlap": ("HAT", "HAT", "HAT", dict(_HAT, embed_dim=12, num_heads=[3, 2], window_size=8, compress_ratio=3,
                                                 squeeze_factor=6, overlap_ratio=0.25, upscale=4), "HAT",
                       dict(scale=4, embed_dim=12, compress_ratio=3, squeeze_factor=6, overlap_ratio=0.25), (7, 6)),
    # DAT's interaction and position-bias MLPs divide the width by 16 and 32: embed 32 is its smallest
    "dat_x2": ("DAT", "DAT", "DAT", dict(_DAT, depth=[4, 4], num_heads=[2, 4], upscale=2), "DAT",
               dict(scale=2, depths=[4, 4], num_heads=[2, 4], split_size=(2, 4), img_size=16, expansion_factor=2.0),
               (11, 13)),
    "dat_light_x3_3conv": ("DAT", "DAT", "DAT", dict(_DAT, depth=[2], num_heads=[2], upscale=3,
                                                     upsampler="pixelshuffledirect", resi_connection="3conv"), "DAT",
                           dict(scale=3, upsampler="pixelshuffledirect", resi_connection="3conv"), (9, 7)),
    "dat_x4_split_8_32": ("DAT", "DAT", "DAT", dict(_DAT, depth=[1, 1], num_heads=[2, 2], split_size=[8, 32],
                                                    img_size=32, upscale=4), "DAT",
                          dict(scale=4, split_size=(8, 32), img_size=32), (9, 20)),
}


def _reference(case: str, seed: int = 0) -> nn.Module:
    family, module, cls, kwargs, *_ = CASES[case]
    torch.manual_seed(seed)
    ref = getattr(spandrel_arch(family, module), cls)(**kwargs).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # LayerNorm 1/0, zero biases and tables: randomise everything
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for name, b in ref.named_buffers():  # DAT's BatchNorm statistics
            if name.endswith(("running_mean", "running_var")):
                b.add_(0.2 * torch.rand(b.shape, generator=g))
    return ref


def _input(case: str) -> torch.Tensor:
    kwargs, (h, w) = CASES[case][3], CASES[case][6]
    return torch.rand(2, kwargs.get("in_chans", 3), h, w, generator=torch.Generator().manual_seed(1))


def _save(sd: dict, path: Path) -> Path:
    return save_state_dict(sd, path, wrap='params_ema')


def _check(model: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    assert_same_output(model, ref, x, ATOL, RTOL)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("case", list(CASES))
def test_reference_checkpoint_loads_with_same_output(case, suffix, tmp_path):
    ref = _reference(case)
    path = _save(ref.state_dict(), tmp_path / f"{case}{suffix}")
    model, det = load(path)
    arch, expected = CASES[case][4], CASES[case][5]
    assert isinstance(det, Detected) and det.architecture == arch and type(model).__name__ == arch
    assert det.scale == expected["scale"] and det.layout == "reference"
    assert {k: det.params[k] for k in expected} == expected
    assert any("img_range" in n for n in det.notes)
    _check(model, ref, _input(case))
    # and back: the loaded model's state dict is the reference's, buffers included
    back = _reference(case, seed=5)
    back.load_state_dict(model.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


@pytest.mark.parametrize("case", ["swinir_classical_x2", "swinir_real_x4_3conv", "swin2sr_classical_x4_w8"])
def test_files_without_buffers_load(case, tmp_path):
    """The buffers are deterministic; files saved without them (converted, pruned) load, the
    missing ones computed. Without attn_mask the training size is the reference default 64;
    a Swin2SR file without any position buffer does not record its window (8 assumed, the
    released models' value)."""
    ref = _reference(case)
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith(BUFFERS)}
    model, det = load(_save(sd, tmp_path / "nobuf.safetensors"))
    assert det.params["img_size"] == 64 and any("training patch size 64 assumed" in n for n in det.notes)
    assert any("buffers absent from the file computed" in n for n in det.notes)
    assert det.params["window_size"] == CASES[case][3]["window_size"]
    _check(model, ref, _input(case))
    kwargs = dict(CASES[case][3], img_size=64)
    back = getattr(spandrel_arch(*CASES[case][:2]), CASES[case][2])(**kwargs)
    back.load_state_dict(model.state_dict(), strict=True)


def test_hat_file_without_index_buffers(tmp_path):
    ref = _reference("hat_x2")
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("relative_position_index_")}
    model, det = load(_save(sd, tmp_path / "hat.safetensors"))
    assert any("indices absent from the file computed" in n for n in det.notes)
    _check(model, ref, _input("hat_x2"))
    _reference("hat_x2", seed=5).load_state_dict(model.state_dict(), strict=True)


def test_dat_file_without_buffers(tmp_path):
    """Masks, indices and BN counters are recomputed; the offsets give the split size (a file
    without any offsets gets the released (8, 32), as the next case checks)."""
    ref = _reference("dat_x2")
    sd = {k: v for k, v in ref.state_dict().items()
          if not k.endswith(("attn_mask_0", "attn_mask_1", "relative_position_index", "num_batches_tracked"))}
    model, det = load(_save(sd, tmp_path / "dat.safetensors"))
    assert det.params["split_size"] == (2, 4) and det.params["img_size"] == 64
    assert any("buffers absent from the file computed" in n for n in det.notes)
    _check(model, ref, _input("dat_x2"))
    back = spandrel_arch("DAT", "DAT").DAT(**dict(CASES["dat_x2"][3], img_size=64))
    back.load_state_dict(model.state_dict(), strict=True)

    ref = _reference("dat_x4_split_8_32")
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith(("rpe_biases", "relative_position_index"))}
    model, det = load(sd)
    assert det.params["split_size"] == (8, 32) and any("split_size (8, 32) assumed" in n for n in det.notes)
    _check(model, ref, _input("dat_x4_split_8_32"))


def test_swin2sr_window_from_the_coords_table(tmp_path):
    ref = _reference("swin2sr_classical_x2")
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith(("relative_position_index", "attn_mask"))}
    model, det = load(sd)
    assert det.params["window_size"] == 4
    _check(model, ref, _input("swin2sr_classical_x2"))


def test_input_far_below_the_window_is_padded():
    """A 3 x 2 input under a window of 8: the reflection is repeated until the padded size is
    reached; the output has the input's size times the scale."""
    ref = _reference("swinir_real_x2")
    model, _ = load(ref.state_dict())
    with torch.no_grad():
        y = model(torch.rand(1, 3, 3, 2))
    assert y.shape == (1, 3, 6, 4) and torch.isfinite(y).all()


@pytest.mark.parametrize("case", ["swinir_classical_x2", "swin2sr_classical_x2"])
def test_mis_shaped_file_is_refused(case):
    sd = _reference(case).state_dict()
    sd["layers.0.residual_group.blocks.0.mlp.fc1.weight"] = torch.zeros(5, 16)
    with pytest.raises(UnknownCheckpointError, match="do not fit"):
        load(sd)


def test_swin_families_are_told_apart():
    """Each file is explained by its own pattern table only; a Swin2SR file without its
    logit scales is neither (the error names Swin2SR as the closest and the missing key)."""
    from fastsr.models.community import detect

    swinir = _reference("swinir_classical_x2").state_dict()
    swin2sr = _reference("swin2sr_classical_x2").state_dict()
    assert detect(swinir)[0].architecture == "SwinIR"
    assert detect(swin2sr)[0].architecture == "Swin2SR"
    swin2sr = {k: v for k, v in swin2sr.items() if not k.endswith("logit_scale")}
    with pytest.raises(UnknownCheckpointError, match="closest: Swin2SR.*attn.logit_scale"):
        detect(swin2sr)


@pytest.mark.parametrize("kwargs,match", [(dict(upsampler="bilinear"), "upsampler must be one of"),
                                          (dict(resi_connection="2conv"), "resi_connection"),
                                          (dict(scale=5), "2\\^n or 3"),
                                          (dict(upsampler="nearest+conv", scale=3), "2, 4 or 8"),
                                          (dict(depths=[2, 2], num_heads=[2]), "one entry per layer"),
                                          (dict(num_heads=[5, 5]), "divide embed_dim")])
@pytest.mark.parametrize("name", ["SwinIR", "Swin2SR", "HAT"])
def test_bad_constructor_arguments(name, kwargs, match):
    from fastsr.models import create

    args = dict(embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4)
    with pytest.raises(ValueError, match=match):
        create(name, **{**args, **kwargs})


def test_wrong_channel_count_is_a_value_error():
    model, _ = load(_reference("swinir_classical_x2").state_dict())
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\)"):
        model(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("case", ["swinir_real_x2", "dat_light_x3_3conv"])
def test_upscale_command_with_a_swin_checkpoint(case, tmp_path, capsys):
    """``fastsr upscale --checkpoint`` on a reference file (in-process): the PNG is the
    loaded model's output up to 8-bit rounding (the command prepacks the convolutions and
    runs channels-last)."""
    import numpy as np
    from PIL import Image

    from fastsr import cli
    from fastsr.data import read_image

    ckpt = _save(_reference(case).state_dict(), tmp_path / f"{case}.pth")
    lr = np.random.default_rng(0).integers(0, 256, (21, 26, 3), dtype=np.uint8)
    Image.fromarray(lr).save(tmp_path / "lr.png")
    assert cli.main(["upscale", str(tmp_path / "lr.png"), "-o", str(tmp_path / "sr.png"), "--checkpoint", str(ckpt),
                     "--precision", "fp32", "--no-progress"]) == 0
    arch, scale = CASES[case][4], CASES[case][5]["scale"]
    assert f"model: {arch} x{scale}" in capsys.readouterr().out
    got = read_image(tmp_path / "sr.png")
    assert got.shape == (3, 21 * scale, 26 * scale)
    model, _ = load(ckpt)
    with torch.no_grad():
        want = model(read_image(tmp_path / "lr.png")[None]).clamp(0, 1)[0]
    assert (got - want).abs().max().item() <= 0.5 / 255 + 1e-5


def test_fixed_size_export_matches_eager():
    """torch.export at a fixed size (sizes are ints: the eager code paths) gives the eager
    output."""
    model, _ = load(_reference("swinir_classical_x2").state_dict())
    x = _input("swinir_classical_x2")[:1]
    with torch.no_grad():
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), model(x), atol=ATOL, rtol=RTOL)
