"""Generators trained by fastsr itself and shipped inside the package (``fastsr/weights``).

No pretrained SR weights can be downloaded where fastsr is built and tested, so fastsr
trains its own default model with ``fastsr train`` on the real photographs bundled with
scikit-image and ships the result; the metadata in each file records the recipe, the
command, the training time and the validation PSNR/SSIM against bicubic.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from fastsr.models.checkpoint import load_generator, read_metadata

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: name -> (file in fastsr/weights, one-line description)
PRETRAINED = {
    "nonbn_x4": ("nonbn_x4.safetensors",
                 "NonBNResNet x4 (EM-distance GAN paper's generator), PSNR-oriented: MSE + LR consistency on "
                 "the sample photographs, then on the photograph corpus, then L1 + the checkerboard loss "
                 "(recipes nonbn_degrid_x4, then nonbn_refine_x4)"),
    "nonbn_wgan_x4": ("nonbn_wgan_x4.safetensors",
                      "NonBNResNet x4, nonbn_x4 fine-tuned as a WGAN-GP generator on the photograph corpus "
                      "(recipes nonbn_wgan_corpus_x4, then nonbn_wgan_degrid_x4)"),
}

__all__ = ["pretrained", "pretrained_path", "pretrained_info", "list_pretrained", "PRETRAINED"]


def list_pretrained() -> list[str]:
    """Names of the shipped generators whose weight file is present."""
    return [n for n, (f, _) in PRETRAINED.items() if (WEIGHTS_DIR / f).is_file()]


def pretrained_path(name: str = "nonbn_x4") -> Path:
    """Path of a shipped weight file.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
        FileNotFoundError: the file is missing from this installation.
    """
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(PRETRAINED)}")
    path = WEIGHTS_DIR / PRETRAINED[name][0]
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} are missing from this installation of fastsr")
    return path


def pretrained_info(name: str = "nonbn_x4") -> dict:
    """The metadata of a shipped generator: architecture, scale, recipe, command, iterations,
    wall time, and the validation table (PSNR in dB and SSIM, Y channel, crop_border=scale)."""
    return read_metadata(pretrained_path(name))


def pretrained(name: str = "nonbn_x4", fused: bool = True, device="cpu") -> nn.Module:
    """A shipped generator in eval mode, float32 weights (stored as float16).

    Args:
        name: see :func:`list_pretrained` (``"nonbn_x4"``: x4 NonBNResNet for PSNR;
            ``"nonbn_wgan_x4"``: the same network fine-tuned as a GAN generator, sharper
            texture, lower NIQE, about 0.6 dB less Y-PSNR).
        fused: use fastsr's fused layers (same weights either way).
        device: where to put the model.

    Returns:
        The generator: LR (N, 3, H, W) RGB in [0, 1] -> SR (N, 3, 4H, 4W) (clamp to [0, 1]).

    Raises:
        ValueError: unknown ``name``. FileNotFoundError: weights missing.
    """
    model, _ = load_generator(pretrained_path(name), "params", device)
    model.fused = fused
    return model.eval()
