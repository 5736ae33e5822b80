"""Losses of the SR GANs: pixel (L1, MSE, Charbonnier), SSIM (+ L1), perceptual (VGG19
features), texture (patch-wise Gram matrices) and adversarial (vanilla, LSGAN, WGAN,
WGAN-GP, hinge, relativistic average, BEGAN; the trainer's interface is documented in
:mod:`fastsr.losses.gan`)."""
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
from fastsr.losses.pixel import CharbonnierLoss, L1Loss, MSELoss, SSIMLoss
from fastsr.losses.vgg import LAYER_NAMES, VGG19Features, find_vgg19_weights, load_vgg19_state_dict

__all__ = [
    "L1Loss",
    "MSELoss",
    "CharbonnierLoss",
    "SSIMLoss",
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
