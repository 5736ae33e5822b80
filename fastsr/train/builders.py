"""Config -> objects. The only place the trainer and CLI name models, losses and metrics.

Models come from ``fastsr.models.create(name, **kwargs)``; losses and metrics from
``fastsr.losses`` / ``fastsr.metrics``. A config section's keys other than ``type`` /
``weight`` / ``name`` are passed to the constructor unchanged, so the recipes use the
constructors' own argument names; a wrong one is a :class:`ConfigError` naming the section.
"""
from __future__ import annotations

import torch
from torch import nn

from fastsr.train.config import ConfigError

__all__ = ["generator_spec", "build_generator", "build_discriminator", "build_pixel_loss",
           "build_feature_losses", "build_gan_loss", "psnr_ssim"]


def generator_spec(cfg: dict) -> dict:
    """``{"name": ..., **kwargs}`` that rebuilds the generator (stored in checkpoints)."""
    spec = dict(cfg["model"]["generator"] or {})
    if "name" not in spec:
        raise ConfigError("model.generator.name is required")
    spec.setdefault("scale", cfg["scale"])
    spec.setdefault("fused", cfg["model"].get("fused", True))
    return spec


def _create(spec: dict, what: str) -> nn.Module:
    from fastsr import models

    spec = dict(spec)
    name = spec.pop("name")
    try:
        return models.create(name, **spec)
    except TypeError as e:
        raise ConfigError(f"{what} {name!r}: {e}") from None


def build_generator(spec: dict) -> nn.Module:
    """The generator of a :func:`generator_spec` (or checkpoint metadata)."""
    return _create(spec, "model.generator")


def build_discriminator(cfg: dict) -> nn.Module | None:
    spec = cfg["model"].get("discriminator")
    if not spec:
        return None
    if "name" not in spec:
        raise ConfigError("model.discriminator.name is required")
    return _create(spec, "model.discriminator")


def init_weights(module: nn.Module, method: str) -> None:
    from fastsr import models

    if method not in ("default", "normal"):
        raise ConfigError(f"model.init must be 'default' or 'normal', got {method!r}")
    if method == "normal":
        models.init_weights(module, method="normal", std=0.02)


_PIXEL = {"l1": "L1Loss", "mse": "MSELoss", "charbonnier": "CharbonnierLoss", "ssim": "SSIMLoss"}


def _construct(cls, spec: dict, key: str):
    """``cls(**spec)``; a wrong or missing argument or value becomes a ConfigError naming ``key``."""
    try:
        return cls(**spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    except FileNotFoundError as e:  # the VGG19 weights of the perceptual / texture losses
        raise ConfigError(f"{key}: {e}") from None


def build_pixel_loss(cfg: dict):
    """``(module(sr, hr) -> scalar, weight)`` from ``loss.pixel``, or None when it is null.

    ``loss.pixel = {type: l1 | mse | charbonnier | ssim, weight: w, **kwargs}``; the module
    is :class:`fastsr.losses.L1Loss` / ``MSELoss`` / ``CharbonnierLoss`` / ``SSIMLoss`` built
    with ``kwargs`` (e.g. ``eps`` for Charbonnier, ``alpha`` for SSIM: alpha (1 - SSIM) +
    (1 - alpha) L1, 0.84 in Zhao et al. 2017); ``weight`` is applied by the trainer. The
    fused kernels (L1, Charbonnier, SSIM) follow ``model.fused``.
    """
    spec = cfg["loss"].get("pixel")
    if not spec:
        return None
    from fastsr import losses as L

    spec = dict(spec)
    kind = spec.pop("type", "l1")
    weight = float(spec.pop("weight", 1.0))
    if kind not in _PIXEL:
        raise ConfigError(f"loss.pixel.type must be one of {sorted(_PIXEL)}, got {kind!r}")
    if kind in ("l1", "charbonnier", "ssim"):  # the fused losses follow model.fused
        spec.setdefault("fused", bool(cfg["model"].get("fused", True)))
    return _construct(getattr(L, _PIXEL[kind]), spec, "loss.pixel"), weight


def build_feature_losses(cfg: dict) -> list:
    """``[(name, module, weight)]`` for ``loss.perceptual`` and ``loss.texture``.

    Each section is ``{weight: w, **kwargs}`` with the constructor arguments of
    :class:`fastsr.losses.PerceptualLoss` (``layer_weights``, ``criterion``,
    ``feature_scale``, ``weights``, ``input_range``, ``ceil_mode``) or
    :class:`fastsr.losses.TextureLoss` (``layer_weights``, ``patch_size``, ``weights``,
    ``input_range``). The VGG19 weights come from ``weights`` or ``$FASTSR_VGG19_WEIGHTS``
    (never downloaded); a missing file is a ConfigError saying so.
    """
    from fastsr import losses as L

    out = []
    for key, cls in (("perceptual", L.PerceptualLoss), ("texture", L.TextureLoss)):
        spec = cfg["loss"].get(key)
        if not spec:
            continue
        spec = dict(spec)
        weight = float(spec.pop("weight", 1.0))
        out.append((key, _construct(cls, spec, f"loss.{key}"), weight))
    return out


def build_gan_loss(cfg: dict):
    """``(fastsr.losses.GANLoss, weight)`` from ``loss.gan``, or None when it is null.

    ``loss.gan = {type: kind, weight: w, **kwargs}``: ``kind`` one of
    ``fastsr.losses.GAN_LOSSES`` (vanilla, lsgan, wgan, wgan-gp (or wgan_gp), hinge, ragan,
    began), ``kwargs`` its constructor arguments (wgan: ``clip_value``; wgan-gp:
    ``gp_weight``; began: ``gamma``, ``lambda_k``, ``k_init``). ``weight`` is the
    adversarial weight of the generator loss, applied by the trainer.
    """
    spec = cfg["loss"].get("gan")
    if not spec:
        return None
    from fastsr import losses as L

    spec = dict(spec)
    kind = spec.pop("type", None)
    weight = float(spec.pop("weight", 1e-3))
    key = kind.lower().replace("_", "-") if isinstance(kind, str) else kind
    if key not in L.GAN_LOSSES:
        raise ConfigError(f"loss.gan.type must be one of {sorted(L.GAN_LOSSES)}, got {kind!r}")
    return _construct(L.GAN_LOSSES[key], spec, "loss.gan"), weight


def psnr_ssim(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> tuple[list[float], list[float]]:
    """Per-image Y-channel PSNR (dB) and SSIM of (N, 3, H, W) [0, 1] tensors, papers' convention.

    Images are quantised to 8 bits first (as saved PNGs are). Uses ``fastsr.metrics``.
    """
    from fastsr import metrics

    sr = sr.detach().float().clamp(0, 1).mul(255).round().div(255).cpu()
    hr = hr.detach().float().clamp(0, 1).mul(255).round().div(255).cpu()
    p = metrics.psnr(sr, hr, crop_border=crop_border, test_y_channel=True)
    s = metrics.ssim(sr, hr, crop_border=crop_border, test_y_channel=True)
    return [float(v) for v in torch.as_tensor(p).flatten()], [float(v) for v in torch.as_tensor(s).flatten()]
