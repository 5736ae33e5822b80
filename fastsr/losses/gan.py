"""Adversarial losses of the SR GANs, behind one interface the trainer calls.

Interface (every class below; build one by name with :func:`build_gan_loss`)::

    gan = build_gan_loss("wgan-gp")                     # or VanillaGANLoss(), BEGANLoss(...)
    # discriminator / critic step (fake detached from G):
    out_real, out_fake = D(hr), D(sr.detach())
    d_loss = gan.discriminator_loss(out_real, out_fake, real=hr, fake=sr.detach(), critic=D)
    d_loss.backward(); opt_d.step()
    gan.post_discriminator_step(D)                      # WGAN: clip the critic's weights
    # generator step:
    g_adv = gan.generator_loss(D(sr), out_real.detach(), fake=sr)
    g_loss = content_loss + adv_weight * g_adv          # e.g. 1e-3 (SRGAN, eq. 8 of the EM paper)
    gan.last_stats                                      # dict of detached scalars to log

* ``out_*`` are the raw outputs of D: **logits** (no sigmoid; the sigmoid of SRGAN's and the
  sharpness GAN's discriminators is applied here, in the numerically stable
  ``binary_cross_entropy_with_logits``) of any shape -- (N,), (N, 1) or a patch map
  (N, 1, h, w) -- averaged over all elements; for BEGAN the auto-encoder **reconstructions**
  of the images, with the images' shape.
* ``real``, ``fake``, ``critic`` are keyword arguments that a kind uses only when it needs
  them (WGAN-GP: the critic and both images for the gradient penalty; BEGAN: the images);
  passing them always is fine. ``real_out`` in ``generator_loss`` is needed by the
  relativistic loss only (ESRGAN computes D(hr) in the generator step too; pass it
  detached). Attributes ``needs_critic``, ``needs_images``, ``needs_real_for_generator``
  tell a trainer what a kind requires.
* Every loss returns a scalar tensor to minimise. The adversarial weight (1e-3 in SRGAN and
  the EM-distance paper, 5e-3 in ESRGAN) is the trainer's, not applied here.
* ``post_discriminator_step(critic)`` must be called after every critic update; it clips
  the weights for ``wgan`` and does nothing for the other kinds.
* BEGAN keeps its control variable k_t as a buffer, so it is in ``state_dict()`` and a
  resumed run continues it; ``discriminator_loss`` updates it (when the module is in
  training mode) and reports the convergence measure M in ``last_stats``.

Kinds (D(.) a probability, C(.) the logit/critic value, sigma the sigmoid, E the mean):

=============  =======================================  ======================================
kind           discriminator loss                       generator loss
=============  =======================================  ======================================
vanilla        -E[log sigma(C(x))] - E[log(1-sigma(C(G)))]  -E[log sigma(C(G))] (non-saturating)
lsgan          1/2 E[(C(x)-1)^2] + 1/2 E[C(G)^2]         1/2 E[(C(G)-1)^2]
wgan           E[C(G)] - E[C(x)], weights clipped to     -E[C(G)]
               [-c, c] after each step
wgan-gp        E[C(G)] - E[C(x)] + lambda E[(|grad C(x~)|_2 - 1)^2]   -E[C(G)]
hinge          E[max(0, 1-C(x))] + E[max(0, 1+C(G))]     -E[C(G)]
ragan          -E[log D_Ra(x, G)] - E[log(1-D_Ra(G, x))]  -E[log(1-D_Ra(x, G))] - E[log D_Ra(G, x)]
began          L(x) - k_t L(G),  L(v) = E|v - D(v)|      L(G)
=============  =======================================  ======================================

Sources are given in each class's docstring.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
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


def _check_out(t, name: str, fn: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {tuple(t.shape)})")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GANLoss(nn.Module):
    """Base class: the interface documented in :mod:`fastsr.losses.gan`."""

    kind: str = ""
    needs_critic = False
    needs_images = False
    needs_real_for_generator = False

    def __init__(self) -> None:
        super().__init__()
        self.last_stats: dict[str, torch.Tensor] = {}

    def discriminator_loss(self, real_out, fake_out, *, real=None, fake=None, critic=None) -> torch.Tensor:
        fn = f"{type(self).__name__}.discriminator_loss"
        _check_out(real_out, "real_out", fn)
        _check_out(fake_out, "fake_out", fn)
        return self._d_loss(real_out, fake_out, real=real, fake=fake, critic=critic)

    def generator_loss(self, fake_out, real_out=None, *, fake=None, real=None) -> torch.Tensor:
        fn = f"{type(self).__name__}.generator_loss"
        _check_out(fake_out, "fake_out", fn)
        if real_out is not None:
            _check_out(real_out, "real_out", fn)
        return self._g_loss(fake_out, real_out, fake=fake)

    def post_discriminator_step(self, critic: nn.Module) -> None:
        """Called after each discriminator update; only ``wgan`` does something (clipping)."""

    def _d_loss(self, real_out, fake_out, *, real, fake, critic):  # pragma: no cover - abstract
        raise NotImplementedError

    def _g_loss(self, fake_out, real_out, *, fake):  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class VanillaGANLoss(GANLoss):
    """The original minimax GAN with the non-saturating generator loss, on logits.

    D: L_D = -E[log D(x)] - E[log(1 - D(G(z)))]  (Goodfellow et al. 2014, eq. 1; SRGAN,
    Ledig et al. 2017, eq. 2; the sharpness GAN's eq. 7).
    G: L_G = -E[log D(G(z))]  (Goodfellow et al. 2014, Sec. 3; SRGAN eq. 6; sharpness GAN eq. 6).
    D(.) = sigmoid(logit); both computed with ``binary_cross_entropy_with_logits``.
    """

    kind = "vanilla"

    def _d_loss(self, real_out, fake_out, **_):
        l_real, l_fake = _bce(real_out, 1.0), _bce(fake_out, 0.0)
        self.last_stats = {"d_real": l_real.detach(), "d_fake": l_fake.detach()}
        return l_real + l_fake

    def _g_loss(self, fake_out, real_out, **_):
        return _bce(fake_out, 1.0)


class LSGANLoss(GANLoss):
    """Least-squares GAN with the 0-1 coding (a = 0, b = c = 1).

    D: L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2];  G: L_G = 1/2 E[(D(G(z)) - 1)^2]
    (Mao et al. 2017, "Least Squares GANs", eq. 2). BasicSR's ``lsgan`` omits the 1/2.
    """

    kind = "lsgan"

    def _d_loss(self, real_out, fake_out, **_):
        return 0.5 * (real_out - 1).square().mean() + 0.5 * fake_out.square().mean()

    def _g_loss(self, fake_out, real_out, **_):
        return 0.5 * (fake_out - 1).square().mean()


class WGANLoss(GANLoss):
    """Wasserstein GAN with weight clipping: the EM-distance loss of the NonBN residual GAN.

    Critic: l_D = E[D(G(LR))] - E[D(HR)]  (the EM paper's eq. 9; Arjovsky et al. 2017, Alg. 1),
    then every critic weight clipped to [-clip_value, clip_value] by
    :meth:`post_discriminator_step` (Arjovsky et al.: c = 0.01).
    Generator: l_Gen = -E[D(G(LR))]  (the EM paper's eq. 8), used there as
    l_G = l_L1 + 1e-3 * l_Gen. The critic has no sigmoid.
    ``last_stats["wasserstein"]`` is E[D(HR)] - E[D(G(LR))], the critic's estimate of the
    EM distance (up to the Lipschitz constant).

    Args:
        clip_value: c > 0; ``None`` disables clipping (then some other Lipschitz constraint
            is needed, e.g. :class:`WGANGPLoss`).
    """

    kind = "wgan"

    def __init__(self, clip_value: float | None = 0.01) -> None:
        super().__init__()
        if clip_value is not None and not (isinstance(clip_value, (int, float)) and clip_value > 0):
            raise ValueError(f"WGANLoss: clip_value must be a number > 0 or None, got {clip_value!r}")
        self.clip_value = clip_value

    def _d_loss(self, real_out, fake_out, **_):
        w = real_out.mean() - fake_out.mean()
        self.last_stats = {"wasserstein": w.detach()}
        return -w

    def _g_loss(self, fake_out, real_out, **_):
        return -fake_out.mean()

    def post_discriminator_step(self, critic: nn.Module) -> None:
        if self.clip_value is not None:
            clip_weights_(critic, self.clip_value)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, clip_value={self.clip_value}"


class WGANGPLoss(WGANLoss):
    """WGAN with gradient penalty (Gulrajani et al. 2017, eq. 3 and Alg. 1).

    Critic: L = E[D(G(z))] - E[D(x)] + lambda E[(||grad_x~ D(x~)||_2 - 1)^2],
    x~ = eps x + (1 - eps) G(z), eps ~ U[0, 1] per sample, lambda = 10.
    Generator: -E[D(G(z))]. ``discriminator_loss`` needs ``real=``, ``fake=`` (the images)
    and ``critic=`` (the module) to compute the penalty; no weight clipping.
    """

    kind = "wgan-gp"
    needs_critic = True
    needs_images = True

    def __init__(self, gp_weight: float = 10.0) -> None:
        super().__init__(clip_value=None)
        if not (isinstance(gp_weight, (int, float)) and gp_weight >= 0):
            raise ValueError(f"WGANGPLoss: gp_weight must be a number >= 0, got {gp_weight!r}")
        self.gp_weight = gp_weight

    def _d_loss(self, real_out, fake_out, *, real, fake, critic):
        if critic is None or real is None or fake is None:
            raise ValueError(
                "WGANGPLoss.discriminator_loss: the gradient penalty needs critic=, real= and fake= "
                "(the critic module and the HR / SR image batches)"
            )
        loss = super()._d_loss(real_out, fake_out)
        gp = gradient_penalty(critic, real, fake)
        self.last_stats["gradient_penalty"] = gp.detach()
        return loss + self.gp_weight * gp

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, gp_weight={self.gp_weight}"


class HingeGANLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018, eq. 16).

    D: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))];  G: -E[D(G(z))].
    """

    kind = "hinge"

    def _d_loss(self, real_out, fake_out, **_):
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()

    def _g_loss(self, fake_out, real_out, **_):
        return -fake_out.mean()


class RelativisticGANLoss(GANLoss):
    """Relativistic average GAN of ESRGAN (Wang et al. 2018, Sec. 3.2; Jolicoeur-Martineau 2018).

    D_Ra(x_r, x_f) = sigma(C(x_r) - E[C(x_f)]), the mean over the batch.
    D: L_D^Ra = -E[log D_Ra(x_r, x_f)] - E[log(1 - D_Ra(x_f, x_r))]  (ESRGAN eq. 1).
    G: L_G^Ra = -E[log(1 - D_Ra(x_r, x_f))] - E[log D_Ra(x_f, x_r)]  (ESRGAN eq. 2); G
    gets gradients from both terms, so ``generator_loss`` needs ``real_out`` (pass
    D(hr) detached). BasicSR's ESRGAN halves both sums; this follows the paper.
    ``real_out`` and ``fake_out`` must have the same shape.
    """

    kind = "ragan"
    needs_real_for_generator = True

    @staticmethod
    def _rel(real_out, fake_out, fn):
        if real_out.shape != fake_out.shape:
            raise ValueError(
                f"{fn}: real_out and fake_out must have the same shape, got {tuple(real_out.shape)} "
                f"and {tuple(fake_out.shape)}"
            )
        return real_out - fake_out.mean(), fake_out - real_out.mean()

    def _d_loss(self, real_out, fake_out, **_):
        r, f = self._rel(real_out, fake_out, "RelativisticGANLoss.discriminator_loss")
        return _bce(r, 1.0) + _bce(f, 0.0)

    def _g_loss(self, fake_out, real_out, **_):
        if real_out is None:
            raise ValueError("RelativisticGANLoss.generator_loss needs real_out (D(hr), detached)")
        r, f = self._rel(real_out, fake_out, "RelativisticGANLoss.generator_loss")
        return _bce(r, 0.0) + _bce(f, 1.0)


class BEGANLoss(GANLoss):
    """Boundary equilibrium GAN (Berthelot et al. 2017), as in the attentive GAN (its eq. 11-15).

    D is an auto-encoder; L(v) = E|v - D(v)| (BEGAN eq. 1 with eta = 1; the L1 of the
    attentive GAN's eq. 10, 12, 13).
    D: L_D = L(x) - k_t L(G(z));  G: L_G = L(G(z));
    k_{t+1} = clamp(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)  (BEGAN eq. 4 / attentive
    GAN eq. 11; BEGAN clamps k to [0, 1], Sec. 3.3). gamma = E[L(G(z))] / E[L(x)] is the
    diversity ratio (eq. 15); the convergence measure
    M_global = L(x) + |gamma L(x) - L(G(z))|  (BEGAN Sec. 3.4.1) is reported in
    ``last_stats["convergence"]``.

    Calls: ``discriminator_loss(D(hr), D(sr_detached), real=hr, fake=sr_detached)`` uses
    k_t and then, in training mode (``update_k=None``) or when ``update_k=True``, sets k to
    k_{t+1} from the L(x), L(G(z)) of that call (BEGAN updates k once per step with the
    same two values); ``generator_loss(D(sr), fake=sr)`` returns L(G(z)).

    Args:
        gamma: the equilibrium target in (0, 1] (BEGAN uses 0.3-0.7; default 0.5).
        lambda_k: the proportional gain of k (BEGAN: 0.001).
        k_init: k_0 in [0, 1] (BEGAN: 0).

    State: buffer ``k`` (float64 scalar), saved in ``state_dict``.
    """

    kind = "began"
    needs_images = True

    def __init__(self, gamma: float = 0.5, lambda_k: float = 1e-3, k_init: float = 0.0) -> None:
        super().__init__()
        if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):
            raise ValueError(f"BEGANLoss: gamma must be in (0, 1], got {gamma!r}")
        if not (isinstance(lambda_k, (int, float)) and lambda_k >= 0):
            raise ValueError(f"BEGANLoss: lambda_k must be >= 0, got {lambda_k!r}")
        if not (isinstance(k_init, (int, float)) and 0 <= k_init <= 1):
            raise ValueError(f"BEGANLoss: k_init must be in [0, 1], got {k_init!r}")
        self.gamma, self.lambda_k = float(gamma), float(lambda_k)
        self.register_buffer("k", torch.tensor(float(k_init), dtype=torch.float64))

    @staticmethod
    def reconstruction_loss(image: torch.Tensor, recon: torch.Tensor, fn: str = "BEGANLoss") -> torch.Tensor:
        """L(v) = mean |v - D(v)| over all elements (scalar)."""
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"{fn}: the images (real=/fake=) are needed to compute L(v) = |v - D(v)|")
        if image.shape != recon.shape:
            raise ValueError(
                f"{fn}: the auto-encoder output must have the image's shape, got {tuple(recon.shape)} "
                f"for an image of shape {tuple(image.shape)}"
            )
        return (image - recon).abs().mean()

    def convergence(self, l_real: torch.Tensor, l_fake: torch.Tensor) -> torch.Tensor:
        """M_global = L(x) + |gamma L(x) - L(G(z))| (BEGAN Sec. 3.4.1)."""
        return l_real + (self.gamma * l_real - l_fake).abs()

    @torch.no_grad()
    def update_k(self, l_real: torch.Tensor, l_fake: torch.Tensor) -> torch.Tensor:
        """k <- clamp(k + lambda_k (gamma L(x) - L(G(z))), 0, 1); returns the new k."""
        balance = self.gamma * torch.as_tensor(l_real, dtype=torch.float64) - torch.as_tensor(l_fake, dtype=torch.float64)
        self.k.copy_((self.k + self.lambda_k * balance.to(self.k.device)).clamp(0.0, 1.0))
        return self.k.clone()

    def discriminator_loss(self, real_out, fake_out, *, real=None, fake=None, critic=None, update_k=None):
        fn = "BEGANLoss.discriminator_loss"
        _check_out(real_out, "real_out", fn)
        _check_out(fake_out, "fake_out", fn)
        l_real = self.reconstruction_loss(real, real_out, fn)
        l_fake = self.reconstruction_loss(fake, fake_out, fn)
        loss = l_real - self.k.to(l_real.dtype) * l_fake
        stats = {
            "k": self.k.detach().clone(),
            "l_real": l_real.detach(),
            "l_fake": l_fake.detach(),
            "convergence": self.convergence(l_real.detach(), l_fake.detach()),
        }
        if (self.training if update_k is None else update_k):
            self.update_k(l_real.detach(), l_fake.detach())
        self.last_stats = stats
        return loss

    def generator_loss(self, fake_out, real_out=None, *, fake=None, real=None):
        fn = "BEGANLoss.generator_loss"
        _check_out(fake_out, "fake_out", fn)
        return self.reconstruction_loss(fake, fake_out, fn)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, gamma={self.gamma}, lambda_k={self.lambda_k}, k={self.k.item():.6g}"


GAN_LOSSES: dict[str, type[GANLoss]] = {
    cls.kind: cls
    for cls in (VanillaGANLoss, LSGANLoss, WGANLoss, WGANGPLoss, HingeGANLoss, RelativisticGANLoss, BEGANLoss)
}


def build_gan_loss(kind: str, **kwargs) -> GANLoss:
    """The GAN loss of ``kind`` (one of ``GAN_LOSSES``: vanilla, lsgan, wgan, wgan-gp, hinge,
    ragan, began), constructed with ``kwargs``. Raises ValueError for an unknown kind."""
    key = kind.lower().replace("_", "-") if isinstance(kind, str) else kind
    if key not in GAN_LOSSES:
        raise ValueError(f"build_gan_loss: unknown kind {kind!r}; expected one of {sorted(GAN_LOSSES)}")
    return GAN_LOSSES[key](**kwargs)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x~ critic(x~)||_2 - 1)^2] with x~ = eps real + (1 - eps) fake, eps ~ U[0, 1]
    per sample (Gulrajani et al. 2017, eq. 3). ``fake`` is detached; the graph is kept
    (``create_graph=True``) so the penalty trains the critic. Returns a scalar (no lambda).

    Raises:
        ValueError: ``real`` and ``fake`` of different shapes.
    """
    if not isinstance(real, torch.Tensor) or not isinstance(fake, torch.Tensor):
        raise TypeError("gradient_penalty: real and fake must be tensors")
    if real.shape != fake.shape:
        raise ValueError(
            f"gradient_penalty: real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        out = critic(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, clip_value: float = 0.01) -> None:
    """Clamp every parameter of ``module`` to [-clip_value, clip_value] in place (WGAN,
    Arjovsky et al. 2017, Alg. 1 line 7)."""
    if not (isinstance(clip_value, (int, float)) and clip_value > 0):
        raise ValueError(f"clip_weights_: clip_value must be > 0, got {clip_value!r}")
    for p in module.parameters():
        p.clamp_(-clip_value, clip_value)
