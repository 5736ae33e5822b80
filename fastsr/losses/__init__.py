"""Loss compositions of the SR GANs: the SSIM + L1 mix, perceptual (VGG19 features), texture
(patch-wise Gram matrices) and adversarial (vanilla, LSGAN, WGAN, WGAN-GP, hinge,
relativistic average, BEGAN; the trainer's interface is documented in
:mod:`fastsr.losses.gan`).

The single-term pixel losses are modules over fused ops and live in :mod:`fastsr.nn`:
``fastsr.nn.L1Loss`` (L1, and Charbonnier with ``eps``) and ``fastsr.nn.SSIMLoss``; MSE is
``torch.nn.MSELoss``. Loss weights are applied by the trainer, not by the modules.
``fastsr.losses.L1Loss``, ``CharbonnierLoss``, ``MSELoss`` and ``SSIMLoss`` still work for
one release (with their old ``loss_weight`` argument) and emit a DeprecationWarning.
"""
from fastsr._deprecation import moved_names
from fastsr.losses.gan import (
    GAN_LOSSES,
    BEGANLoss,
    GANLoss,
    HingeGANLoss,
    LSGANLoss,
    RelativisticGANLoss,
    VanillaGANLoss,
    WGANGPLoss,
    WGANLoss,
    build_gan_loss,
    clip_weights_,
    gradient_penalty,
)
from fastsr.losses.perceptual import SRGAN_FEATURE_SCALE, PerceptualLoss, TextureLoss, gram_patches
from fastsr.losses.pixel import CheckerboardLoss, LRConsistencyLoss, SSIML1Loss
from fastsr.losses.vgg import LAYER_NAMES, VGG19Features, find_vgg19_weights, load_vgg19_state_dict

__all__ = [
    "SSIML1Loss",
    "LRConsistencyLoss",
    "CheckerboardLoss",
    "PerceptualLoss",
    "TextureLoss",
    "SRGAN_FEATURE_SCALE",
    "gram_patches",
    "VGG19Features",
    "LAYER_NAMES",
    "find_vgg19_weights",
    "load_vgg19_state_dict",
    "GANLoss",
    "VanillaGANLoss",
    "LSGANLoss",
    "WGANLoss",
    "WGANGPLoss",
    "HingeGANLoss",
    "RelativisticGANLoss",
    "BEGANLoss",
    "GAN_LOSSES",
    "build_gan_loss",
    "gradient_penalty",
    "clip_weights_",
]

__getattr__ = moved_names(
    __name__,
    {name: f"fastsr.losses._deprecated:{name}" for name in ("L1Loss", "CharbonnierLoss", "MSELoss", "SSIMLoss")},
    {"L1Loss": "fastsr.nn.L1Loss (the trainer applies loss weights)",
     "CharbonnierLoss": "fastsr.nn.L1Loss(eps=...) (the trainer applies loss weights)",
     "MSELoss": "torch.nn.MSELoss (the trainer applies loss weights)",
     "SSIMLoss": "fastsr.losses.SSIML1Loss, or fastsr.nn.SSIMLoss for the pure SSIM loss"},
)
