"""Config -> objects. The only place the trainer and CLI name models, losses and metrics.

Models come from ``fastsr.models.create(name, **kwargs)``; losses and metrics from
``fastsr.losses`` / ``fastsr.metrics``. The adversarial objectives are wrapped in one small
interface the loop uses for every GAN kind (see :class:`GANObjective`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.train.config import ConfigError

__all__ = ["generator_spec", "build_generator", "build_discriminator", "build_pixel_loss",
           "build_feature_losses", "GANObjective", "build_gan_objective", "psnr_ssim", "GAN_TYPES"]


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


def _charbonnier(sr, hr, eps=1e-3):
    return torch.sqrt((sr - hr) ** 2 + eps * eps).mean()


def build_pixel_loss(cfg: dict):
    """``(fn(sr, hr) -> scalar, weight)`` or None. Types: l1, mse, charbonnier."""
    spec = cfg["loss"].get("pixel")
    if not spec:
        return None
    kind = spec.get("type", "l1")
    weight = float(spec.get("weight", 1.0))
    try:
        from fastsr import losses as L  # the fused L1 when available
    except ImportError:
        L = None
    if kind == "l1":
        fn = getattr(L, "l1_loss", None) if L is not None else None
        fn = fn or F.l1_loss
    elif kind == "mse":
        fn = F.mse_loss
    elif kind == "charbonnier":
        fn = _charbonnier
    else:
        raise ConfigError(f"loss.pixel.type must be l1, mse or charbonnier, got {kind!r}")
    return fn, weight


def build_feature_losses(cfg: dict) -> list:
    """Perceptual / texture losses as ``[(name, module, weight)]`` (VGG19 from fastsr.losses)."""
    out = []
    for key in ("perceptual", "texture"):
        spec = cfg["loss"].get(key)
        if not spec:
            continue
        try:
            from fastsr import losses as L
        except ImportError:
            raise ConfigError(f"loss.{key} needs fastsr.losses, which is not available") from None
        spec = dict(spec)
        weight = float(spec.pop("weight", 1.0))
        cls = L.PerceptualLoss if key == "perceptual" else L.TextureLoss
        try:
            out.append((key, cls(**spec), weight))
        except TypeError as e:
            raise ConfigError(f"loss.{key}: {e}") from None
    return out


GAN_TYPES = ("vanilla", "lsgan", "hinge", "wgan", "wgan_gp", "ragan", "began")


class GANObjective:
    """One adversarial loss kind behind one interface used by the training loop.

    ``d_loss(D, real, fake)`` -> (loss, logs) for a discriminator step (``fake`` detached);
    ``g_loss(D, real, fake)`` -> (loss, logs) for the generator step (unweighted);
    ``after_d_step(D)`` applies WGAN weight clipping; ``state_dict()`` holds BEGAN's k_t.
    Formulas: vanilla (SRGAN, -log D(G(x))), lsgan, hinge, wgan (Zhang et al. eq. 8-9:
    l_G = -E[D(G(LR))], l_D = E[D(G(LR))] - E[D(HR)], weights clipped to [-clip, clip]),
    wgan_gp (+ gp_weight * E[(||grad D(x_hat)||_2 - 1)^2], Gulrajani et al.), ragan (ESRGAN
    relativistic average), began (paper 004 eq. 11-15, L(v) = mean|v - D(v)|).
    """

    def __init__(self, kind: str, clip: float = 0.01, gp_weight: float = 10.0, gamma: float = 0.5,
                 lambda_k: float = 1e-3, k_init: float = 0.0):
        if kind not in GAN_TYPES:
            raise ConfigError(f"loss.gan.type must be one of {GAN_TYPES}, got {kind!r}")
        self.kind, self.clip, self.gp_weight = kind, float(clip), float(gp_weight)
        self.gamma, self.lambda_k, self.k = float(gamma), float(lambda_k), float(k_init)

    # -- helpers
    @staticmethod
    def _bce(logits, target: float):
        return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))

    @staticmethod
    def _recon(D, v):
        return (v.float() - D(v).float()).abs().mean()

    def d_loss(self, D, real, fake, gp_module=None):
        k = self.kind
        if k == "began":
            l_real, l_fake = self._recon(D, real), self._recon(D, fake)
            loss = l_real - self.k * l_fake
            # k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)
            balance = self.gamma * l_real.item() - l_fake.item()
            self.k = min(max(self.k + self.lambda_k * balance, 0.0), 1.0)
            conv = l_real.item() + abs(balance)
            return loss, {"d_real": l_real.item(), "d_fake": l_fake.item(), "k_t": self.k, "M_global": conv}
        pr, pf = D(real).float(), D(fake).float()
        if k == "vanilla":
            loss = self._bce(pr, 1.0) + self._bce(pf, 0.0)
        elif k == "lsgan":
            loss = 0.5 * (((pr - 1) ** 2).mean() + (pf ** 2).mean())
        elif k == "hinge":
            loss = F.relu(1 - pr).mean() + F.relu(1 + pf).mean()
        elif k in ("wgan", "wgan_gp"):
            loss = pf.mean() - pr.mean()
        else:  # ragan
            loss = 0.5 * (self._bce(pr - pf.mean(), 1.0) + self._bce(pf - pr.mean(), 0.0))
        logs = {"d_real": pr.mean().item(), "d_fake": pf.mean().item()}
        if k == "wgan_gp":
            gp = self._gradient_penalty(gp_module if gp_module is not None else D, real, fake)
            loss = loss + self.gp_weight * gp
            logs["gp"] = gp.item()
        return loss, logs

    def _gradient_penalty(self, D, real, fake):
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        x = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
        out = D(x).float()
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        return ((grad.float().flatten(1).norm(dim=1) - 1) ** 2).mean()

    def g_loss(self, D, real, fake):
        k = self.kind
        if k == "began":
            return self._recon(D, fake), {}
        pf = D(fake).float()
        if k == "vanilla":
            return self._bce(pf, 1.0), {}
        if k == "lsgan":
            return 0.5 * ((pf - 1) ** 2).mean(), {}
        if k in ("hinge", "wgan", "wgan_gp"):
            return -pf.mean(), {}
        pr = D(real).float().detach()
        return 0.5 * (self._bce(pr - pf.mean(), 0.0) + self._bce(pf - pr.mean(), 1.0)), {}

    @torch.no_grad()
    def after_d_step(self, D) -> None:
        if self.kind == "wgan" and self.clip > 0:
            for p in D.parameters():
                p.clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict:
        return {"k_t": self.k}

    def load_state_dict(self, st: dict) -> None:
        self.k = float(st.get("k_t", self.k))


def build_gan_objective(cfg: dict):
    """``(GANObjective, weight)`` or None when no adversarial loss is configured."""
    spec = cfg["loss"].get("gan")
    if not spec:
        return None
    spec = dict(spec)
    kind = spec.pop("type", None)
    weight = float(spec.pop("weight", 1e-3))
    try:
        return GANObjective(kind, **spec), weight
    except TypeError as e:
        raise ConfigError(f"loss.gan: {e}") from None


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
