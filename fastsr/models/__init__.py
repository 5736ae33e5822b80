"""Generators and discriminators of the source papers, plus CNN baselines.

One file per architecture family (BasicSR ``archs/`` style); every model is registered by
class name (and a few aliases) for :func:`create`::

    import fastsr
    g = fastsr.models.create("NonBNResNet", scale=4)          # fused=True by default
    d = fastsr.models.create("WGANCritic", input_size=96)
    fastsr.models.list_models()

Every model takes ``fused`` (same state_dict for ``fused=True`` and ``False``; setting
``model.fused`` propagates to every submodule), generators also ``scale``. Discriminators return logits /
critic scores (no sigmoid). :func:`init_weights` re-initialises (PyTorch default or
N(0, 0.02)); :func:`init_icnr` ICNR-initialises the sub-pixel upsamplers (every generator
with one also takes ``icnr=True``); :func:`load_state_dict` loads BasicSR-style checkpoints strictly and lists
missing / unexpected keys on mismatch. :mod:`fastsr.models.checkpoint` is fastsr's own
generator file format (:func:`save_generator`, :func:`load_generator`, ...) and
:func:`pretrained` loads the generators shipped in ``fastsr/weights``. :func:`load` reads community checkpoints (ESRGAN,
ESRGAN+, Real-ESRGAN, BasicSR, SPAN, PLKSR / RealPLKSR, Real-CUGAN, Omni-SR, SAFMN files; the
transformer families SwinIR, Swin2SR, HAT and DAT, whose shared window-attention machinery is
:mod:`fastsr.models.swin`), recognising the
architecture from the keys.
"""
from fastsr.models._utils import (count_parameters, extract_state_dict, has_subpixel_convs, init_icnr,
                                  init_weights, interpolate_weights, load_state_dict)
from fastsr.models.registry import create, list_models, register_model
from fastsr.models.discriminators import SRGANDiscriminator, WGANCritic
from fastsr.models.srresnet import MSRResNet, SRResNet
from fastsr.models.nonbn import NonBNResNet
from fastsr.models.sharpness import SharpnessDiscriminator, SharpnessGenerator
from fastsr.models.attentive import AttentiveGenerator, BEGANDiscriminator
from fastsr.models.rrdbnet import RRDBNet, VGGStyleDiscriminator
from fastsr.models.baselines import EDSR, ESPCN, RCAN, SRCNN, VDSR
from fastsr.models.checkpoint import (CheckpointError, export_generator, load_generator, load_generator_weights,
                                     read_metadata, save_generator)
from fastsr.models.srvgg import SRVGGNetCompact
from fastsr.models.esrgan import RRDBNetOld
from fastsr.models.span import SPAN
from fastsr.models.plksr import PLKSR, RealPLKSR
from fastsr.models.realcugan import RealCUGAN
from fastsr.models.omnisr import OmniSR
from fastsr.models.safmn import SAFMN
from fastsr.models.swinir import SwinIR
from fastsr.models.swin2sr import Swin2SR
from fastsr.models.hat import HAT
from fastsr.models.dat import DAT
from fastsr.models.pretrained import list_pretrained, pretrained, pretrained_info, pretrained_path
from fastsr.models.community import Detected, UnknownCheckpointError, detect, load

__all__ = [
    "create", "list_models", "register_model", "init_weights", "init_icnr", "has_subpixel_convs", "load_state_dict",
    "extract_state_dict", "count_parameters", "interpolate_weights",
    "pretrained", "pretrained_info", "pretrained_path", "list_pretrained",
    "CheckpointError", "save_generator", "load_generator", "load_generator_weights", "read_metadata",
    "export_generator",
    "load", "detect", "Detected", "UnknownCheckpointError", "SRVGGNetCompact",
    "SRResNet", "MSRResNet", "NonBNResNet", "SharpnessGenerator", "AttentiveGenerator", "RRDBNet",
    "SRCNN", "ESPCN", "VDSR", "EDSR", "RCAN",
    "SRGANDiscriminator", "WGANCritic", "SharpnessDiscriminator", "BEGANDiscriminator",
    "VGGStyleDiscriminator", "RRDBNetOld", "SPAN", "PLKSR", "RealPLKSR", "RealCUGAN", "OmniSR", "SAFMN",
    "SwinIR", "Swin2SR", "HAT", "DAT",
]
