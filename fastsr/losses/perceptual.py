"""Perceptual (VGG feature) and texture (Gram matrix) losses on a frozen VGG19.

Both take SR and HR images (N, 3, H, W) with values in [0, 1] (or [-1, 1] with
``input_range=(-1, 1)``), normalise them with the ImageNet mean/std the torchvision weights
expect, and compare VGG19 features of named layers (:mod:`fastsr.losses.vgg`). The VGG19
is frozen: eval mode (kept by :meth:`train`), ``requires_grad=False`` on its weights, the
HR features computed without a graph; gradients flow to the SR input only. The VGG
weights are a submodule, so ``.to(device)`` moves them and they are in ``state_dict()``.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastsr.losses.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG19Features, layer_stride, load_vgg19_state_dict

SRGAN_FEATURE_SCALE = 1.0 / 12.75
"""SRGAN rescales the VGG feature maps by 1/12.75 (Ledig et al. 2017, Sec. 3.4), which makes
the VGG loss comparable in size to the MSE loss; pass as ``feature_scale``."""


def _check_pair(sr, hr, fn):
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must be floating point, got {t.dtype}")
    if sr.dim() != 4 or sr.shape[1] != 3:
        raise ValueError(f"{fn}: sr must be an (N, 3, H, W) RGB batch, got shape {tuple(sr.shape)}")
    if sr.shape != hr.shape:
        raise ValueError(f"{fn}: sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    if sr.device != hr.device:
        raise ValueError(f"{fn}: sr and hr must be on the same device, got {sr.device} and {hr.device}")


def _layer_weights(layer_weights, fn) -> dict[str, float]:
    if isinstance(layer_weights, str):
        layer_weights = {layer_weights: 1.0}
    elif not isinstance(layer_weights, Mapping):
        layer_weights = {name: 1.0 for name in layer_weights}
    if not layer_weights:
        raise ValueError(f"{fn}: layer_weights is empty")
    out = {}
    for name, w in layer_weights.items():
        layer_stride(name)  # validates the name
        out[name] = float(w)
    return out


class _FrozenVGG19Loss(nn.Module):
    def __init__(self, layer_weights, weights, input_range, fn):
        super().__init__()
        self.layer_weights = _layer_weights(layer_weights, fn)
        if tuple(input_range) not in ((0, 1), (-1, 1)):
            raise ValueError(f"{fn}: input_range must be (0, 1) or (-1, 1), got {input_range!r}")
        self.input_range = tuple(float(v) for v in input_range)
        state = load_vgg19_state_dict(weights)
        with torch.device("meta"):  # no random init of 20M weights that are overwritten next
            self.vgg = VGG19Features()
        self.vgg.load_state_dict(state, assign=True)
        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # always frozen
        return self

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_range == (-1.0, 1.0):
            x = (x + 1) * 0.5
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def _features(self, sr, hr):
        layers = list(self.layer_weights)
        f_sr = self.vgg.extract(self._normalise(sr), layers)
        with torch.no_grad():
            f_hr = self.vgg.extract(self._normalise(hr.detach()), layers)
        return f_sr, f_hr


class PerceptualLoss(_FrozenVGG19Loss):
    """VGG19 feature loss: sum_l w_l * crit(s * phi_l(SR), s * phi_l(HR)).

    phi_l are the features of layer l (``conv5_4`` before activation as ESRGAN, Wang et al.
    2018 Sec. 3.3; ``relu5_4`` as SRGAN's VGG54, Ledig et al. 2017 eq. 5; ``pool2`` +
    ``pool5`` fused as the sharpness GAN's eq. 4), crit the mean absolute (``"l1"``) or
    mean squared (``"l2"``) difference over all elements, s the ``feature_scale``
    (:data:`SRGAN_FEATURE_SCALE` = 1/12.75 for SRGAN).

    Args:
        layer_weights: ``{layer name: weight}``, a list of names (weight 1) or one name.
            Default ``{"conv5_4": 1.0}`` (ESRGAN).
        criterion: ``"l1"`` (ESRGAN) or ``"l2"`` (SRGAN, sharpness GAN).
        feature_scale: s, multiplies the features before the criterion.
        weights: path of the VGG19 weights file; default ``$FASTSR_VGG19_WEIGHTS`` (see
            :func:`fastsr.losses.vgg.load_vgg19_state_dict`). Never downloaded.
        input_range: value range of the images, (0, 1) or (-1, 1).

    Forward: ``loss(sr, hr)`` with (N, 3, H, W) float tensors of the same shape (H, W at
    least the stride of the deepest layer, 32 for pool5); returns a scalar in sr's dtype.

    Raises:
        FileNotFoundError: no weights file (the message says how to provide it).
        ValueError: unknown layer or criterion, bad shapes; TypeError: non-float input.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] | Sequence[str] | str = (("conv5_4", 1.0),),
        criterion: str = "l1",
        feature_scale: float = 1.0,
        weights: str | os.PathLike | None = None,
        input_range: tuple[float, float] = (0, 1),
    ) -> None:
        if isinstance(layer_weights, tuple) and layer_weights and isinstance(layer_weights[0], tuple):
            layer_weights = dict(layer_weights)
        if criterion not in ("l1", "l2"):
            raise ValueError(f"PerceptualLoss: criterion must be 'l1' or 'l2', got {criterion!r}")
        if not (isinstance(feature_scale, (int, float)) and feature_scale > 0):
            raise ValueError(f"PerceptualLoss: feature_scale must be a number > 0, got {feature_scale!r}")
        super().__init__(layer_weights, weights, input_range, "PerceptualLoss")
        self.criterion = criterion
        self.feature_scale = float(feature_scale)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair(sr, hr, "PerceptualLoss")
        f_sr, f_hr = self._features(sr, hr)
        crit = F.l1_loss if self.criterion == "l1" else F.mse_loss
        s = self.feature_scale
        loss = sr.new_zeros(())
        for name, w in self.layer_weights.items():
            loss = loss + w * crit(f_sr[name] * s, f_hr[name] * s)
        return loss

    def extra_repr(self) -> str:
        return f"layer_weights={self.layer_weights}, criterion={self.criterion!r}, feature_scale={self.feature_scale:.6g}"


def gram_patches(feat: torch.Tensor, patch: int) -> torch.Tensor:
    """Gram matrices of the non-overlapping ``patch`` x ``patch`` tiles of a feature map.

    feat (N, C, H, W) -> (N, P, C, C) with P = (H // patch) * (W // patch) tiles (rows and
    columns beyond the last whole tile are dropped); Gr(F) = F F^T / (C patch^2), F the
    tile as a C x patch^2 matrix (the sharpness GAN's eq. 5; normalised as Gatys et al.,
    the survey's eq. 4). Computed in float32 at least.
    """
    N, C, H, W = feat.shape
    nh, nw = H // patch, W // patch
    f = feat[:, :, : nh * patch, : nw * patch]
    if f.dtype in (torch.float16, torch.bfloat16):
        f = f.float()
    f = f.reshape(N, C, nh, patch, nw, patch).permute(0, 2, 4, 1, 3, 5).reshape(N, nh * nw, C, patch * patch)
    return f @ f.transpose(-1, -2) / (C * patch * patch)


class TextureLoss(_FrozenVGG19Loss):
    """Patch-wise texture loss: sum_l w_l * mean over tiles of ||Gr(phi_l(SR)) - Gr(phi_l(HR))||_F^2.

    The sharpness GAN (its Sec. 2.4.3, eq. 5: l_tex = ||Gr(phi(G(I_B))) - Gr(phi(I_T))||_2^2,
    Gr(F) = F F^T) computes the Gram-matrix texture loss of Ulyanov et al. / Gatys et al.
    per block rather than over the whole image, so the network matches local textures. It
    does not state the layers, the block size or the normalisation; this class tiles each
    feature map into the VGG footprint of ``patch_size`` x ``patch_size`` image pixels
    (``patch_size / stride`` feature pixels), normalises each Gram matrix by C * tile area,
    takes the squared Frobenius norm of the difference per tile and averages over tiles and
    images. The defaults (relu2_1 and relu3_1, 16-pixel patches) are ours, in the spirit of
    EnhanceNet's patch-wise texture loss (Sajjadi et al. 2017).

    Args:
        layer_weights: as :class:`PerceptualLoss`; default ``{"relu2_1": 1, "relu3_1": 1}``.
        patch_size: tile side in image pixels; must be a multiple of every chosen layer's
            stride (1 for block 1, 2 for pool1/block 2, ..., 32 for pool5).
        weights, input_range: as :class:`PerceptualLoss`.

    Forward: ``loss(sr, hr)``, (N, 3, H, W) with H, W >= patch_size; scalar.

    Raises:
        ValueError: ``patch_size`` not a positive multiple of a layer's stride, images
            smaller than one patch, bad shapes; FileNotFoundError: no weights file.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] | Sequence[str] | str = ("relu2_1", "relu3_1"),
        patch_size: int = 16,
        weights: str | os.PathLike | None = None,
        input_range: tuple[float, float] = (0, 1),
    ) -> None:
        lw = _layer_weights(layer_weights, "TextureLoss")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"TextureLoss: patch_size must be an int >= 1, got {patch_size!r}")
        for name in lw:
            s = layer_stride(name)
            if patch_size % s:
                raise ValueError(
                    f"TextureLoss: patch_size={patch_size} must be a multiple of the stride {s} of layer {name!r}"
                )
        super().__init__(lw, weights, input_range, "TextureLoss")
        self.patch_size = patch_size

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair(sr, hr, "TextureLoss")
        H, W = sr.shape[-2:]
        if H < self.patch_size or W < self.patch_size:
            raise ValueError(f"TextureLoss: images ({H}x{W}) are smaller than one patch ({self.patch_size})")
        f_sr, f_hr = self._features(sr, hr)
        loss = None
        for name, w in self.layer_weights.items():
            p = self.patch_size // layer_stride(name)
            diff = gram_patches(f_sr[name], p) - gram_patches(f_hr[name], p)
            term = w * diff.square().sum(dim=(-2, -1)).mean()
            loss = term if loss is None else loss + term
        return loss.to(sr.dtype)

    def extra_repr(self) -> str:
        return f"layer_weights={self.layer_weights}, patch_size={self.patch_size}"
