"""Community checkpoints: the architecture and its size read from the state-dict keys.

:func:`load` takes a ``.pth`` / ``.pt`` file (read with ``torch.load(weights_only=True)``
only, so a file can never run code), a ``.safetensors`` file, or a state dict, and returns
the fastsr model with the weights loaded (fused layers by default) plus a :class:`Detected`
record. Recognised, by the key patterns below and the tensor shapes:

==================  ===========  =====================================================
architecture        layout       keys (``.weight`` / ``.bias``)
==================  ===========  =====================================================
RRDBNet             esrgan-old   ``model.0``, ``model.1.sub.N.RDBk.convj.0``,
                                 ``model.1.sub.<num_block>`` (trunk), ``model.3/6/8/10``
RRDBNet             esrgan       ``conv_first``, ``RRDB_trunk.N.RDBk.convj``,
                                 ``trunk_conv``, ``upconv1/2``, ``HRconv``, ``conv_last``
RRDBNet             basicsr      ``conv_first``, ``body.N.rdbk.convj``, ``conv_body``,
                                 ``conv_up1/2``, ``conv_hr``, ``conv_last`` (ESRGAN and
                                 Real-ESRGAN x4 / x2 / x1: ``conv_first`` has 3, 12 or 48
                                 input channels, the pixel-unshuffled input)
SRVGGNetCompact     basicsr      ``body.N`` only (convs at even N, PReLU at odd N)
MSRResNet           basicsr      ``conv_first``, ``body.N.conv1/2``, ``upconv1/2``,
                                 ``conv_hr``, ``conv_last``
EDSR                basicsr      ``conv_first``, ``body.N.conv1/2``, ``conv_after_body``,
                                 ``upsample.N``, ``conv_last``
RCAN                basicsr      ``conv_first``, ``body.N.residual_group.M.rcab.K...``,
                                 ``body.N.conv``, ``conv_after_body``, ``upsample.N``,
                                 ``conv_last``
RealCUGAN           real-cugan   ``unet1.convK...``, ``unet2.convK...`` (U-Net blocks ``conv.0/2``,
                                 ``seblock.conv1/2``, ``convK_down/up``, ``conv_bottom``),
                                 ``conv_final`` (x4 and fast x2), ``pro`` (pro releases); x2
                                 / x3 by unet1's 4x4 / 5x5 transposed ``conv_bottom``, fast x2
                                 by unet1 taking 4x the output channels
OmniSR              omni-sr      ``input``, ``residual_layer.N.residual_layer.M.layer.K...`` (OSA
                                 blocks; ``layer.2/8.fn.rel_pos_bias`` gives the window),
                                 ``residual_layer.N.residual_layer.<block_num>`` (conv1x1),
                                 ``residual_layer.N.esa.convK``, ``output``, ``up.0``
                                 (thop's ``total_ops`` / ``total_params`` are dropped)
SAFMN               safmn        ``to_feat``, ``feats.N.norm1/2``, ``feats.N.safm.mfr.K`` /
                                 ``.aggr``, ``feats.N.ccm.ccm.0/2``, ``to_img.0``
any fastsr model    fastsr       a fastsr generator file (safetensors, ``params.`` /
                                 ``params_ema.`` groups, metadata ``format=fastsr``)
RRDBNetOld          esrgan-old   ``model.0``, ``model.1.sub.N.RDBk.convj.0`` (ESRGAN+:
                                 also ``RDBk.conv1x1``), ``model.1.sub.<num_block>``,
                                 ``model.3/6/9/..`` (one per x2 stage), HR and last conv
                                 (x1 / x2 / x8 / x16 tails, and ESRGAN+ at any scale)
RRDBNetOld          esrgan,      the RRDBNet keys above with ``conv_upK`` / ``upconvK``,
                    basicsr      K = 1..n, n != 2 (x1 / x2 / x8 / x16 tails without
                                 pixel-unshuffle), renamed to the ``model.N`` layout
SPAN                span         ``conv_1/conv_2.{sk,conv.0-2,eval_conv}``,
                                 ``block_1..6.c{1,2,3}_r.*``, ``conv_cat``,
                                 ``upsampler.0``, ``no_norm`` (a buffer, when unnormalised)
PLKSR               plksr        ``feats.0``, ``feats.N.channe_mixer.{0,2}`` (sic),
                                 ``feats.N.lk.{conv | convs.M | mn/nm/nn_conv}``,
                                 ``feats.N.attn.f.0``, ``feats.N.refine``, last conv
RealPLKSR           realplksr    ``feats.0``, ``feats.N.{layer_norm, channel_mixer.{0,2},
                                 lk.conv, attn.f.0, refine, norm}``, last conv two places
                                 after the last block; ``to_img.*`` with DySample
SwinIR              reference    ``conv_first``, ``patch_embed.norm``,
                                 ``layers.N.residual_group.blocks.M.{norm1,attn,...}``
                                 (``attn.relative_position_bias_table``),
                                 ``layers.N.conv``, ``norm``, ``conv_after_body``, a
                                 tail: ``conv_before_upsample.0`` + ``upsample.N`` +
                                 ``conv_last`` (pixelshuffle), ``upsample.0``
                                 (pixelshuffledirect), ``conv_up1/2/3`` + ``conv_hr``
                                 (nearest+conv) or ``conv_last`` alone (x1)
Swin2SR             reference    SwinIR's, plus ``attn.logit_scale``,
                                 ``attn.cpb_mlp.0/2``, ``attn.q_bias/v_bias``,
                                 ``patch_embed.proj``, ``layers.N.patch_embed.proj``;
                                 tail also ``conv_bicubic`` / ``conv_aux`` /
                                 ``conv_after_aux.0`` (pixelshuffle_aux)
HAT                 reference    SwinIR's (pixelshuffle tail), plus
                                 ``blocks.M.conv_block.cab.*``,
                                 ``layers.N.residual_group.overlap_attn.*``,
                                 ``relative_position_index_SA/OCA``
DAT                 reference    ``conv_first``, ``before_RG.1``,
                                 ``layers.N.blocks.M.{norm1,attn,ffn,norm2}`` (attn:
                                 ``attns.0/1.pos.*``, ``temperature``, ``dwconv``,
                                 ``channel/spatial_interaction`` with BN statistics),
                                 ``layers.N.conv``, ``norm``, ``conv_after_body``;
                                 pixelshuffle or pixelshuffledirect tail
==================  ===========  =====================================================

Checkpoint wrappers are removed first: ``params_ema`` (preferred), ``params``,
``state_dict``, ``model`` (when it holds a dict) and a ``module.`` prefix (DataParallel);
when the keys match no layout, a first name shared by every key (``netG.``,
``generator.``) is removed and the keys matched again.
The old and ESRGAN-repository layouts are renamed to BasicSR's key names, which are
fastsr's, so :meth:`torch.nn.Module.state_dict` of the loaded model loads back into the
BasicSR / Real-ESRGAN classes unchanged. Real-CUGAN, Omni-SR and SAFMN files keep their
upstream key names, which the fastsr classes use, so they load back into the upstream
classes (as spandrel 0.4.2 ships them) too.

What the keys do not record is assumed as the upstream defaults and listed in
:attr:`Detected.notes`: the SRVGGNetCompact activation when it has no parameters (ReLU or
LeakyReLU), EDSR's residual scaling (0.1 for 256 features, the paper's large EDSR, else
1.0), EDSR / RCAN ``img_range`` 255 and the DIV2K RGB mean, Omni-SR's window size (8) when
the file has no position bias to read it from, and Real-CUGAN's UpCunet2x_fast when unet1
takes 4x the output channels (a UpCunet4x for 12-channel images has the same shapes). Pass
them to :func:`load` as keyword overrides when a file differs.

The convolutional community families keep their upstream key names (only the x4 old
ESRGAN layout is renamed, to RRDBNet): RRDBNetOld (old-architecture ESRGAN x1 / x2 / x8 /
x16 and ESRGAN+), SPAN, PLKSR and RealPLKSR load back into the upstream classes (the
ESRGAN / ESRGAN+ repositories, spandrel, neosr). Assumed for them: nearest x2 stages for a
one-stage old ESRGAN tail (an x3 file has the same keys: ``scale=3``), nESRGAN+'s training
noise 0.1, SPAN's ``img_range`` 255 and DIV2K mean, PLKSR's ``with_idt=False`` and its
SparsePLK dilations 1..n, RealPLKSR's 4 GroupNorm groups.

The Swin families (SwinIR, Swin2SR, HAT, DAT) read scale, embed dim, depths, heads, window
size, MLP ratio, upsampler and residual conv (HAT: also the CAB ratios and the OCAB
overlap; DAT: the split size from its stored offsets) from the shapes; the training patch
size from the stored attention masks (64 when absent). Their deterministic buffers
(``relative_position_index``, ``attn_mask``, Swin2SR's ``relative_coords_table``, HAT's
``relative_position_index_SA/OCA``, DAT's ``rpe_biases`` / ``attn_mask_0/1``) are computed
when a file lacks them, and the loaded model's state dict holds them, as the reference
models' do. Assumed: ``img_range`` 255 for the JPEG-artefact models (window 7, no
upsampler), else 1; HAT's ``conv_scale`` 0.01; when a file has no position buffers,
Swin2SR's window 8 and DAT's split size (8, 32).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from fastsr.errors import CheckpointError
from fastsr.models._utils import build_for_weights, check_state_dict, check_tensor_dict, load_state_dict
from fastsr.models.checkpoint import decode_metadata, generator_from_metadata, model_scale
from fastsr.models.registry import create

__all__ = ["load", "detect", "read_checkpoint", "Detected", "UnknownCheckpointError", "KEY_PATTERNS"]

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)

_SWIN_BLOCKS = r"layers\.\d+\.residual_group\.blocks\.\d+\."
# The reconstruction tails of the Swin families (each file has one of them).
_HAT_OCAB = r"layers\.\d+\.residual_group\.overlap_attn\."
_DAT_BLOCKS = r"layers\.\d+\.blocks\.\d+\."
_DAT_BN = r"(dwconv\.1|channel_interaction\.2|spatial_interaction\.1)"
_SWIN_TAIL = (r"conv_before_upsample\.0", r"upsample\.\d+", r"conv_up[123]", r"conv_hr", r"conv_last")

#: (architecture, layout) -> the key patterns of that layout, without ``.weight``/``.bias``
#: (full matches). A file is of an architecture when every key matches one of its patterns
#: and every pattern matches some key; otherwise the error names the closest one (see
#: :data:`CLOSEST_MIN_SHARE`) or lists the file's top-level key prefixes.
KEY_PATTERNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("RRDBNet", "esrgan-old"): (r"model\.0", r"model\.1\.sub\.\d+\.RDB[123]\.conv[1-5]\.0",
                                r"model\.1\.sub\.\d+", r"model\.(3|6|8|10)"),
    ("RRDBNet", "esrgan"): (r"conv_first", r"RRDB_trunk\.\d+\.RDB[123]\.conv[1-5]", r"trunk_conv",
                            r"upconv1", r"upconv2", r"HRconv", r"conv_last"),
    ("RRDBNet", "basicsr"): (r"conv_first", r"body\.\d+\.rdb[123]\.conv[1-5]", r"conv_body", r"conv_up1", r"conv_up2",
                             r"conv_hr", r"conv_last"),
    ("SRVGGNetCompact", "basicsr"): (r"body\.\d+",),
    ("MSRResNet", "basicsr"): (r"conv_first", r"body\.\d+\.conv[12]", r"upconv1", r"conv_hr", r"conv_last",
                               r"upconv2"),
    ("EDSR", "basicsr"): (r"conv_first", r"body\.\d+\.conv[12]", r"conv_after_body", r"upsample\.\d+",
                          r"conv_last"),
    ("RCAN", "basicsr"): (r"conv_first", r"body\.\d+\.residual_group\.\d+\.rcab\.\d+(\.attention\.\d+)?",
                          r"body\.\d+\.conv", r"conv_after_body", r"upsample\.\d+", r"conv_last"),
    # -- convolutional community families (fastsr/models/esrgan.py, span.py, plksr.py)
    ("RRDBNetOld", "esrgan-old"): (r"model\.0", r"model\.1\.sub\.\d+\.RDB[123]\.conv[1-5]\.0",
                                   r"model\.1\.sub\.\d+", r"model\.([2-9]|\d\d+)",
                                   r"model\.1\.sub\.\d+\.RDB[123]\.conv1x1"),
    ("RRDBNetOld", "esrgan"): (r"conv_first", r"RRDB_trunk\.\d+\.RDB[123]\.conv[1-5]", r"trunk_conv",
                               r"upconv\d", r"HRconv", r"conv_last"),
    ("RRDBNetOld", "basicsr"): (r"conv_first", r"body\.\d+\.rdb[123]\.conv[1-5]", r"conv_body", r"conv_up\d",
                                r"conv_hr", r"conv_last"),
    ("SPAN", "span"): (r"conv_1\.(sk|eval_conv|conv\.[012])", r"block_[1-6]\.c[123]_r\.(sk|eval_conv|conv\.[012])",
                       r"conv_cat", r"conv_2\.(sk|eval_conv|conv\.[012])", r"upsampler\.0", r"no_norm"),
    ("PLKSR", "plksr"): (r"feats\.\d+", r"feats\.\d+\.channe_mixer\.[02]",
                         r"feats\.\d+\.lk\.(conv|convs\.\d+|mn_conv|nm_conv|nn_conv)", r"feats\.\d+\.refine",
                         r"feats\.\d+\.attn\.f\.0"),
    ("RealPLKSR", "realplksr"): (r"feats\.\d+", r"feats\.\d+\.channel_mixer\.[02]", r"feats\.\d+\.lk\.conv",
                                 r"feats\.\d+\.refine", r"feats\.\d+\.(norm|layer_norm)",
                                 r"feats\.\d+\.attn\.f\.0", r"to_img\.(offset|scope|end_conv)", r"to_img\.init_pos"),
    # -- Real-CUGAN, Omni-SR, SAFMN (fastsr/models/realcugan.py, omnisr.py, safmn.py)
    ("RealCUGAN", "real-cugan"): (
        r"unet1\.(conv[12]\.conv\.[02]|conv2\.seblock\.conv[12]|conv1_down|conv2_up|conv3|conv_bottom)",
        r"unet2\.(conv[1-4]\.conv\.[02]|conv[2-4]\.seblock\.conv[12]|conv[12]_down|conv[34]_up|conv5|conv_bottom)",
        r"conv_final", r"pro"),
    ("OmniSR", "omni-sr"): (
        r"input", r"output", r"up\.0",
        r"residual_layer\.\d+\.residual_layer\.\d+\.layer\.0\.fn\.([025]|4\.gate\.[13])",
        r"residual_layer\.\d+\.residual_layer\.\d+\.layer\.[28]\.(norm|fn\.to_qkv|fn\.to_out\.0|fn\.rel_pos_bias)",
        r"residual_layer\.\d+\.residual_layer\.\d+\.layer\.(4|6|10|12)\.(norm|fn\.project_(in|out)|fn\.dwconv)",
        r"residual_layer\.\d+\.residual_layer\.\d+\.layer\.(5|11)\.(norm|fn\.temperature|fn\.qkv(_dwconv)?|fn\.project_out)",
        r"residual_layer\.\d+\.residual_layer\.\d+", r"residual_layer\.\d+\.esa\.conv(1|_f|2|3|4)",
        r"(.+\.)?total_(ops|params)"),
    ("SAFMN", "safmn"): (r"to_feat", r"feats\.\d+\.norm[12]", r"feats\.\d+\.safm\.(mfr\.[0-3]|aggr)",
                         r"feats\.\d+\.ccm\.ccm\.[02]", r"to_img\.0"),
    # Swin-Transformer families: the reference implementations' keys; the buffers
    # (relative_position_index, attn_mask) are optional, computed when a file lacks them.
    ("SwinIR", "reference"): (r"conv_first", _SWIN_BLOCKS + r"(norm[12]|mlp\.fc[12]|attn\.(qkv|proj))",
                              _SWIN_BLOCKS + r"attn\.relative_position_bias_table", r"layers\.\d+\.conv(\.[024])?",
                              r"norm", r"conv_after_body(\.[024])?", *_SWIN_TAIL, _SWIN_BLOCKS + r"attn_mask",
                              _SWIN_BLOCKS + r"attn\.relative_position_index", r"patch_embed\.norm"),
    ("Swin2SR", "reference"): (r"conv_first", r"patch_embed\.proj",
                               _SWIN_BLOCKS + r"(norm[12]|mlp\.fc[12]|attn\.(qkv|proj|cpb_mlp\.[02]))",
                               _SWIN_BLOCKS + r"attn\.logit_scale", r"layers\.\d+\.conv(\.[024])?",
                               r"layers\.\d+\.patch_embed\.proj", r"norm", r"conv_after_body(\.[024])?", *_SWIN_TAIL,
                               r"conv_bicubic", r"conv_aux", r"conv_after_aux\.0", _SWIN_BLOCKS + r"attn\.[qv]_bias",
                               _SWIN_BLOCKS + r"attn_mask", _SWIN_BLOCKS + r"attn\.relative_position_index",
                               _SWIN_BLOCKS + r"attn\.relative_coords_table", r"patch_embed\.norm"),
    ("HAT", "reference"): (r"conv_first", _SWIN_BLOCKS + r"(norm[12]|mlp\.fc[12]|attn\.(qkv|proj))",
                           _SWIN_BLOCKS + r"attn\.relative_position_bias_table",
                           _SWIN_BLOCKS + r"conv_block\.cab\.(0|2|3\.attention\.[13])",
                           _HAT_OCAB + r"(norm[12]|qkv|proj|mlp\.fc[12])", _HAT_OCAB + r"relative_position_bias_table",
                           r"norm", *_SWIN_TAIL, r"layers\.\d+\.conv", r"conv_after_body",
                           r"relative_position_index_(SA|OCA)", r"patch_embed\.norm"),
    ("DAT", "reference"): (r"conv_first", r"before_RG\.1",
                           _DAT_BLOCKS + r"(norm[12]|ffn\.(fc[12]|sg\.(norm|conv))|attn\.(qkv|proj))",
                           _DAT_BLOCKS + r"attn\.(dwconv\.[01]|channel_interaction\.[124]|spatial_interaction\.[013])",
                           _DAT_BLOCKS + r"attn\." + _DAT_BN + r"\.running_(mean|var)",
                           _DAT_BLOCKS + r"attn\.attns\.[01]\.pos\.(pos_proj|pos[123]\.[02])",
                           r"layers\.\d+\.conv(\.[024])?", r"norm", r"conv_after_body(\.[024])?", *_SWIN_TAIL,
                           _DAT_BLOCKS + r"attn\.temperature", _DAT_BLOCKS + r"attn\." + _DAT_BN + r"\.num_batches_tracked",
                           _DAT_BLOCKS + r"attn\.attns\.[01]\.(rpe_biases|relative_position_index)",
                           _DAT_BLOCKS + r"attn\.attn_mask_[01]"),
}
# Patterns a file may lack and still be of the architecture (MSRResNet x2 / x3 has no upconv2).
_OPTIONAL = {("MSRResNet", "basicsr"): {r"upconv2"},
             ("RRDBNetOld", "esrgan-old"): {r"model\.1\.sub\.\d+\.RDB[123]\.conv1x1"},
             ("RRDBNetOld", "esrgan"): {r"upconv\d"}, ("RRDBNetOld", "basicsr"): {r"conv_up\d"},
             ("SPAN", "span"): {r"no_norm"},
             ("PLKSR", "plksr"): {r"feats\.\d+\.attn\.f\.0"},
             ("RealPLKSR", "realplksr"): {r"feats\.\d+\.attn\.f\.0", r"to_img\.(offset|scope|end_conv)",
                                          r"to_img\.init_pos"},
             ("RealCUGAN", "real-cugan"): {r"conv_final", r"pro"},
             ("OmniSR", "omni-sr"): {r"(.+\.)?total_(ops|params)"}}
_OPTIONAL[("SwinIR", "reference")] = {*_SWIN_TAIL, _SWIN_BLOCKS + r"attn_mask", _SWIN_BLOCKS + r"attn\.relative_position_index",
                                      r"patch_embed\.norm"}
_OPTIONAL[("Swin2SR", "reference")] = {*_SWIN_TAIL, r"conv_bicubic", r"conv_aux", r"conv_after_aux\.0",
                                       *(_SWIN_BLOCKS + p for p in (r"attn\.[qv]_bias", r"attn_mask",
                                                                    r"attn\.relative_position_index",
                                                                    r"attn\.relative_coords_table")),
                                       r"patch_embed\.norm"}
_OPTIONAL[("DAT", "reference")] = {*_SWIN_TAIL, _DAT_BLOCKS + r"attn\.temperature",
                                   _DAT_BLOCKS + r"attn\." + _DAT_BN + r"\.num_batches_tracked",
                                   _DAT_BLOCKS + r"attn\.attns\.[01]\.(rpe_biases|relative_position_index)",
                                   _DAT_BLOCKS + r"attn\.attn_mask_[01]"}
_OPTIONAL[("HAT", "reference")] = {*_SWIN_TAIL, r"layers\.\d+\.conv", r"conv_after_body", r"relative_position_index_(SA|OCA)",
                                   r"patch_embed\.norm"}


class UnknownCheckpointError(CheckpointError):
    """A state dict that no supported architecture explains, or whose shapes do not fit the
    detected one. The message names the closest architecture and the keys that did not match
    when that architecture explains a meaningful share of the file (:data:`CLOSEST_MIN_SHARE`),
    else says that no family matched and lists the file's top-level key prefixes with counts."""


@dataclass(frozen=True)
class Detected:
    """What :func:`load` / :func:`detect` read from a checkpoint.

    Attributes:
        architecture: fastsr model name (``fastsr.models.create`` accepts it).
        scale: upscaling factor of the model.
        params: constructor keyword arguments (without ``fused``), e.g. ``num_block``,
            ``num_feat``, ``num_grow_ch`` for RRDBNet, ``num_conv`` / ``act_type`` for
            SRVGGNetCompact.
        layout: the key layout: ``"esrgan-old"``, ``"esrgan"``, ``"basicsr"``, ``"fastsr"``,
            the family's own (``"span"``, ``"plksr"``, ``"realplksr"``, ``"real-cugan"``,
            ``"omni-sr"``, ``"safmn"``), or ``"reference"`` (the Swin families' reference
            implementations).
        wrapper: where the state dict sat in the file (``"params_ema"``, ``"params"``,
            ``"state_dict"``, ``"model"`` or ``""`` for a bare state dict), plus
            ``"+module."`` when a DataParallel prefix was removed.
        source: the file name, or ``"<state dict>"``.
        notes: assumptions about what the keys do not record.
    """

    architecture: str
    scale: int
    params: dict
    layout: str
    wrapper: str = ""
    source: str = "<state dict>"
    notes: tuple = field(default_factory=tuple)

    def __str__(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "scale")
        s = f"{self.architecture} x{self.scale} ({p}; {self.layout} keys"
        s += f" in {self.wrapper})" if self.wrapper else ")"
        return s + "".join(f"; {n}" for n in self.notes)


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """The raw contents of a checkpoint file: ``(mapping, metadata)``.

    ``.safetensors`` files give their flat tensor dict and string metadata; ``.pth`` /
    ``.pt`` / ``.ckpt`` / ``.bin`` files give what ``torch.load(weights_only=True)`` returns
    (a state dict or a checkpoint dict around one) and empty metadata.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another suffix, or a file that cannot be read (a ``.pth`` that pickles
            objects other than tensors and containers is refused, not executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path} as safetensors: {_first_line(e)}") from None
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for non-tensor objects, RuntimeError for corrupt zips
            raise CheckpointError(f"cannot read {path} with torch.load(weights_only=True) (fastsr never unpickles "
                             f"arbitrary objects): {_first_line(e)}") from None
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
        return dict(obj), {}
    raise CheckpointError(f"checkpoint {path}: unsupported suffix {path.suffix!r}; expected one of "
                     f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}")


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _unwrap(obj: Mapping) -> tuple[dict, str]:
    """The tensors of a checkpoint and where they were: fastsr's flat ``params_ema.`` /
    ``params.`` groups, BasicSR's ``{'params_ema': sd}``, ``state_dict``, ``model``,
    and the ``module.`` prefix removed."""
    keys = list(obj)
    if keys and all(isinstance(k, str) and "." in k and k.split(".", 1)[0] in ("params", "params_ema")
                    for k in keys):
        group = "params_ema" if any(k.startswith("params_ema.") for k in keys) else "params"
        sd = {k[len(group) + 1:]: v for k, v in obj.items() if k.startswith(group + ".")}
        path = [group]
    else:
        sd, path = obj, []
        for _ in range(2):  # also {'state_dict': {'params_ema': sd}}
            for k in ("params_ema", "params", "state_dict", "model"):
                if isinstance(sd.get(k), Mapping):
                    sd = sd[k]
                    path.append(k)
                    break
            else:
                break
    wrapper = ".".join(path)
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        wrapper += "+module." if wrapper else "module."
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return tensors, wrapper


# ---------------------------------------------------------------------------- matching
def _strip(key: str) -> str:
    """The key less ``.weight`` / ``.bias``; other keys (buffers such as
    ``relative_position_index`` or Real-CUGAN's ``pro`` marker, bare parameters such as
    ``relative_position_bias_table`` or an attention temperature) whole."""
    for suffix in (".weight", ".bias"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def _match(keys, arch_layout) -> tuple[list[str], list[str]]:
    """(file keys no pattern explains, patterns no key matches)."""
    patterns = KEY_PATTERNS[arch_layout]
    compiled = [re.compile(p) for p in patterns]
    unmatched, used = [], set()
    for k in keys:
        stem = _strip(k)  # a buffer or parameter of another name (SPAN's ``no_norm``) whole
        hit = [i for i, c in enumerate(compiled) if c.fullmatch(stem)]
        if hit:
            used.update(hit)
        else:
            unmatched.append(k)
    optional = _OPTIONAL.get(arch_layout, set())
    missing = [p for i, p in enumerate(patterns) if i not in used and p not in optional]
    return unmatched, missing


def _readable(pattern: str) -> str:
    return pattern.replace(r"\d+", "N").replace("\\", "") + ".*"


#: The closest family is named in an error only when it explains at least this share of
#: the file's keys and its patterns match at least this share of (required) patterns;
#: otherwise the error lists the file's top-level key prefixes instead.
CLOSEST_MIN_SHARE = 0.5


def _prefixes(keys, limit: int = 12) -> str:
    """``"body (40), conv_first (2), ..."``: first dotted components by count, most first."""
    counts: dict[str, int] = {}
    for k in keys:
        top = k.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{name} ({n})" for name, n in ranked[:limit])
    return shown + (f" and {len(ranked) - limit} more" if len(ranked) > limit else "")


def _classify(sd: Mapping) -> tuple[str, str]:
    keys = sorted(sd)
    scores = []
    for arch_layout in KEY_PATTERNS:
        unmatched, missing = _match(keys, arch_layout)
        if not unmatched and not missing:
            return arch_layout
        explained = 1 - len(unmatched) / max(len(keys), 1)
        covered = 1 - len(missing) / len(KEY_PATTERNS[arch_layout])
        scores.append((explained + covered, arch_layout, unmatched, missing))
    _, (arch, layout), unmatched, missing = max(scores, key=lambda s: s[0])
    explained = 1 - len(unmatched) / max(len(keys), 1)
    covered = 1 - len(missing) / len(KEY_PATTERNS[arch, layout])
    if explained < CLOSEST_MIN_SHARE or covered < CLOSEST_MIN_SHARE:
        raise UnknownCheckpointError(f"unknown architecture ({len(keys)} tensors): no supported family matches "
                                     f"its keys; top-level key prefixes: {_prefixes(keys)}; supported: "
                                     f"{', '.join(dict.fromkeys(a for a, _ in KEY_PATTERNS))}")
    show = ", ".join(unmatched[:8]) + (f" and {len(unmatched) - 8} more" if len(unmatched) > 8 else "")
    parts = [f"unknown architecture ({len(keys)} tensors); closest: {arch} ({layout} keys)"]
    if unmatched:
        parts.append(f"keys that do not match it ({len(unmatched)}): {show}")
    if missing:
        parts.append(f"expected keys not found: {', '.join(_readable(p) for p in missing)}")
    raise UnknownCheckpointError("; ".join(parts))


# ---------------------------------------------------------------------------- architectures
def _w(sd, name) -> torch.Tensor:
    return sd[f"{name}.weight"]


def _count(sd, pattern: str) -> int:
    """Number of distinct indices N in keys matching ``pattern`` (a regex with one group)."""
    c = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [c.match(k)] if m})


def _bad(arch: str, msg: str):
    raise UnknownCheckpointError(f"{arch}: {msg}")


def _rrdb_from_esrgan_old(sd: Mapping) -> dict:
    out, top, trunk = {}, {}, {}
    for k, v in sd.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)", k)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            continue
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.(weight|bias)", k)
        if m:
            trunk.setdefault(int(m[1]), {})[m[2]] = v
            continue
        m = re.fullmatch(r"model\.(\d+)\.(weight|bias)", k)
        top.setdefault(int(m[1]), {})[m[2]] = v
    num_block = _count(out, r"body\.(\d+)\.")
    if list(trunk) != [num_block]:
        _bad("RRDBNet (esrgan-old keys)", f"the trunk conv must be model.1.sub.{num_block} after {num_block} "
             f"blocks, found model.1.sub.{sorted(trunk)}")
    convs = sorted(top)
    ups = convs[1:-2]
    if len(ups) != 2:
        _bad("RRDBNet (esrgan-old keys)", f"{len(ups)} upsampling stage(s) at model.{ups} between model.0 and "
             f"model.{convs[-2:]}: an x4 tail has them at model.3 and model.6 (the x1 / x2 / x8 tails, "
             "upsampling convs at model.3, 6, 9, ..., load as RRDBNetOld)")
    names = {convs[0]: "conv_first", ups[0]: "conv_up1", ups[1]: "conv_up2", convs[-2]: "conv_hr",
             convs[-1]: "conv_last"}
    for idx, name in names.items():
        for kind, v in top[idx].items():
            out[f"{name}.{kind}"] = v
    for kind, v in trunk[num_block].items():
        out[f"conv_body.{kind}"] = v
    return out


_ESRGAN_RENAMES = (
    (r"RRDB_trunk\.(\d+)\.RDB([123])\.", r"body.\1.rdb\2."),
    (r"trunk_conv\.", "conv_body."),
    (r"upconv([12])\.", r"conv_up\1."),
    (r"HRconv\.", "conv_hr."),
)


def _rrdb_from_esrgan(sd: Mapping) -> dict:
    out = {}
    for k, v in sd.items():
        for pat, rep in _ESRGAN_RENAMES:
            k = re.sub("^" + pat, rep, k)
        out[k] = v
    return out


def _rrdbnet(sd: Mapping, notes: list) -> dict:
    first, last = _w(sd, "conv_first"), _w(sd, "conv_last")
    num_out_ch, cin = last.shape[0], first.shape[1]
    ratio = cin // num_out_ch if cin % num_out_ch == 0 else 0
    scale = {1: 4, 4: 2, 16: 1}.get(ratio)
    if scale is None:
        _bad("RRDBNet", f"conv_first has {cin} input channels for {num_out_ch} output channels; expected "
             "1x (x4), 4x (x2, pixel-unshuffle 2) or 16x (x1, pixel-unshuffle 4)")
    if scale != 4:
        notes.append(f"pixel-unshuffle {4 // scale} on the input (Real-ESRGAN x{scale})")
    return dict(scale=scale, num_in_ch=num_out_ch, num_out_ch=num_out_ch, num_feat=first.shape[0],
                num_block=_count(sd, r"body\.(\d+)\."), num_grow_ch=_w(sd, "body.0.rdb1.conv1").shape[0])


def _srvgg(sd: Mapping, notes: list) -> dict:
    idx = {}
    for k, v in sd.items():
        i, kind = k.split(".")[1:]
        idx.setdefault(int(i), {})[kind] = v
    convs = sorted(i for i, d in idx.items() if d.get("weight") is not None and d["weight"].dim() == 4)
    acts = sorted(i for i in idx if i not in convs)
    n = len(convs)
    if n < 2 or convs != list(range(0, 2 * n, 2)):
        _bad("SRVGGNetCompact", f"convolutions expected at body.0, body.2, ..., found at body.{convs}")
    if acts and acts != list(range(1, 2 * n - 2, 2)):
        _bad("SRVGGNetCompact", f"PReLU slopes expected at body.1, body.3, ..., body.{2 * n - 3}, found at "
             f"body.{acts}")
    first, last = idx[0]["weight"], idx[convs[-1]]["weight"]
    num_in_ch, num_feat = first.shape[1], first.shape[0]
    scale = math.isqrt(last.shape[0] // num_in_ch)
    if scale * scale * num_in_ch != last.shape[0]:
        _bad("SRVGGNetCompact", f"the last conv has {last.shape[0]} outputs, not {num_in_ch} * scale^2")
    if acts:
        act_type = "prelu"
    else:
        act_type = "relu"
        notes.append("activation not stored in the file: ReLU assumed (pass act_type='leakyrelu' if the "
                     "model was trained with LeakyReLU(0.1))")
    return dict(scale=scale, num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat, num_conv=n - 2,
                act_type=act_type)


def _msrresnet(sd: Mapping, notes: list) -> dict:
    num_feat = _w(sd, "conv_first").shape[0]
    r2 = _w(sd, "upconv1").shape[0] // num_feat
    if "upconv2.weight" in sd:
        scale = 4 if r2 == 4 else 0
    else:
        scale = {4: 2, 9: 3}.get(r2, 0)
    if not scale:
        _bad("MSRResNet", f"upconv1 has {_w(sd, 'upconv1').shape[0]} outputs for {num_feat} features "
             f"({'with' if 'upconv2.weight' in sd else 'without'} upconv2): not a x2, x3 or x4 model")
    return dict(scale=scale, num_in_ch=_w(sd, "conv_first").shape[1], num_out_ch=_w(sd, "conv_last").shape[0],
                num_feat=num_feat, num_block=_count(sd, r"body\.(\d+)\."))


def _pixel_shuffle_scale(arch: str, sd: Mapping, num_feat: int) -> int:
    stages = sorted(int(k.split(".")[1]) for k in sd if re.fullmatch(r"upsample\.\d+\.weight", k))
    ratios = [_w(sd, f"upsample.{i}").shape[0] // num_feat for i in stages]
    if ratios == [9]:
        return 3
    if ratios and all(r == 4 for r in ratios):
        return 2 ** len(ratios)
    _bad(arch, f"upsample convs have {[r * num_feat for r in ratios]} outputs for {num_feat} features: "
         "expected [4C] * n (x2^n) or [9C] (x3)")


def _edsr(sd: Mapping, notes: list) -> dict:
    num_feat = _w(sd, "conv_first").shape[0]
    res_scale = 0.1 if num_feat == 256 else 1.0
    notes.append(f"res_scale={res_scale} assumed ({'EDSR large' if num_feat == 256 else 'EDSR baseline'})")
    notes.append("img_range 255 and the DIV2K mean assumed (BasicSR defaults)")
    return dict(scale=_pixel_shuffle_scale("EDSR", sd, num_feat), num_feat=num_feat,
                num_block=_count(sd, r"body\.(\d+)\."), res_scale=res_scale,
                in_channels=_w(sd, "conv_first").shape[1], out_channels=_w(sd, "conv_last").shape[0])


def _rcan(sd: Mapping, notes: list) -> dict:
    num_feat = _w(sd, "conv_first").shape[0]
    squeeze = _w(sd, "body.0.residual_group.0.rcab.3.attention.1").shape[0]
    notes.append("res_scale=1.0 assumed")
    notes.append("img_range 255 and the DIV2K mean assumed (BasicSR defaults)")
    return dict(scale=_pixel_shuffle_scale("RCAN", sd, num_feat), num_feat=num_feat,
                num_group=_count(sd, r"body\.(\d+)\."),
                num_block=_count(sd, r"body\.0\.residual_group\.(\d+)\."),
                squeeze_factor=num_feat // squeeze, in_channels=_w(sd, "conv_first").shape[1],
                out_channels=_w(sd, "conv_last").shape[0])


def _rrdb_to_old(sd: Mapping) -> dict:
    """ESRGAN-repository / BasicSR RRDBNet keys with a tail other than x4 (``conv_upK`` /
    ``upconvK``, K = 1..n) -> the old ``model.N`` layout of :class:`RRDBNetOld`."""
    sd = _rrdb_from_esrgan({re.sub(r"^upconv(\d+)\.", r"conv_up\1.", k): v for k, v in sd.items()})
    n = _count(sd, r"conv_up(\d+)\.")
    num_block = _count(sd, r"body\.(\d+)\.")
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}", "conv_hr": f"model.{3 * n + 2}",
             "conv_last": f"model.{3 * n + 4}", **{f"conv_up{k}": f"model.{3 * k}" for k in range(1, n + 1)}}
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)", k)
        name, kind = k.rsplit(".", 1)
        if m:
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
        elif name in names:
            out[f"{names[name]}.{kind}"] = v
        else:
            _bad("RRDBNetOld", f"{k}: the upsampling convs must be numbered 1..{n}")
    return out


def _rrdbnet_old(sd: Mapping, notes: list) -> dict:
    arch = "RRDBNetOld (esrgan-old keys)"
    top = sorted({int(m[1]) for k in sd for m in [re.fullmatch(r"model\.(\d+)\.weight", k)] if m})
    num_block = _count(sd, r"model\.1\.sub\.(\d+)\.RDB")
    if f"model.1.sub.{num_block}.weight" not in sd:
        _bad(arch, f"the trunk conv must be model.1.sub.{num_block} after {num_block} blocks")
    n = (len(top) - 3) if len(top) >= 3 else -1
    want = [0] + [3 + 3 * s for s in range(n)] + [2 + 3 * n, 4 + 3 * n]
    if n < 0 or top != want or 2 ** n > 16:
        _bad(arch, f"convolutions at model.{top}: expected model.0, model.3, 6, ... (one per x2 stage, at most "
             "4), then the HR conv and the last conv two and four places after the last stage")
    first, last = _w(sd, "model.0"), _w(sd, f"model.{top[-1]}")
    if first.shape[1] in (4 * last.shape[0], 16 * last.shape[0]):
        _bad(arch, f"model.0 takes {first.shape[1]} channels for {last.shape[0]} output channels, a "
             "pixel-unshuffled input, which fastsr supports only with the x4 tail (as RRDBNet)")
    plus = any(".conv1x1." in k for k in sd)
    if n == 1:
        notes.append("nearest x2 upsampling assumed (an x3 model has the same keys: pass scale=3)")
    if plus:
        notes.append("ESRGAN+ residual paths (conv1x1); nESRGAN+ noise_sigma=0.1 assumed for training "
                     "(inference is noise-free)")
    return dict(scale=2 ** n, num_in_ch=first.shape[1], num_out_ch=last.shape[0], num_feat=first.shape[0],
                num_block=num_block, num_grow_ch=_w(sd, "model.1.sub.0.RDB1.conv1.0").shape[0], plus=plus,
                noise_sigma=0.1 if plus else 0.0)


def _pixel_shuffle_out(arch: str, channels: int, num_in_ch: int) -> tuple[int, int]:
    """``(scale, out_channels)`` of a conv feeding PixelShuffle with ``channels`` outputs:
    out_channels = num_in_ch if that divides into a square, else 3, else 1."""
    for out in dict.fromkeys((num_in_ch, 3, 1)):
        scale = math.isqrt(channels // out)
        if channels % out == 0 and scale * scale * out == channels:
            return scale, out
    _bad(arch, f"the upsampling conv has {channels} outputs: not out_channels * scale^2 for {num_in_ch}, 3 or 1 "
         "output channels")


def _span(sd: Mapping, notes: list) -> dict:
    sk = _w(sd, "conv_1.sk")
    blocks = _count(sd, r"block_(\d+)\.")
    if blocks != 6:
        _bad("SPAN", f"{blocks} blocks (block_N keys); SPAN has 6")
    scale, out = _pixel_shuffle_out("SPAN", _w(sd, "upsampler.0").shape[0], sk.shape[1])
    norm = "no_norm" not in sd
    if norm:
        notes.append("img_range 255 and the DIV2K mean assumed (upstream defaults)")
    return dict(scale=scale, num_in_ch=sk.shape[1], num_out_ch=out, num_feat=sk.shape[0], norm=norm)


def _plksr_common(arch: str, sd: Mapping, last_offset: int) -> dict:
    """dim, n_blocks, scale of a PLKSR / RealPLKSR ``feats`` sequence whose last conv sits
    ``last_offset`` places after the last block."""
    dim = _w(sd, "feats.0").shape[0]
    n_blocks = _count(sd, r"feats\.(\d+)\.refine\.")
    if _count(sd, r"feats\.(\d+)\.") != n_blocks + 2 or f"feats.{n_blocks + last_offset}.weight" not in sd:
        _bad(arch, f"{n_blocks} blocks: expected them at feats.1..{n_blocks} and the last conv at "
             f"feats.{n_blocks + last_offset}")
    out = _w(sd, f"feats.{n_blocks + last_offset}").shape[0]
    scale = math.isqrt(out // 3)
    if out % 3 or scale * scale * 3 != out:
        _bad(arch, f"the last conv has {out} outputs, not 3 * scale^2")
    return dict(scale=scale, dim=dim, n_blocks=n_blocks)


def _lk_options(sd: Mapping, dim: int, notes: list) -> dict:
    if "feats.1.lk.conv.weight" in sd:
        w = _w(sd, "feats.1.lk.conv")
        notes.append("with_idt=False assumed (not in the keys)")
        return dict(lk_type="PLK", kernel_size=w.shape[2], split_ratio=w.shape[0] / dim)
    if "feats.1.lk.mn_conv.weight" in sd:
        w = _w(sd, "feats.1.lk.mn_conv")
        return dict(lk_type="RectSparsePLK", kernel_size=w.shape[2], split_ratio=w.shape[0] / dim)
    ws = [_w(sd, f"feats.1.lk.convs.{i}") for i in range(_count(sd, r"feats\.1\.lk\.convs\.(\d+)\."))]
    notes.append(f"SparsePLK: dilations 1..{len(ws)}, no max kernel and with_idt=False assumed (not in the keys)")
    return dict(lk_type="SparsePLK", split_ratio=ws[0].shape[0] / dim, sparse_kernels=[w.shape[2] for w in ws],
                sparse_dilations=list(range(1, len(ws) + 1)))


def _plksr(sd: Mapping, notes: list) -> dict:
    params = _plksr_common("PLKSR", sd, 1)
    k1, k2 = _w(sd, "feats.1.channe_mixer.0").shape[2], _w(sd, "feats.1.channe_mixer.2").shape[2]
    ccm = {(3, 1): "CCM", (1, 3): "ICCM", (3, 3): "DCCM"}.get((k1, k2))
    if ccm is None:
        _bad("PLKSR", f"channel mixer kernels {k1}x{k1}, {k2}x{k2}: not CCM (3, 1), ICCM (1, 3) or DCCM (3, 3)")
    return dict(params, ccm_type=ccm, **_lk_options(sd, params["dim"], notes),
                use_ea="feats.1.attn.f.0.weight" in sd)


def _realplksr(sd: Mapping, notes: list) -> dict:
    params = _plksr_common("RealPLKSR", sd, 2)
    w = _w(sd, "feats.1.lk.conv")
    layer_norm = "feats.1.layer_norm.weight" in sd
    dysample = "to_img.init_pos" in sd
    if not layer_norm:
        notes.append("norm_groups=4 assumed (GroupNorm; not in the keys)")
    if dysample:
        s = params["scale"]
        groups = _w(sd, "to_img.offset").shape[0] // (2 * s * s)
        if groups != (3 if s % 2 else 4):
            _bad("RealPLKSR", f"DySample with {groups} groups at x{s}; the upstream class has {3 if s % 2 else 4}")
    return dict(params, kernel_size=w.shape[2], split_ratio=w.shape[0] / params["dim"],
                use_ea="feats.1.attn.f.0.weight" in sd, layer_norm=layer_norm, dysample=dysample)


def _realcugan(sd: Mapping, notes: list) -> dict:
    in_ch = _w(sd, "unet1.conv1.conv.0").shape[1]
    if "conv_final.weight" in sd:
        out_ch = _w(sd, "conv_final").shape[0] // 4
        if in_ch == 4 * out_ch:  # the pixel-unshuffled input of UpCunet2x_fast
            notes.append(f"UpCunet2x_fast assumed (unet1 takes 4 x {out_ch} channels; a UpCunet4x for "
                         f"{in_ch}-channel images has the same shapes)")
            return dict(scale=2, in_channels=out_ch, out_channels=out_ch, pro="pro" in sd, fast=True)
        scale = 4
    else:
        kernel = _w(sd, "unet1.conv_bottom").shape[-1]  # unet1's last transposed conv: 4x4 s2 or 5x5 s3
        scale = {4: 2, 5: 3}.get(kernel)
        if scale is None:
            _bad("RealCUGAN", f"unet1.conv_bottom is a {kernel}x{kernel} transposed convolution; expected 4x4 "
                 "(UpCunet2x) or 5x5 (UpCunet3x), or conv_final (UpCunet4x)")
        out_ch = _w(sd, "unet2.conv_bottom").shape[0]
    return dict(scale=scale, in_channels=in_ch, out_channels=out_ch, pro="pro" in sd, fast=False)


def _omnisr(sd: Mapping, notes: list) -> dict:
    first = _w(sd, "input")
    num_feat, num_in_ch = first.shape[:2]
    up = _w(sd, "up.0").shape[0]
    scale = math.isqrt(up // num_in_ch)
    if scale * scale * num_in_ch != up:
        _bad("OmniSR", f"up.0 has {up} outputs, not {num_in_ch} * scale^2 (output channels = input channels)")
    block_num = _count(sd, r"residual_layer\.0\.residual_layer\.(\d+)\.layer\.")
    if f"residual_layer.0.residual_layer.{block_num}.weight" not in sd:
        _bad("OmniSR", f"the group's conv1x1 must follow its {block_num} block(s) at residual_layer.0.residual_layer."
             f"{block_num}")
    pos = sd.get("residual_layer.0.residual_layer.0.layer.2.fn.rel_pos_bias.weight")
    if pos is None:
        window_size = 8
        notes.append("window_size=8 assumed (no position bias in the file to read it from)")
    else:
        window_size = (math.isqrt(pos.shape[0]) + 1) // 2
        if (2 * window_size - 1) ** 2 != pos.shape[0]:
            _bad("OmniSR", f"rel_pos_bias has {pos.shape[0]} rows, not (2 * window_size - 1)^2")
    return dict(scale=scale, num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat, block_num=block_num,
                pe=pos is not None, window_size=window_size, res_num=_count(sd, r"residual_layer\.(\d+)\.esa\."),
                bias="input.bias" in sd)


def _safmn(sd: Mapping, notes: list) -> dict:
    first, last = _w(sd, "to_feat"), _w(sd, "to_img.0")
    dim = first.shape[0]
    scale = math.isqrt(last.shape[0] // 3)
    if first.shape[1] != 3 or scale * scale * 3 != last.shape[0]:
        _bad("SAFMN", f"to_feat takes {first.shape[1]} channels and to_img.0 gives {last.shape[0]}: expected 3 and "
             "3 * scale^2 (SAFMN is RGB only)")
    return dict(scale=scale, dim=dim, n_blocks=_count(sd, r"feats\.(\d+)\."),
                ffn_scale=_w(sd, "feats.0.ccm.ccm.0").shape[0] / dim)


def _without_profiler_counters(sd: Mapping) -> dict:
    """The state dict less the ``total_ops`` / ``total_params`` buffers that the thop
    profiler leaves in some released Omni-SR files."""
    return {k: v for k, v in sd.items() if not re.fullmatch(r"(.+\.)?total_(ops|params)", k)}


# ---------------------------------------------------------------------------- Swin families
def _swin_tail(arch: str, sd: Mapping, embed_dim: int, in_chans: int) -> tuple[str, int, int]:
    """(upsampler, scale, num_feat) from the tail keys of a SwinIR-style model."""
    if "conv_before_upsample.0.weight" in sd:
        num_feat = _w(sd, "conv_before_upsample.0").shape[0]
        ups = [k for k in sd if re.fullmatch(r"conv_up\d\.weight", k)]
        if ups:
            return "nearest+conv", 2 ** len(ups), num_feat
        return "pixelshuffle", _pixel_shuffle_scale(arch, sd, num_feat), num_feat
    if "upsample.0.weight" in sd:
        out = _w(sd, "upsample.0").shape[0]
        scale = math.isqrt(out // in_chans)
        if scale * scale * in_chans != out:
            _bad(arch, f"upsample.0 has {out} outputs, not {in_chans} * scale^2 (pixelshuffledirect)")
        return "pixelshuffledirect", scale, 64
    if _w(sd, "conv_last").shape[1] != embed_dim:
        _bad(arch, f"conv_last takes {_w(sd, 'conv_last').shape[1]} channels without an upsampler; expected "
             f"embed_dim={embed_dim}")
    return "", 1, 64


def _swin_layers(sd: Mapping, heads_key: str, heads_dim: int) -> tuple[list[int], list[int]]:
    """(depths, num_heads): blocks per ``layers.N`` and dimension ``heads_dim`` of
    ``heads_key`` (formatted with the layer index: a tensor of its first block with one
    entry per head)."""
    n = _count(sd, r"layers\.(\d+)\.")
    depths = [_count(sd, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.") for i in range(n)]
    heads = [int(sd[heads_key.format(i)].shape[heads_dim]) for i in range(n)]
    return depths, heads


def _swin_img_size(sd: Mapping, window: int, notes: list) -> int:
    """The training patch size, from the shifted-window mask of the first layer's second
    block ((img/window)^2 windows); 64 (the reference default) when the file has none."""
    mask = sd.get("layers.0.residual_group.blocks.1.attn_mask")
    if mask is None:
        notes.append("no attn_mask in the file: training patch size 64 assumed (only the stored buffers "
                     "depend on it)")
        return 64
    return math.isqrt(mask.shape[0]) * window


def _fill_swin_buffers(sd: dict, depths, window: int, img_size: int, notes: list, extra=None) -> None:
    """Add the deterministic buffers a file may lack (the reference modules store them):
    each block's relative_position_index (and ``extra(prefix)`` entries), and the
    shifted-window masks of the odd blocks at the training size."""
    from fastsr.models.swin import relative_position_index, shifted_window_mask

    index, mask, added = relative_position_index(window), None, 0
    shifted = img_size > window
    if shifted:
        mask = shifted_window_mask(img_size, img_size, window, window // 2)
    for i, depth in enumerate(depths):
        for j in range(depth):
            prefix = f"layers.{i}.residual_group.blocks.{j}."
            want = {prefix + "attn.relative_position_index": index, **(extra(prefix) if extra else {})}
            if shifted and j % 2:
                want[prefix + "attn_mask"] = mask
            for k, v in want.items():
                if k not in sd:
                    sd[k], added = v, added + 1
    if added:
        notes.append(f"{added} buffers absent from the file computed (relative position index / attention masks)")


def _swin_img_range(upsampler: str, window: int, notes: list) -> float:
    """255 for the JPEG-artefact models (window 7, no upsampler), else 1: the reference
    test script's settings; the file does not record it."""
    img_range = 255.0 if upsampler == "" and window == 7 else 1.0
    why = "JPEG artefact model: window 7, no upsampler" if img_range > 1 else "the reference default"
    notes.append(f"img_range {img_range:g} assumed ({why})")
    return img_range


def _swinir(sd: dict, notes: list) -> dict:
    embed_dim, in_chans = _w(sd, "conv_first").shape[:2]
    depths, heads = _swin_layers(sd, "layers.{}.residual_group.blocks.0.attn.relative_position_bias_table", 1)
    rows = sd["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"].shape[0]
    window = (math.isqrt(rows) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        _bad("SwinIR", f"relative_position_bias_table has {rows} rows, not (2 * window - 1)^2")
    upsampler, scale, num_feat = _swin_tail("SwinIR", sd, embed_dim, in_chans)
    img_size = _swin_img_size(sd, window, notes)
    _fill_swin_buffers(sd, depths, window, img_size, notes)
    img_range = _swin_img_range(upsampler, window, notes)
    return dict(scale=scale, in_chans=in_chans, embed_dim=embed_dim, depths=depths, num_heads=heads,
                window_size=window, mlp_ratio=_w(sd, "layers.0.residual_group.blocks.0.mlp.fc1").shape[0] / embed_dim,
                img_size=img_size, img_range=img_range, upsampler=upsampler,
                resi_connection="3conv" if "conv_after_body.0.weight" in sd else "1conv", num_feat=num_feat,
                patch_norm="patch_embed.norm.weight" in sd)


def _swin2sr(sd: dict, notes: list) -> dict:
    from fastsr.models.swin2sr import log_relative_coords

    embed_dim, in_chans = _w(sd, "conv_first").shape[:2]
    if _w(sd, "patch_embed.proj").shape[-1] != 1:
        _bad("Swin2SR", f"patch size {_w(sd, 'patch_embed.proj').shape[-1]}: only patch size 1 (every released "
             "model) is supported")
    depths, heads = _swin_layers(sd, "layers.{}.residual_group.blocks.0.attn.logit_scale", 0)
    first = "layers.0.residual_group.blocks.0.attn."
    if first + "relative_position_index" in sd:
        window = math.isqrt(sd[first + "relative_position_index"].shape[0])
    elif first + "relative_coords_table" in sd:
        window = (sd[first + "relative_coords_table"].shape[1] + 1) // 2
    else:
        window = 8
        notes.append("no position buffers in the file: window size 8 assumed (the released models'; the file "
                     "does not record it)")
    if "conv_bicubic.weight" in sd:
        num_feat = _w(sd, "conv_before_upsample.0").shape[0]
        upsampler, scale = "pixelshuffle_aux", _pixel_shuffle_scale("Swin2SR", sd, num_feat)
    else:
        upsampler, scale, num_feat = _swin_tail("Swin2SR", sd, embed_dim, in_chans)
    img_size = _swin_img_size(sd, window, notes)
    table = log_relative_coords(window)
    _fill_swin_buffers(sd, depths, window, img_size, notes, lambda p: {p + "attn.relative_coords_table": table})
    img_range = _swin_img_range(upsampler, window, notes)
    return dict(scale=scale, in_chans=in_chans, embed_dim=embed_dim, depths=depths, num_heads=heads,
                window_size=window, mlp_ratio=_w(sd, "layers.0.residual_group.blocks.0.mlp.fc1").shape[0] / embed_dim,
                img_size=img_size, img_range=img_range, upsampler=upsampler,
                resi_connection="3conv" if "conv_after_body.0.weight" in sd else "1conv", num_feat=num_feat,
                patch_norm="patch_embed.norm.weight" in sd, qkv_bias=first + "q_bias" in sd)


def _ratio(dim: int, channels: int) -> int | float:
    """The reference's channel ratio r with ``dim // r == channels``."""
    return dim // channels if dim % channels == 0 else dim / channels


def _hat(sd: dict, notes: list) -> dict:
    from fastsr.models.hat import overlap_relative_position_index
    from fastsr.models.swin import relative_position_index

    embed_dim, in_chans = _w(sd, "conv_first").shape[:2]
    block = "layers.0.residual_group.blocks.0."
    depths, heads = _swin_layers(sd, "layers.{}.residual_group.blocks.0.attn.relative_position_bias_table", 1)
    window = (math.isqrt(sd[block + "attn.relative_position_bias_table"].shape[0]) + 1) // 2
    overlap = math.isqrt(sd["layers.0.residual_group.overlap_attn.relative_position_bias_table"].shape[0]) + 1 - window
    if overlap < window:
        _bad("HAT", f"the OCAB bias table gives an overlap window of {overlap} for window {window}")
    upsampler, scale, num_feat = _swin_tail("HAT", sd, embed_dim, in_chans)
    if "relative_position_index_SA" not in sd or "relative_position_index_OCA" not in sd:
        notes.append("relative position indices absent from the file computed")
        sd.setdefault("relative_position_index_SA", relative_position_index(window))
        sd.setdefault("relative_position_index_OCA", overlap_relative_position_index(window, overlap))
    notes.append("conv_scale 0.01 assumed (the reference value)")
    return dict(scale=scale, in_chans=in_chans, embed_dim=embed_dim, depths=depths, num_heads=heads,
                window_size=window, compress_ratio=_ratio(embed_dim, _w(sd, block + "conv_block.cab.0").shape[0]),
                squeeze_factor=_ratio(embed_dim, _w(sd, block + "conv_block.cab.3.attention.1").shape[0]),
                overlap_ratio=(overlap - window) / window,
                mlp_ratio=_w(sd, block + "mlp.fc1").shape[0] / embed_dim,
                img_range=_swin_img_range(upsampler, window, notes), upsampler=upsampler,
                resi_connection="1conv" if "conv_after_body.weight" in sd else "identity", num_feat=num_feat,
                patch_norm="patch_embed.norm.weight" in sd)


def _dat_split(sd: Mapping, notes: list) -> tuple[int, int]:
    """split_size from the stored offsets of the first spatial-attention branch (its
    extreme (dy, dx) are split - 1); (8, 32) when the file has none."""
    offsets = sd.get("layers.0.blocks.0.attn.attns.0.rpe_biases")
    if offsets is None:
        notes.append("no rpe_biases in the file: split_size (8, 32) assumed (DAT, DAT-2, DAT-light; a DAT-S "
                     "file, (8, 16), needs its buffers)")
        return 8, 32
    return int(offsets[:, 0].max().item()) + 1, int(offsets[:, 1].max().item()) + 1


def _dat_buffers(sd: dict, depths, split, img_size: int, notes: list) -> None:
    """Add the deterministic DAT buffers a file lacks: the branches' offsets and indices,
    the shifted blocks' masks at the training size, BN's num_batches_tracked."""
    from fastsr.models.dat import is_shifted, position_offsets
    from fastsr.models.swin import relative_position_index, shifted_window_mask

    (s0, s1), half = split, (split[0] // 2, split[1] // 2)
    want = {}
    for g, depth in enumerate(depths):
        for j in range(0, depth):
            attn = f"layers.{g}.blocks.{j}.attn."
            want.update({f"{attn}{bn}.num_batches_tracked": torch.tensor(0)
                         for bn in ("dwconv.1", "channel_interaction.2", "spatial_interaction.1")})
            if j % 2:
                continue
            for b, (wh, ww) in enumerate(((s0, s1), (s1, s0))):
                want[f"{attn}attns.{b}.rpe_biases"] = position_offsets(wh, ww)
                want[f"{attn}attns.{b}.relative_position_index"] = relative_position_index(wh, ww)
                if is_shifted(g, j):
                    shift = half if b == 0 else half[::-1]
                    want[f"{attn}attn_mask_{b}"] = shifted_window_mask(img_size, img_size, (wh, ww), shift)
    added = [k for k in want if k not in sd]
    sd.update({k: want[k] for k in added})
    if added:
        notes.append(f"{len(added)} buffers absent from the file computed (position offsets / indices / masks)")


def _dat(sd: dict, notes: list) -> dict:
    embed_dim, in_chans = _w(sd, "conv_first").shape[:2]
    n = _count(sd, r"layers\.(\d+)\.")
    depths = [_count(sd, rf"layers\.{i}\.blocks\.(\d+)\.") for i in range(n)]
    heads = [2 * _w(sd, f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2").shape[0] for i in range(n)]
    split = _dat_split(sd, notes)
    masks = sorted(k for k in sd if k.endswith(".attn.attn_mask_0"))
    if masks:
        img_size = math.isqrt(sd[masks[0]].shape[0] * split[0] * split[1])
    else:
        img_size = 64
        notes.append("no attn_mask in the file: training patch size 64 assumed (only the stored buffers depend on it)")
    _dat_buffers(sd, depths, split, img_size, notes)
    upsampler, scale, num_feat = _swin_tail("DAT", sd, embed_dim, in_chans)
    notes.append("img_range 1 assumed (the reference default)")
    return dict(scale=scale, in_chans=in_chans, embed_dim=embed_dim, depths=depths, num_heads=heads,
                split_size=split, expansion_factor=_w(sd, "layers.0.blocks.0.ffn.fc1").shape[0] / embed_dim,
                img_size=img_size, img_range=1.0, upsampler=upsampler,
                resi_connection="3conv" if "conv_after_body.0.weight" in sd else "1conv", num_feat=num_feat,
                qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd)


_CONVERT = {("RRDBNet", "esrgan-old"): _rrdb_from_esrgan_old, ("RRDBNet", "esrgan"): _rrdb_from_esrgan,
            ("RRDBNetOld", "esrgan"): _rrdb_to_old, ("RRDBNetOld", "basicsr"): _rrdb_to_old,
            ("OmniSR", "omni-sr"): _without_profiler_counters}
_PARSE = {"RRDBNet": _rrdbnet, "SRVGGNetCompact": _srvgg, "MSRResNet": _msrresnet, "EDSR": _edsr,
          "RCAN": _rcan,
          # -- convolutional community families
          "RRDBNetOld": _rrdbnet_old, "SPAN": _span, "PLKSR": _plksr, "RealPLKSR": _realplksr,
          "RealCUGAN": _realcugan, "OmniSR": _omnisr, "SAFMN": _safmn,
          # -- Swin-Transformer families
          "SwinIR": _swinir, "Swin2SR": _swin2sr, "HAT": _hat, "DAT": _dat}


def _fastsr_generator(metadata: Mapping, source: str) -> tuple[str, dict, int] | None:
    """``(name, kwargs, scale)`` of a fastsr generator file's metadata, None for other files
    (``scale`` 0 when the metadata gives none: the model's own is read after building it).

    Raises:
        CheckpointError: a fastsr file whose metadata builds no model
            (:func:`fastsr.models.checkpoint.generator_from_metadata`).
    """
    if metadata.get("format") != "fastsr" or "generator" not in metadata:
        return None
    name, kwargs, scale = generator_from_metadata(decode_metadata(dict(metadata)), source)
    kwargs.pop("fused", None)
    if scale is None:
        scale = kwargs.get("scale", 0)
    return name, kwargs, scale


def _check_tensors(sd: Mapping, source: str) -> None:
    """Parameter names as keys, no zero-size tensor (a damaged or placeholder file)."""
    check_tensor_dict(sd, source, UnknownCheckpointError)
    empty = [f"{k} {tuple(v.shape)}" for k, v in sd.items() if v.numel() == 0]
    if empty:
        raise UnknownCheckpointError(f"{source}: {len(empty)} zero-size tensor(s) ({', '.join(empty[:3])}"
                                     f"{', ...' if len(empty) > 3 else ''}): a damaged or placeholder checkpoint")


def detect(checkpoint: Mapping, metadata: Mapping | None = None, source: str = "<state dict>") -> tuple[Detected, dict]:
    """Recognise the architecture of a checkpoint's contents.

    Args:
        checkpoint: a state dict or a checkpoint dict around one (see :func:`read_checkpoint`).
        metadata: safetensors metadata (a fastsr generator file names its model there).
        source: name used in :attr:`Detected.source` and in error messages.

    Returns:
        ``(detected, state_dict)``: the record and the state dict with fastsr's (= BasicSR's)
        key names, ready for ``create(detected.architecture, **detected.params)``.

    Raises:
        UnknownCheckpointError: no supported architecture explains the keys (the message names
            the closest one, the keys that do not match it and the expected keys not found,
            or -- when no family matches even half of the file -- the file's top-level key
            prefixes with counts), the shapes do not fit the one detected, keys that are not
            strings, or zero-size tensors.
        CheckpointError: fastsr metadata that builds no model
            (:func:`fastsr.models.checkpoint.generator_from_metadata`).
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"detect: checkpoint must be a mapping (a state dict), got {type(checkpoint).__name__}")
    sd, wrapper = _unwrap(checkpoint)
    if not sd:
        raise UnknownCheckpointError(f"{source}: no tensors found (top-level keys: {sorted(map(str, checkpoint))[:10]})")
    _check_tensors(sd, source)
    spec = _fastsr_generator(metadata or {}, source)
    notes: list[str] = []
    if spec is not None:
        name, params, scale = spec
        return Detected(name, scale, params, "fastsr", wrapper, source, ()), sd
    try:
        arch, layout = _classify(sd)
    except UnknownCheckpointError as e:
        # a wrapper's attribute name in front of every key (``netG.``, ``generator.``, ...)
        prefix = {k.split(".", 1)[0] for k in sd}
        stripped = {k.split(".", 1)[1]: v for k, v in sd.items()} if len(prefix) == 1 and all(
            "." in k for k in sd) else None
        try:
            if stripped is None:
                raise e
            arch, layout = _classify(stripped)
        except UnknownCheckpointError:
            raise UnknownCheckpointError(f"{source}: {e}") from None
        sd, wrapper = stripped, f"{wrapper}+{prefix.pop()}." if wrapper else f"{prefix.pop()}."
    if (arch, layout) in _CONVERT:
        sd = _CONVERT[arch, layout](sd)
    try:
        params = _PARSE[arch](sd, notes)
    except UnknownCheckpointError as e:
        raise UnknownCheckpointError(f"{source}: {e}") from None
    except KeyError as e:
        raise UnknownCheckpointError(f"{source}: looks like {arch} ({layout} keys) but lacks {e}") from None
    except IndexError:
        raise UnknownCheckpointError(f"{source}: looks like {arch} ({layout} keys) but its tensors have too few "
                                     "dimensions for it") from None
    return Detected(arch, int(params["scale"]), params, layout, wrapper, source, tuple(notes)), sd


def load(checkpoint: str | os.PathLike | Mapping, fused: bool = True, device: str | torch.device = "cpu",
         **overrides) -> tuple[nn.Module, Detected]:
    """Build the fastsr model of a community (or fastsr) checkpoint and load its weights.

    Args:
        checkpoint: path of a ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` (read with
            ``torch.load(weights_only=True)``) or ``.safetensors`` file, or an in-memory
            state dict / checkpoint dict. See the module docstring for the architectures.
        fused: run fastsr's fused epilogues (same weights and outputs either way, up to
            float rounding).
        device: where the model goes.
        **overrides: constructor arguments replacing detected / assumed ones (e.g.
            ``act_type="leakyrelu"`` for a compact model, ``res_scale=0.1`` for EDSR).

    Returns:
        ``(model, detected)``: the model in eval mode with float32 parameters (float16 /
        bfloat16 files are upcast), mapping LR (N, C, H, W) in [0, 1] to SR
        (N, C, scale*H, scale*W) in about [0, 1]; and the :class:`Detected` record.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable file or bad suffix; an ``overrides`` name the model does not
            take.
        UnknownCheckpointError (a ValueError): unknown architecture (closest one and the
            unmatched keys named, or the file's key prefixes when nothing is close), keys
            that are not strings or zero-size tensors, or weights that do not fit the
            detected model.
        CheckpointError (a ValueError): a fastsr file whose metadata builds no model or
            whose ``scale`` metadata is not its model's.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        source = Path(checkpoint).name
        obj, metadata = read_checkpoint(checkpoint)
    elif isinstance(checkpoint, Mapping):
        source, obj, metadata = "<state dict>", checkpoint, {}
    else:
        raise TypeError(f"load: checkpoint must be a path or a state dict, got {type(checkpoint).__name__}")
    detected, sd = detect(obj, metadata, source)
    params = {**detected.params, **overrides}
    if overrides:
        detected = Detected(detected.architecture, int(params.get("scale", detected.scale)), params,
                            detected.layout, detected.wrapper, detected.source,
                            tuple(n for n in detected.notes if not any(k in n for k in overrides)))
    try:
        model = build_for_weights(lambda: create(detected.architecture, **params, fused=fused), sd, check_state_dict)
    except TypeError as e:
        raise ValueError(f"load: {detected.architecture} does not take these arguments: {e}") from None
    except ValueError as e:
        detail = "; ".join(str(e).splitlines())
        raise UnknownCheckpointError(f"{source}: detected {detected} but the weights do not fit: {detail}") from None
    try:
        load_state_dict(model, sd)
    except ValueError as e:
        detail = "; ".join(str(e).splitlines())
        raise UnknownCheckpointError(f"{source}: detected {detected} but the weights do not fit: {detail}") from None
    scale = model_scale(model, detected.scale or None, source)
    if scale != detected.scale:
        detected = dataclasses.replace(detected, scale=scale)
    return model.to(device).eval(), detected
