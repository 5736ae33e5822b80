"""Running a trained generator: whole images with optional tiling, and the SR-vs-bicubic
PSNR/SSIM table of the SR papers.

This is the one evaluation loop of fastsr: the trainer's validation
(:meth:`fastsr.train.Trainer.validate`), ``fastsr eval``, ``fastsr upscale`` and
``scripts/ship_pretrained.py`` all call :func:`upscale_image` / :func:`evaluate`. Metrics
follow the papers' convention (:mod:`fastsr.metrics`): Y channel of BT.601 YCbCr,
``crop_border = scale``, images quantised to 8 bits, float64 arithmetic.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from fastsr import metrics
from fastsr.data import degrade, imresize, sample_images
from fastsr.data.datasets import mod_crop
from fastsr.models.checkpoint import load_generator

__all__ = ["load_generator", "upscale_image", "bicubic_upscale", "sample_pairs", "evaluate", "EvalResult",
           "y_psnr_ssim"]

#: ``(name, lr, hr)``: an LR image (3, h, w) and its HR image (3, h*scale, w*scale), in [0, 1]
Pair = tuple[str, torch.Tensor, torch.Tensor]


@torch.no_grad()
def upscale_image(model: nn.Module, lr: torch.Tensor, scale: int, tile: int = 0, tile_pad: int = 16,
                  autocast_bf16: bool = False,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Run ``model`` on an LR image (1, 3, h, w) in [0, 1]; returns (1, 3, h*scale, w*scale)
    float32 in [0, 1] on the CPU.

    With ``tile > 0`` the image is processed in ``tile`` x ``tile`` LR tiles, each with
    ``tile_pad`` LR pixels of context on every side (clipped at the image border) that are
    cut from the output. The result equals the untiled one (up to float rounding) whenever
    the generator's receptive-field radius is at most ``tile_pad`` LR pixels and it has no
    batch-dependent layers in eval mode; for deeper models the seams differ by far less than
    one 8-bit level with the default pad on natural images, which ``fastsr upscale`` does
    not guarantee -- raise ``tile_pad`` if in doubt. Memory is bounded by one padded tile.

    Args:
        model: the generator, on the device it runs on (the input is moved there).
        autocast_bf16: bfloat16 autocast of the model.
        memory_format: the layout the input is given to the model in (``channels_last`` for a
            channels_last model).

    Raises:
        ValueError: bad shape, ``tile`` < 0 or ``tile_pad`` < 0.
    """
    if lr.dim() != 4 or lr.shape[:2] != (1, 3):
        raise ValueError(f"upscale_image: lr must be a (1, 3, h, w) tensor, got {tuple(lr.shape)}")
    if tile < 0 or tile_pad < 0:
        raise ValueError(f"upscale_image: tile and tile_pad must be >= 0, got {tile}, {tile_pad}")
    dev = next(model.parameters()).device
    ctx = torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if autocast_bf16 else nullcontext()

    def run(x):
        with ctx:
            return model(x.to(dev, memory_format=memory_format)).float().clamp_(0, 1).cpu()

    _, _, h, w = lr.shape
    if tile == 0 or (h <= tile and w <= tile):
        return run(lr)
    out = torch.zeros(1, 3, h * scale, w * scale)
    for ty in range(math.ceil(h / tile)):
        for tx in range(math.ceil(w / tile)):
            y0, x0 = ty * tile, tx * tile
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            sr = run(lr[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                sr[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline of the papers' tables: MATLAB ``imresize`` of (N, C, h, w) by
    ``scale`` (antialiased bicubic, :func:`fastsr.data.imresize`), clamped to [0, 1];
    ``lr`` itself for ``scale == 1``."""
    return imresize(lr, float(scale)).clamp(0, 1) if scale > 1 else lr


def sample_pairs(scale: int) -> list[Pair]:
    """The held-back sample photographs (:func:`fastsr.data.sample_images` ``("val")``) as
    full images: HR mod-cropped to ``scale``, LR by the default bicubic degradation."""
    out = []
    for name, hr in sample_images("val"):
        hr = mod_crop(hr, scale).contiguous()
        out.append((name, degrade(hr, scale) if scale > 1 else hr, hr))
    return out


@dataclass
class EvalResult:
    """Per-image Y-channel PSNR (dB), SSIM and mean colour error of the SR output and, when
    computed, of bicubic.

    ``sr_mean_error`` / ``bicubic_mean_error`` hold one ``[R, G, B]`` per image: the mean of
    ``SR - HR`` per channel in 8-bit levels (:func:`fastsr.metrics.channel_mean_error`,
    ``crop_border = scale``), the colour cast that PSNR on Y barely shows.
    """

    names: list[str] = field(default_factory=list)
    sr_psnr: list[float] = field(default_factory=list)
    sr_ssim: list[float] = field(default_factory=list)
    bicubic_psnr: list[float] = field(default_factory=list)
    bicubic_ssim: list[float] = field(default_factory=list)
    sr_mean_error: list[list[float]] = field(default_factory=list)
    bicubic_mean_error: list[list[float]] = field(default_factory=list)

    def columns(self) -> dict[str, list[float]]:
        """The table's columns: ``Bicubic PSNR``, ``Bicubic SSIM``, ``Bicubic err R/G/B``
        (when bicubic was computed), then ``SR PSNR``, ``SR SSIM``, ``SR err R/G/B``."""
        cols = {}
        for label, p, s, e in (("Bicubic", self.bicubic_psnr, self.bicubic_ssim, self.bicubic_mean_error),
                               ("SR", self.sr_psnr, self.sr_ssim, self.sr_mean_error)):
            if not p:
                continue
            cols.update({f"{label} PSNR": p, f"{label} SSIM": s})
            if e:
                cols.update({f"{label} err {ch}": [v[c] for v in e] for c, ch in enumerate("RGB")})
        return cols

    def table(self, title: str | None = None) -> str:
        """The per-image + mean table (:func:`fastsr.metrics.format_table`); the mean-error
        columns have 2 decimals (8-bit levels)."""
        cols = self.columns()
        return metrics.format_table(self.names, cols, title=title, digits={h: 2 for h in cols if " err " in h})

    def rows(self) -> dict[str, dict]:
        """``{name: {"psnr", "ssim", "mean_error_rgb"[, "bicubic_psnr", "bicubic_ssim",
        "bicubic_mean_error_rgb"]}}`` (``*_mean_error_rgb``: ``[R, G, B]`` in 8-bit levels)."""
        out = {}
        for i, name in enumerate(self.names):
            row = {}
            if self.bicubic_psnr:
                row = {"bicubic_psnr": self.bicubic_psnr[i], "bicubic_ssim": self.bicubic_ssim[i]}
                if self.bicubic_mean_error:
                    row["bicubic_mean_error_rgb"] = list(self.bicubic_mean_error[i])
            row.update(psnr=self.sr_psnr[i], ssim=self.sr_ssim[i])
            if self.sr_mean_error:
                row["mean_error_rgb"] = list(self.sr_mean_error[i])
            out[name] = row
        return out

    def mean(self) -> dict:
        """Means over the images, keyed like :meth:`rows` (NaN for an empty result; the
        ``*_mean_error_rgb`` entries are ``[R, G, B]`` means)."""
        def avg(v):
            return sum(v) / len(v) if v else float("nan")

        out = {"psnr": avg(self.sr_psnr), "ssim": avg(self.sr_ssim)}
        if self.sr_mean_error:
            out["mean_error_rgb"] = [avg([e[c] for e in self.sr_mean_error]) for c in range(3)]
        if self.bicubic_psnr:
            out.update(bicubic_psnr=avg(self.bicubic_psnr), bicubic_ssim=avg(self.bicubic_ssim))
            if self.bicubic_mean_error:
                out["bicubic_mean_error_rgb"] = [avg([e[c] for e in self.bicubic_mean_error]) for c in range(3)]
        return out


def y_psnr_ssim(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> tuple[list[float], list[float]]:
    """Per-image Y-channel PSNR (dB) and SSIM of (N, 3, H, W) images in [0, 1] with
    ``crop_border = scale`` (:func:`fastsr.metrics.psnr` / :func:`~fastsr.metrics.ssim`)."""
    p = metrics.psnr(sr, hr, crop_border=scale, test_y_channel=True)
    s = metrics.ssim(sr, hr, crop_border=scale, test_y_channel=True)
    return p.tolist(), s.tolist()


def _mean_error(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> list[list[float]]:
    """Per image ``[R, G, B]`` mean ``SR - HR`` in 8-bit levels (``crop_border = scale``)."""
    return metrics.channel_mean_error(sr, hr, crop_border=scale).tolist()


def evaluate(model: nn.Module, pairs: Iterable[Pair], scale: int, *, tile: int = 0, tile_pad: int = 16,
             bf16: bool = False, memory_format: torch.memory_format = torch.contiguous_format,
             bicubic: bool = True,
             on_image: Callable[[str, torch.Tensor, torch.Tensor | None, torch.Tensor], None] | None = None,
             ) -> EvalResult:
    """PSNR/SSIM of ``model`` (and of bicubic) on ``pairs``, the papers' convention: Y
    channel, ``crop_border = scale``, 8-bit quantised images; and the mean colour error
    ``SR - HR`` per RGB channel in 8-bit levels (:func:`fastsr.metrics.channel_mean_error`).

    The model runs in eval mode (its mode is restored afterwards) through
    :func:`upscale_image` with ``tile``, ``tile_pad``, ``bf16`` autocast and
    ``memory_format``.

    Args:
        pairs: ``(name, lr, hr)`` with lr (3, h, w) and hr (3, h*scale, w*scale) in [0, 1].
        bicubic: also measure :func:`bicubic_upscale` of each LR image.
        on_image: called as ``on_image(name, sr, bicubic_or_None, hr)`` with (3, H, W) images
            (to save them).

    Raises:
        ValueError: an HR image whose size is not ``scale`` times its LR image's; the errors
            of :func:`upscale_image` and :func:`fastsr.metrics.psnr`.
    """
    result = EvalResult()
    was_training = model.training
    model.eval()
    try:
        for name, lr, hr in pairs:
            sr = upscale_image(model, lr[None], scale, tile, tile_pad, bf16, memory_format)
            if sr.shape[-2:] != hr.shape[-2:]:
                raise ValueError(f"evaluate: {name}: the SR image is {tuple(sr.shape[-2:])} but the HR image is "
                                 f"{tuple(hr.shape[-2:])} (LR {tuple(lr.shape[-2:])}, scale {scale})")
            p, s = y_psnr_ssim(sr, hr[None], scale)
            result.names.append(name)
            result.sr_psnr += p
            result.sr_ssim += s
            result.sr_mean_error += _mean_error(sr, hr[None], scale)
            bic = None
            if bicubic:
                bic = bicubic_upscale(lr[None], scale)
                p, s = y_psnr_ssim(bic, hr[None], scale)
                result.bicubic_psnr += p
                result.bicubic_ssim += s
                result.bicubic_mean_error += _mean_error(bic, hr[None], scale)
            if on_image is not None:
                on_image(name, sr[0], None if bic is None else bic[0], hr)
    finally:
        model.train(was_training)
    return result
