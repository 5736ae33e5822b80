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
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from fastsr import metrics
from fastsr.data import degrade, imresize, sample_images
from fastsr.data.datasets import mod_crop
from fastsr.errors import CheckpointError, UserError
from fastsr.models.checkpoint import load_generator
from fastsr.perf import native_bf16

__all__ = ["load_generator", "upscale_image", "bicubic_upscale", "sample_pairs", "evaluate", "EvalResult",
           "y_psnr_ssim", "PRECISIONS", "resolve_precision", "auto_tile", "free_memory", "tile_starts",
           "tile_weights", "NonFiniteOutputError", "check_cuda", "min_hr_side"]

#: ``(name, lr, hr)``: an LR image (3, h, w) and its HR image (3, h*scale, w*scale), in [0, 1]
Pair = tuple[str, torch.Tensor, torch.Tensor]


#: the ``precision`` values of :func:`upscale_image` (``auto``: see :func:`resolve_precision`)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteOutputError(CheckpointError):
    """The model's output has NaN or Inf values even in float32: its weights (or the input)
    hold non-finite values, e.g. a checkpoint saved from a diverged training run."""


def check_cuda() -> None:
    """Nothing when CUDA is available.

    Raises:
        UserError: ``--device cuda`` without CUDA, saying why (a CPU-only build of torch or
            no visible device) in one line.
    """
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise UserError(f"--device cuda: CUDA is not available ({why}; torch {torch.__version__})")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision :func:`upscale_image` runs in: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` is ``fp16`` on CUDA (the usual choice of SR upscalers; a tile that overflows is
    recomputed in fp32); on the CPU ``bf16`` where it computes bfloat16 natively (AVX512-BF16
    or AMX, :func:`fastsr.perf.native_bf16`: about 2x the fp32 speed of a Zen 4 core and more
    with AMX, at most a few hundredths of a dB of Y-PSNR on photographs) and ``fp32``
    elsewhere (emulated bf16 is slower than fp32).

    Raises:
        ValueError: ``precision`` not in :data:`PRECISIONS`, or ``fp16`` on a CPU device
            (fastsr's CPU kernels run fp32 and bf16 only).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device)
    if precision == "auto":
        if dev.type == "cuda":
            return "fp16"
        return "bf16" if dev.type == "cpu" and native_bf16(dev) else "fp32"
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (fastsr's {dev.type} kernels run fp32 and bf16); "
                         "use bf16 or fp32")
    return precision


def free_memory(device: torch.device | str) -> int:
    """Bytes that a computation on ``device`` may still allocate: on CUDA the driver's free
    memory (``torch.cuda.mem_get_info``) plus what torch's caching allocator holds unused; on
    the CPU the available RAM (psutil when installed, else ``MemAvailable`` of
    ``/proc/meminfo``, else 2 GiB)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def auto_tile(model: nn.Module, channels: int = 3, tile_pad: int = 16, precision: str = "fp32",
              budget: float = 0.5, probe: int = 32, free: int | None = None) -> int:
    """An LR tile side for :func:`upscale_image` that fits ``budget`` of the free memory of
    the model's device (:func:`free_memory`, or ``free`` bytes when given).

    The memory per LR pixel is measured by running the model once on a ``probe`` x
    ``probe`` input and taking three times its largest intermediate tensor (the input,
    output and one temporary of the widest layer live at once without autograd). The tile
    is a multiple of 8, at least ``2 * tile_pad + 8`` and at most 4096.

    Raises:
        ValueError: ``budget`` not in (0, 1], ``probe`` < 8, or the errors of
            :func:`resolve_precision`.
    """
    if not 0 < budget <= 1:
        raise ValueError(f"auto_tile: budget must be in (0, 1], got {budget}")
    if probe < 8:
        raise ValueError(f"auto_tile: probe must be >= 8, got {probe}")
    dev = next(model.parameters()).device
    prec = resolve_precision(precision, dev)
    peak = 0

    def hook(_module, _inputs, output):
        nonlocal peak
        if isinstance(output, torch.Tensor):
            peak = max(peak, output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), _autocast(dev, prec):
            model(torch.zeros(1, channels, probe, probe, device=dev))
    finally:
        for h in handles:
            h.remove()
    per_px = max(3 * peak, 1) / probe ** 2
    avail = free_memory(dev) if free is None else free
    side = int(math.sqrt(budget * avail / per_px)) // 8 * 8
    return max(min(side, 4096), 2 * tile_pad + 8)


def _autocast(dev: torch.device, precision: str):
    """Autocast for ``precision``, without autocast's cache of cast weights: a forward uses
    each weight once, and a CUDA graph replay (:class:`fastsr.graphs.GraphedModule`) must
    not read a cached copy that the end of an earlier autocast region freed."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=dev.type, dtype=_DTYPES[precision], cache_enabled=False)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e)))


def tile_starts(n: int, t: int, pad: int) -> list[int]:
    """Start offsets of tiles of length ``t`` covering ``0..n`` with neighbours overlapping
    by at least ``2 * pad``; the last tile ends at ``n`` (its overlap may be larger) so every
    tile has length ``t``. ``[0]`` when ``t >= n``."""
    if t >= n:
        return [0]
    return list(range(0, n - t, t - 2 * pad)) + [n - t]


def _ramp(u: torch.Tensor, pad: int) -> torch.Tensor:
    """Blend weight at ``u`` LR pixels from a tile's inner edge: 0 for the ``3 * pad / 4``
    nearest pixels, a raised cosine over the next ``pad / 2``, 1 beyond. The ramp is centred
    in the ``2 * pad`` overlap of two tiles, where each has ``pad`` pixels of context."""
    return torch.sin(0.5 * math.pi * ((u - 0.75 * pad) / (0.5 * pad)).clamp(0, 1)) ** 2


def tile_weights(starts: list[int], t: int, n: int, scale: int, pad: int) -> list[torch.Tensor]:
    """Per-tile blend weights along one axis, in output pixels (length ``t * scale`` each),
    normalised so that the weights of all tiles sum to 1 at every output pixel.

    A tile's weight ramps (:func:`_ramp`) at each edge that has a neighbour and is 1 at the
    image border, so a pixel covered by one tile takes that tile's output unchanged. The
    2-D weight of a tile is the outer product of its two axes' weights; since the tiles form
    a grid, the 2-D weights also sum to 1.
    """
    u = (torch.arange(t * scale, dtype=torch.float64) + 0.5) / scale
    raw = []
    for s in starts:
        w = torch.ones(t * scale, dtype=torch.float64)
        if pad > 0 and s > 0:
            w = w * _ramp(u, pad)
        if pad > 0 and s + t < n:
            w = w * _ramp(t - u, pad)
        raw.append(w)
    total = torch.zeros(n * scale, dtype=torch.float64)
    for s, w in zip(starts, raw):
        total[s * scale:(s + t) * scale] += w
    if not bool((total > 0).all()):  # the ramps of tile_starts' tiles always leave one tile > 0
        raise RuntimeError(f"tile_weights: uncovered output pixels (n={n}, t={t}, pad={pad})")
    return [(w / total[s * scale:(s + t) * scale]).float() for s, w in zip(starts, raw)]


@torch.no_grad()
def upscale_image(model: nn.Module, lr: torch.Tensor, scale: int, tile: int | str = 0, tile_pad: int = 16,
                  autocast_bf16: bool = False,
                  memory_format: torch.memory_format = torch.contiguous_format, *,
                  precision: str | None = None, tile_batch: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Run ``model`` on an LR image (1, C, h, w) in [0, 1]; returns (1, C, h*scale, w*scale)
    float32 in [0, 1] on the CPU.

    **Tiling.** With ``tile > 0`` the model sees fixed ``tile`` x ``tile`` LR tiles (one
    shape for every tile of an image at least that large, so a compiled or CUDA-graphed
    model is not re-specialised; a side shorter than ``tile`` is taken whole). Neighbouring
    tiles overlap by at least ``2 * tile_pad`` LR pixels and the last tile of a row or
    column is moved back to end at the image border. In each overlap the outputs are blended
    with a smooth window (:func:`tile_weights`): a tile's ``tile_pad / 2`` pixels nearest an
    inner edge get weight 0, the next ``tile_pad`` a raised-cosine ramp, so there is no hard
    seam, and a pixel away from the overlaps is exactly the tile's output. The result equals
    the untiled one up to the effect of the missing context at ``tile_pad / 2`` LR pixels
    from a tile edge: for the shipped ``nonbn_x4`` model with the default ``tile_pad = 16``
    the max difference at tile borders is below 0.01/255 on photographs. Models with a
    wider receptive field (RRDBNet) want a larger ``tile_pad``. ``tile_batch`` tiles run per
    forward (the last batch is zero-filled to the same size when there are several).
    ``tile="auto"`` picks the tile from the device's free memory (:func:`auto_tile`) and
    halves it when the model runs out of memory. Memory is bounded by one batch of tiles
    plus the output image on the CPU.

    **Precision.** ``precision`` ``fp32``, ``bf16`` or ``fp16`` (autocast) or ``auto``
    (:func:`resolve_precision`); default ``bf16`` if ``autocast_bf16`` else ``fp32``. A tile
    whose reduced-precision output has NaN/Inf is recomputed in fp32 with a warning.

    Args:
        model: the generator, on the device it runs on (the input is moved there), in eval
            mode; it maps (n, C, t, t) to (n, C, t*scale, t*scale).
        lr: (1, C, h, w) float tensor in [0, 1].
        scale: the model's scale factor.
        tile: LR tile side (0: the whole image at once) or ``"auto"``.
        tile_pad: LR pixels of context on each inner tile edge (overlap ``2 * tile_pad``).
        memory_format: the layout the input is given to the model in (``channels_last`` for a
            channels_last model).
        tile_batch: tiles per forward pass (>= 1).
        progress: called as ``progress(done, total)`` after each batch of tiles.

    Raises:
        ValueError: bad shape, ``tile`` < 0 or not an int / ``"auto"``, ``tile_pad`` < 0,
            ``tile <= 2 * tile_pad`` for an image larger than one tile, ``tile_batch`` < 1,
            a model output of the wrong shape, the errors of :func:`resolve_precision`.
        NonFiniteOutputError: the model's output has NaN/Inf in fp32.
        torch.OutOfMemoryError: the model ran out of memory (with ``tile="auto"``: even at
            the smallest tile).
    """
    if not isinstance(lr, torch.Tensor) or lr.dim() != 4 or lr.shape[0] != 1 or not lr.is_floating_point():
        raise ValueError(f"upscale_image: lr must be a floating (1, C, h, w) tensor, got "
                         f"{tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__}")
    auto = isinstance(tile, str)
    if auto and tile != "auto" or not auto and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0):
        raise ValueError(f"upscale_image: tile must be an int >= 0 or 'auto', got {tile!r}")
    if tile_pad < 0:
        raise ValueError(f"upscale_image: tile_pad must be >= 0, got {tile_pad}")
    if tile_batch < 1:
        raise ValueError(f"upscale_image: tile_batch must be >= 1, got {tile_batch}")
    dev = next(model.parameters()).device
    prec = resolve_precision(precision or ("bf16" if autocast_bf16 else "fp32"), dev)
    t = auto_tile(model, lr.shape[1], tile_pad, prec) if auto else tile
    while True:
        try:
            return _upscale_tiled(model, lr, scale, t, tile_pad, prec, dev, memory_format, tile_batch, progress)
        except Exception as e:
            if not (auto and _is_oom(e)) or t // 2 <= 2 * tile_pad:
                raise
            t //= 2
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            warnings.warn(f"upscale_image: out of memory; retrying with tile {t}", RuntimeWarning, stacklevel=2)


def _upscale_tiled(model, lr, scale, t, pad, prec, dev, memory_format, tile_batch, progress):
    _, c, h, w = lr.shape
    th, tw = (h, w) if t == 0 else (min(t, h), min(t, w))
    if (th < h or tw < w) and t <= 2 * pad:
        raise ValueError(f"upscale_image: tile ({t}) must be larger than 2 * tile_pad ({2 * pad})")
    ys, xs = tile_starts(h, th, pad), tile_starts(w, tw, pad)
    wy, wx = tile_weights(ys, th, h, scale, pad), tile_weights(xs, tw, w, scale, pad)
    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    out = torch.zeros(1, c, h * scale, w * scale)
    expect = (c, th * scale, tw * scale)

    def run(x, p):
        with _autocast(dev, p):
            y = model(x.to(dev, memory_format=memory_format))
        if tuple(y.shape[1:]) != expect:
            raise ValueError(f"upscale_image: the model maps {tuple(x.shape)} to {tuple(y.shape)}, expected "
                             f"(n, {c}, {th * scale}, {tw * scale}) for scale {scale}")
        return y.float()

    recomputed = 0
    for b in range(0, len(jobs), tile_batch):
        chunk = jobs[b:b + tile_batch]
        x = torch.cat([lr[:, :, ys[i]:ys[i] + th, xs[j]:xs[j] + tw] for i, j in chunk])
        if len(jobs) > tile_batch and len(chunk) < tile_batch:
            x = torch.cat([x, x.new_zeros(tile_batch - len(chunk), *x.shape[1:])])
        sr = run(x, prec)[:len(chunk)]
        bad = ~torch.isfinite(sr).flatten(1).all(1)
        if bool(bad.any()) and prec != "fp32":
            idx = bad.nonzero()[:, 0]
            sr[idx] = run(x[idx.to(x.device)], "fp32")
            recomputed += len(idx)
        if not bool(torch.isfinite(sr).all()):
            raise NonFiniteOutputError("the model's output has NaN/Inf values in fp32 (are the checkpoint's "
                                       "weights finite?)")
        sr = sr.clamp_(0, 1).cpu()
        for k, (i, j) in enumerate(chunk):
            y0, x0 = ys[i] * scale, xs[j] * scale
            out[0, :, y0:y0 + th * scale, x0:x0 + tw * scale].addcmul_(sr[k], wy[i][:, None] * wx[j][None, :])
        if progress is not None:
            progress(min(b + tile_batch, len(jobs)), len(jobs))
    if recomputed:
        warnings.warn(f"upscale_image: {recomputed} of {len(jobs)} tile(s) had NaN/Inf in {prec}; recomputed in "
                      "fp32", RuntimeWarning, stacklevel=3)
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


def min_hr_side(scale: int) -> int:
    """The smallest HR height and width (pixels) PSNR/SSIM can be measured on at ``scale``:
    SSIM's 11 x 11 window must fit in what ``crop_border = scale`` leaves (``2 * scale + 11``)."""
    return 2 * scale + 11


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
        ValueError: an HR image under :func:`min_hr_side` on a side (checked before the
            model runs on it), or whose size is not ``scale`` times its LR image's; the
            errors of :func:`upscale_image` and :func:`fastsr.metrics.psnr`.
    """
    result = EvalResult()
    was_training = model.training
    model.eval()
    try:
        for name, lr, hr in pairs:
            if min(hr.shape[-2:]) < min_hr_side(scale):
                raise ValueError(f"evaluate: {name}: the HR image is {tuple(hr.shape[-2:])}, under the "
                                 f"{min_hr_side(scale)} px on a side SSIM needs at scale {scale}")
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
