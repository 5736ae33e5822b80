"""Upscaling image files: what ``fastsr upscale`` does, as library calls.

* :func:`prepare_model` -- a generator ready to run: loaded (fastsr's own files or
  ESRGAN / Real-ESRGAN / BasicSR checkpoints; optionally blended with a denoising
  companion, :func:`load_denoised`), its weights checked for NaN/Inf, on its
  device, its precision resolved (bf16 on CPUs with native bf16), on the CPU prepared by
  :func:`fastsr.optimize_for_inference` (prepacked convolutions with fused epilogues,
  Winograd for the 3x3 ones), wrapped for CUDA-graph replay where that applies.
* :func:`upscale_file` -- one image file in, one out, in kind: 8- or 16-bit, grayscale
  stays grayscale (the model runs on RGB and its output is averaged back), the alpha
  channel is upscaled by the model as a gray image (as Real-ESRGAN) or bicubically, the
  EXIF orientation is applied, the ICC profile is kept, ``outscale`` resizes the result
  (Lanczos) to another final scale, JPEG / WebP take a ``quality`` (WebP also lossless).
  ``denoise_strength`` blends realesr-general-x4v3 with its denoising companion.
* :func:`upscale_files` -- files, folders (recursive) and globs to a folder or one file,
  with the command's rules for names (``suffix``, ``format``, same names made unique,
  never overwriting an input), ``skip_existing``, images too large to decode safely
  skipped in folder runs, and progress bars. ``fastsr upscale`` parses its arguments and
  calls it.

The errors name the options as the ``fastsr upscale`` command spells them (``--tile``,
``--outscale``, ...): the keyword arguments have the same names with ``_`` for ``-``.
"""
from __future__ import annotations

import contextlib
import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from fastsr.errors import CheckpointError, UserError

__all__ = ["Upscaler", "UpscaleResult", "prepare_model", "bicubic_upscaler", "upscale_file", "upscale_files",
           "default_checkpoint", "load_model", "check_output_options", "ALPHA_MODES", "load_denoised", "companion_checkpoint", "graphed", "expand_inputs", "destinations", "check_tiling"]


@dataclass
class Upscaler:
    """What :func:`upscale_file` runs: ``model`` (None: MATLAB bicubic) at ``scale``, in
    ``precision`` (``fp32`` / ``bf16`` / ``fp16``; None for bicubic) on ``device``;
    ``description`` names the model (for the command's ``model: ...`` line). A model that
    is a :class:`fastsr.InferenceModel` (or a :class:`fastsr.SelfEnsemble` of one) runs in
    its own precision (no autocast around it)."""

    model: nn.Module | None
    scale: int
    device: str
    precision: str | None = None
    description: str = "bicubic"
    channels: int = 3  #: image channels the model takes
    multiple: int = 1  #: LR sides must be multiples of this (RRDBNet x2 / x1); others are padded

    @property
    def autocast_precision(self) -> str | None:
        """The precision :func:`fastsr.evaluate.upscale_image` wraps the model in."""
        from fastsr.inference import InferenceModel, SelfEnsemble

        inner = self.model.model if isinstance(self.model, SelfEnsemble) else self.model
        return "fp32" if isinstance(inner, InferenceModel) else self.precision


@dataclass
class UpscaleResult:
    """One written file: ``src`` -> ``dest``, the sizes ``(width, height)`` before and after,
    the bit depth, and the notes of reading (palette converted, EXIF orientation
    applied, ...) and of writing it (a format without 16 bits, ...). ``skipped`` says why nothing was written (else None)."""

    src: Path
    dest: Path
    in_size: tuple[int, int] = (0, 0)
    out_size: tuple[int, int] = (0, 0)
    bit_depth: int = 8
    read_notes: list[str] = field(default_factory=list)
    write_notes: list[str] = field(default_factory=list)
    skipped: str | None = None


# ---------------------------------------------------------------------------- the model
def default_checkpoint(name: str = "nonbn_x4") -> Path:
    """The weight file of a generator shipped with fastsr, by name
    (``fastsr.models.pretrained_path``; ``fastsr.models.list_pretrained()`` lists them).

    Raises:
        UserError: an unknown name, or the file is not installed (the message asks for a
            checkpoint).
    """
    from fastsr.models import pretrained_path

    try:
        return pretrained_path(name)
    except ValueError as e:
        raise UserError(f"--model: {e}") from None
    except FileNotFoundError as e:
        raise UserError(f"{e}; give --checkpoint") from None


def load_model(checkpoint, weights: str = "auto", device="cpu") -> tuple[nn.Module, int, str]:
    """``(model, scale, description)`` of a checkpoint. ``weights="auto"`` reads any file
    :func:`fastsr.models.load` recognises (fastsr's own, ESRGAN, Real-ESRGAN, BasicSR; the
    architecture from the keys); ``params`` / ``params_ema`` pick a weight group of a fastsr file."""
    if weights != "auto":
        from fastsr.models import load_generator

        model, scale = load_generator(checkpoint, weights, device)
        return model, scale, f"{type(model).__name__} x{scale} ({weights})"
    from fastsr.models import load

    model, detected = load(checkpoint, device=device)
    return model, detected.scale, str(detected)


def companion_checkpoint(checkpoint) -> Path:
    """The denoising companion of a Real-ESRGAN ``realesr-general-x4v3`` file, found as
    Real-ESRGAN's ``inference_realesrgan.py`` finds it: in the same folder, the file name
    with ``-x4v3`` replaced by ``-wdn-x4v3`` (``realesr-general-wdn-x4v3.pth``).

    Raises:
        UserError: a name without ``-x4v3`` (or already the ``-wdn-`` one), or no such file;
            the message asks for ``--denoise-checkpoint``.
    """
    path = Path(checkpoint)
    stem, hit, rest = path.name.rpartition("-x4v3")
    if not hit or stem.endswith("-wdn"):
        raise UserError(f"--denoise-strength: cannot name the denoising companion of {path.name} (Real-ESRGAN's "
                        "rule: realesr-general-x4v3 -> realesr-general-wdn-x4v3); give --denoise-checkpoint")
    companion = path.with_name(f"{stem}-wdn-x4v3{rest}")
    if not companion.is_file():
        raise UserError(f"--denoise-strength: the denoising companion {companion} of {path.name} is not there; "
                        "put it beside the checkpoint or give --denoise-checkpoint")
    return companion


def load_denoised(checkpoint, strength: float, companion=None, weights: str = "auto",
                  device="cpu") -> tuple[nn.Module, int, str]:
    """:func:`load_model` of ``checkpoint`` blended with its denoising companion as
    Real-ESRGAN's ``--denoise_strength`` does: parameter by parameter,
    ``strength * net + (1 - strength) * wdn_net`` (:func:`fastsr.models.interpolate_weights`).
    ``strength`` 1 is the model as is (the companion is not read, as upstream); 0 is the
    companion. ``companion`` defaults to :func:`companion_checkpoint`.

    Raises:
        UserError: ``strength`` outside [0, 1], the errors of :func:`companion_checkpoint`;
            CheckpointError: the two files are not the same architecture and shapes.
    """
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0 <= strength <= 1:
        raise UserError(f"--denoise-strength must be a number in [0, 1], got {strength!r}")
    model, scale, description = load_model(checkpoint, weights, device)
    if strength == 1:
        return model, scale, description
    companion = Path(companion) if companion is not None else companion_checkpoint(checkpoint)
    other, other_scale, other_description = load_model(companion, weights, device)
    from fastsr.models import interpolate_weights

    try:
        if other_scale != scale:
            raise ValueError(f"scale {other_scale} vs {scale}")
        interpolate_weights(model, other, strength)
    except ValueError as e:
        raise CheckpointError(f"--denoise-checkpoint {companion} ({other_description}) does not match --checkpoint "
                              f"{checkpoint} ({description}): {e}") from None
    return model, scale, f"{description}; denoise strength {strength:g} with {companion.name}"


def graphed(model: nn.Module, setting: str, device: str, tile) -> nn.Module:
    """``model`` wrapped in :class:`fastsr.graphs.GraphedModule` when ``cuda_graph`` says so:
    ``auto`` = on CUDA with tiles, ``on`` = on CUDA always, ``off`` = never.

    Raises:
        UserError: ``on`` without a CUDA device.
    """
    if setting == "on" and device != "cuda":
        raise UserError("--cuda-graph on needs a CUDA device (--device cuda)")
    if setting == "off" or device != "cuda" or (setting == "auto" and not tile):
        return model
    from fastsr.graphs import GraphedModule

    return GraphedModule(model)


def _check_finite(model: nn.Module, checkpoint) -> None:
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"checkpoint {checkpoint} has NaN/Inf values in {name}")


def prepare_model(checkpoint=None, *, weights: str = "auto", device: str | None = None, precision: str = "auto",
                  cuda_graph: str = "auto", tile: int | str = 0, scale: int | None = None,
                  denoise_strength: float | None = None, denoise_checkpoint=None, self_ensemble: bool = False,
                  log: Callable[[str], None] | None = None) -> Upscaler:
    """Load, check and place a generator for :func:`upscale_file`: the precision resolved
    for the device (:func:`fastsr.evaluate.resolve_precision`), the weights of
    ``checkpoint`` (default: the shipped ``nonbn_x4`` model) checked for NaN/Inf, the model
    in eval mode on ``device`` (default: CUDA when available), wrapped for CUDA-graph
    replay per ``cuda_graph`` (:func:`graphed`; ``tile`` is the tiling it will run with).
    On the CPU the model is :func:`fastsr.optimize_for_inference`'s, in ``precision``.
    ``scale``: the scale the caller expects (checked against the model's).
    ``denoise_strength`` (in [0, 1]; None: the model as is) blends the model with its
    denoising companion (``denoise_checkpoint``, default :func:`companion_checkpoint`) as
    Real-ESRGAN does for realesr-general-x4v3 (:func:`load_denoised`). ``self_ensemble``
    runs the model on the eight flips and rotations of each input and averages
    (:class:`fastsr.SelfEnsemble`: a little higher PSNR, eight times the time). ``log``
    receives the ``model: <description>; precision <precision>[, <how it runs>]`` line once
    the model is loaded.

    Raises:
        UserError: a device torch does not know, a precision the device cannot run, ``scale``
            not the model's, ``denoise_checkpoint`` without ``denoise_strength`` or either
            without ``checkpoint``, the errors of :func:`graphed` and :func:`load_denoised`;
            CheckpointError: an unreadable file, NaN/Inf weights, a companion that does not fit.
    """
    from fastsr.evaluate import check_cuda, resolve_precision
    from fastsr.models._utils import input_channels, size_multiple

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev_type = torch.device(device).type
    except (RuntimeError, TypeError):
        raise UserError(f"--device must be cpu or cuda, got {device!r}") from None
    if dev_type == "cuda":
        check_cuda()
    try:
        precision = resolve_precision(precision, device)
    except ValueError as e:
        raise UserError(f"--precision: {e}") from None
    if denoise_checkpoint is not None and denoise_strength is None:
        raise UserError("--denoise-checkpoint needs --denoise-strength")
    if denoise_strength is not None and not checkpoint:
        raise UserError("--denoise-strength needs --checkpoint (a Real-ESRGAN realesr-general-x4v3 file)")
    checkpoint = checkpoint or default_checkpoint()
    if denoise_strength is None:
        model, model_scale, description = load_model(checkpoint, weights, device)
    else:
        model, model_scale, description = load_denoised(checkpoint, denoise_strength, denoise_checkpoint, weights,
                                                        device)
    _check_finite(model, checkpoint)
    channels, multiple = input_channels(model), size_multiple(model)
    model, how = _for_inference(model.eval(), device, precision)
    if self_ensemble:
        from fastsr.inference import SelfEnsemble

        model, how = SelfEnsemble(model), how + ", self-ensemble of 8 flips and rotations"
    if log is not None:
        log(f"model: {description}; precision {precision}{how}")
    if scale is not None and scale != model_scale:
        raise UserError(f"--scale {scale} does not match the model's scale {model_scale} (use --outscale for "
                        "another final scale, or --bicubic)")
    return Upscaler(graphed(model, cuda_graph, device, tile), model_scale, device, precision, description, channels,
                    multiple)


def _for_inference(model: nn.Module, device: str, precision: str) -> tuple[nn.Module, str]:
    """On the CPU, ``model`` prepared by :func:`fastsr.optimize_for_inference` and the words
    saying how it runs; elsewhere ``model`` itself (run under autocast) and ``""``."""
    if torch.device(device).type != "cpu":
        return model, ""
    from fastsr.inference import optimize_for_inference
    from fastsr.nn import PackedConv2d
    from fastsr.ops.winograd import winograd_tile

    prepared = optimize_for_inference(model, device, precision)
    convs = [m for m in prepared.modules() if isinstance(m, PackedConv2d)]
    probe = torch.empty(0, dtype=prepared.dtype)
    winograd = sum(c.winograd(probe) for c in convs)
    tile = winograd_tile(prepared.dtype)
    how = (f", channels_last, {len(convs)} prepacked convolutions ({winograd} as Winograd "
           f"F({tile}x{tile},3x3))")
    return prepared, how


def bicubic_upscaler(scale: int | None = None) -> Upscaler:
    """MATLAB bicubic (:func:`fastsr.evaluate.bicubic_upscale`) at ``scale`` (default 4)
    in place of a model.

    Raises:
        UserError: ``scale`` < 1.
    """
    scale = 4 if scale is None else scale
    if scale < 1:
        raise UserError(f"--scale must be >= 1, got {scale}")
    return Upscaler(None, scale, "cpu")


# ---------------------------------------------------------------------------- one file
def check_tiling(tile: int | str = 0, tile_pad: int = 16, tile_batch: int = 1, outscale: float | None = None) -> None:
    """The tiling and output-scale arguments of :func:`upscale_file`.

    Raises:
        UserError: ``tile`` not an integer >= 0 or ``"auto"``, ``tile_pad`` < 0,
            ``tile_batch`` < 1, ``0 < tile <= 2 * tile_pad``, ``outscale`` not in (0, 1000).
    """
    if not (tile == "auto" or (isinstance(tile, int) and not isinstance(tile, bool) and tile >= 0)):
        raise UserError(f"--tile must be an integer >= 0 or 'auto', got {tile!r}")
    if tile_pad < 0 or tile_batch < 1:
        raise UserError("--tile-pad must be >= 0 and --tile-batch >= 1")
    if isinstance(tile, int) and 0 < tile <= 2 * tile_pad:
        raise UserError(f"--tile {tile} must be larger than twice --tile-pad ({tile_pad})")
    if outscale is not None and not (outscale > 0 and outscale < 1e3):
        raise UserError(f"--outscale must be a positive number below 1000, got {outscale}")


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(C, H, W) float -> (C, h, w) with Pillow's Lanczos filter in float32 ("F" images)."""
    import numpy as np
    from PIL import Image

    chans = [np.asarray(Image.fromarray(c.numpy(), "F").resize((w, h), Image.Resampling.LANCZOS)) for c in x]
    return torch.from_numpy(np.stack(chans)).clamp_(0, 1)


def _model_inputs(up: Upscaler, img, src) -> list[torch.Tensor]:
    """What the model runs on: RGB for an RGB model (grayscale repeated to RGB); for a
    one-channel model the gray plane, or each of R, G and B in turn; each (1, C, h, w)
    padded (replicated edge) to a multiple of ``up.multiple``.

    Raises:
        UserError: a model of another channel count than 1 or 3.
    """
    if up.channels == 3:
        planes = [img.rgb]
    elif up.channels == 1:
        planes = [img.pixels] if img.pixels.shape[0] == 1 else list(img.rgb.split(1))
    else:
        raise UserError(f"{src}: the model takes {up.channels}-channel images; fastsr upscale runs RGB (3) or "
                        "one-channel models")
    h, w = img.rgb.shape[-2:]
    pad = (0, -w % up.multiple, 0, -h % up.multiple)
    return [torch.nn.functional.pad(p[None], pad, mode="replicate") if any(pad) else p[None] for p in planes]


@contextlib.contextmanager
def _memory_errors(doing: str):
    """Out-of-memory errors inside (CUDA's, Python's, or the CPU allocator's RuntimeError) as
    a UserError "out of memory <doing>"; a UserError raised inside (a nested, more precise
    message) passes unchanged."""
    try:
        yield
    except UserError:
        raise
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not isinstance(e, torch.OutOfMemoryError) and \
                "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        raise UserError(f"out of memory {doing}") from None


def _run_model(up: Upscaler, img, tile, tile_pad: int, tile_batch: int, progress: bool, src) -> torch.Tensor:
    """The model's output for a loaded image (grayscale folded back to one channel)."""
    from tqdm import tqdm

    from fastsr.evaluate import upscale_image

    tiles = tqdm(desc="tiles", unit="tile", leave=False, disable=not progress)

    def report(done, total):
        tiles.total = total
        tiles.update(done - tiles.n)

    h, w = img.rgb.shape[-2:]
    try:
        with _memory_errors(f"upscaling {src}; use a smaller --tile or --tile auto"):
            sr = torch.cat([upscale_image(up.model, lr, up.scale, tile, tile_pad, precision=up.autocast_precision,
                                          tile_batch=tile_batch, progress=report)[0, :, :h * up.scale, :w * up.scale]
                            for lr in _model_inputs(up, img, src)])
    finally:
        tiles.close()
    return sr.mean(0, keepdim=True) if img.pixels.shape[0] == 1 else sr


ALPHA_MODES = ("model", "bicubic")
#: output extensions whose encoders take a quality (Pillow's JPEG and WebP ``quality``)
QUALITY_EXTENSIONS = (".jpg", ".jpeg", ".webp")


def check_output_options(dests: Iterable, alpha: str = "model", quality: int | None = None,
                         lossless: bool = False) -> None:
    """The alpha and encoder options of :func:`upscale_file` for the files ``dests``.

    Raises:
        UserError: ``alpha`` not ``model`` / ``bicubic``; ``quality`` not an integer in
            1..100 or given for an output that is not JPEG or WebP; ``lossless`` for an
            output that is not WebP.
    """
    if alpha not in ALPHA_MODES:
        raise UserError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        raise UserError(f"--quality must be an integer from 1 to 100, got {quality!r}")
    for d in map(Path, dests):
        ext = d.suffix.lower()
        if quality is not None and ext not in QUALITY_EXTENSIONS:
            raise UserError(f"--quality applies to JPEG and WebP outputs, not {d.name} (use --format jpg or webp)")
        if lossless and ext != ".webp":
            raise UserError(f"--lossless applies to WebP outputs, not {d.name} (use --format webp)")


def upscale_file(src, dest, upscaler: Upscaler | None = None, *, tile: int | str = 0, tile_pad: int = 16,
                 tile_batch: int = 1, outscale: float | None = None, alpha: str = "model",
                 quality: int | None = None, lossless: bool = False, progress: bool = False) -> UpscaleResult:
    """Upscale the image file ``src`` into ``dest`` (its extension picks the format) exactly
    as ``fastsr upscale SRC -o DEST`` does; returns what was written.

    Args:
        upscaler: from :func:`prepare_model` or :func:`bicubic_upscaler`; default: the
            shipped ``nonbn_x4`` model prepared with :func:`prepare_model`'s defaults.
        tile, tile_pad, tile_batch: the tiling of :func:`fastsr.evaluate.upscale_image`
            (``tile="auto"``: from free memory).
        outscale: the final scale when not the model's (the output is resized, Lanczos).
        alpha: how the alpha channel of an RGBA / LA image is upscaled: ``"model"`` (as
            Real-ESRGAN's default ``alpha_upsampler='realesrgan'``: the alpha plane run
            through the model as a gray image, tiled like the colours) or ``"bicubic"``
            (MATLAB bicubic). A uniform alpha (a fully opaque file) stays uniform without
            a model run. With :func:`bicubic_upscaler` both are bicubic.
        quality: JPEG / WebP quality 1..100 (Pillow's ``quality``; default 95); for a
            lossless WebP, Pillow's compression effort (default 80).
        lossless: a lossless WebP (Pillow's ``lossless=True``).
        progress: a progress bar of the tiles.

    Raises:
        UserError: bad tiling or ``outscale`` (:func:`check_tiling`), bad ``alpha``,
            ``quality`` or ``lossless`` (:func:`check_output_options`), out of memory;
            ImageReadError / ImageTooLargeError: an unreadable or too large image;
            OSError: ``dest`` cannot be written.
    """
    check_tiling(tile, tile_pad, tile_batch, outscale)
    check_output_options([dest], alpha, quality, lossless)
    up = upscaler if upscaler is not None else prepare_model()
    return _upscale_one(src, dest, up, (tile, tile_pad, tile_batch, outscale),
                        {"alpha": alpha, "quality": quality, "lossless": lossless}, progress)


def _upscale_alpha(up: Upscaler, img, how: str, tiling: tuple, progress: bool, src) -> torch.Tensor | None:
    """The (1, sH, sW) alpha plane of the output (None without one): bicubic, or the model's
    output for the alpha plane as a gray image (see :func:`upscale_file`)."""
    from fastsr.data import ImageData
    from fastsr.evaluate import bicubic_upscale

    a = img.alpha
    if a is None:
        return None
    if up.model is None or how == "bicubic":
        return bicubic_upscale(a[None], up.scale)[0].clamp(0, 1)
    h, w = a.shape[-2:]
    if bool(a.min() == a.max()):
        return a.new_full((1, h * up.scale, w * up.scale), a[0, 0, 0].item())
    return _run_model(up, ImageData(a), *tiling[:3], progress, src).clamp(0, 1)


def _upscale_one(src, dest, up: Upscaler, tiling: tuple, output: dict, progress: bool) -> UpscaleResult:
    """:func:`upscale_file` after its argument checks; ``tiling`` is ``(tile, tile_pad,
    tile_batch, outscale)``, ``output`` its ``alpha``, ``quality`` and ``lossless``."""
    from fastsr.data import load_image, save_image
    from fastsr.evaluate import bicubic_upscale

    img = load_image(src)
    h, w = img.pixels.shape[-2:]
    outscale = tiling[3]
    oh, ow = (max(round(h * outscale), 1), max(round(w * outscale), 1)) if outscale is not None else \
        (h * up.scale, w * up.scale)
    with _memory_errors(f"making the {w * up.scale}x{h * up.scale} output of {src}"
                        + (f" (resized to {ow}x{oh})" if (oh, ow) != (h * up.scale, w * up.scale) else "")
                        + "; use a smaller --scale or --outscale"):
        if up.model is None:
            sr = bicubic_upscale(img.pixels[None], up.scale)[0]
        else:
            sr = _run_model(up, img, *tiling[:3], progress, src)
        alpha = _upscale_alpha(up, img, output["alpha"], tiling, progress, src)
        if outscale is not None and outscale != up.scale:
            sr = _resize(sr, oh, ow)
            alpha = _resize(alpha, oh, ow) if alpha is not None else None
    written = save_image(dest, sr, alpha, img.bit_depth, img.icc_profile, quality=output["quality"],
                         lossless=output["lossless"])
    return UpscaleResult(Path(src), Path(dest), (w, h), (sr.shape[2], sr.shape[1]), img.bit_depth,
                         list(img.notes), list(written))


# ---------------------------------------------------------------------------- many files
def expand_inputs(inputs: Iterable[str] | str | os.PathLike) -> list[tuple[Path, Path]]:
    """``(file, path relative to the output folder)`` of every input image: files as given,
    folders recursively (keeping subfolders), globs (``*``, ``?``, ``[``) expanded. One
    path (a ``str`` or ``PathLike``) is one input, not a sequence of one-letter ones.

    Raises:
        UserError: an input that does not exist, a glob matching no image.
    """
    from fastsr.data import IMAGE_EXTENSIONS, list_images

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for inp in map(str, inputs):
        p = Path(inp)
        if p.is_dir():
            files += [(f, f.relative_to(p)) for f in list_images(p)]
        elif p.is_file():
            files.append((p, Path(p.name)))
        elif any(c in inp for c in "*?["):
            hits = sorted(Path(h) for h in glob.glob(inp, recursive=True))
            hits = [h for h in hits if h.is_file() and h.suffix.lower() in IMAGE_EXTENSIONS]
            if not hits:
                raise UserError(f"no image files match {inp}")
            files += [(h, Path(h.name)) for h in hits]
        else:
            raise UserError(f"input not found: {inp}")
    return files


def _unique(dest: Path, seen: set) -> Path:
    """``dest``, or ``stem_2``, ``stem_3``, ... when an earlier input already writes it (a
    renamed output also skips names of files that exist: they are not this input's)."""
    d, k = dest, 2
    while d.resolve() in seen or (d != dest and (d.exists() or d.is_symlink())):
        d = dest.with_name(f"{dest.stem}_{k}{dest.suffix}")
        k += 1
    if d != dest:
        print(f"note: {dest} is the output of an earlier input too; writing {d}", file=sys.stderr)
    seen.add(d.resolve())
    return d


def destinations(files: list[tuple[Path, Path]], output, inputs, fmt: str = "png", suffix: str = "") -> list[Path]:
    """The output file of each of :func:`expand_inputs`' ``files``: ``output`` itself when
    it is an image file name (one input file), else ``output/<relative path><suffix>.<fmt>``
    with names that two inputs share made unique (``name_2.png``, with a note).

    Raises:
        UserError: an unknown extension, a file name for several inputs, an output that is
            one of the inputs (also through a hard link), an output that is a symbolic link
            or resolves outside the output folder, a ``suffix`` with a path separator or
            ``..`` (it would name a file outside the output folder).
    """
    from fastsr.data import IMAGE_EXTENSIONS

    if "/" in suffix or "\\" in suffix or ".." in suffix or "\0" in suffix:
        raise UserError(f"--suffix must be part of a file name (no '/', '\\' or '..'), got {suffix!r}")
    out = Path(output)
    single = out.suffix and not out.is_dir()
    if single and out.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UserError(f"-o {out}: unknown image extension {out.suffix!r} (expected one of "
                        f"{', '.join(IMAGE_EXTENSIONS)}, or a folder name without an extension)")
    if single and (len(files) != 1 or not Path(list(inputs)[0]).is_file()):
        raise UserError(f"-o {out} is a file name but there are {len(files)} inputs; give a folder")
    seen: set = set()
    dests = [out] if single else [_unique(out / rel.parent / f"{rel.stem}{suffix}.{fmt}", seen) for _, rel in files]
    sources = {f.resolve() for f, _ in files}
    inodes = {(st.st_dev, st.st_ino) for st in (f.stat() for f, _ in files)}
    root = None if single else out.resolve()
    for d in dests:
        if d.is_symlink():
            raise UserError(f"output {d} is a symbolic link: refusing to write through it")
        real = d.resolve()
        if root is not None and not real.is_relative_to(root):
            raise UserError(f"output {d} resolves to {real}, outside -o {out}: refusing to write there")
        st = d.stat() if d.exists() else None
        if real in sources or (st is not None and (st.st_dev, st.st_ino) in inodes):
            raise UserError(f"output {d} is one of the inputs: refusing to overwrite it (use -o elsewhere or --suffix)")
    return dests


def upscale_files(inputs: Iterable[str] | str | os.PathLike, output, checkpoint=None, *, bicubic: bool = False, scale: int | None = None,
                  weights: str = "auto", device: str | None = None, precision: str = "auto",
                  cuda_graph: str = "auto", tile: int | str = 0, tile_pad: int = 16, tile_batch: int = 1,
                  outscale: float | None = None, format: str = "png", suffix: str = "",
                  skip_existing: bool = False, progress: bool = True, alpha: str = "model",
                  quality: int | None = None, lossless: bool = False, denoise_strength: float | None = None,
                  denoise_checkpoint=None, self_ensemble: bool = False,
                  write: Callable[..., None] | None = None) -> list[UpscaleResult]:
    """``fastsr upscale INPUTS -o OUTPUT ...``: every image of ``inputs`` (files, folders,
    globs; :func:`expand_inputs`) upscaled into ``output`` (:func:`destinations`) by the
    model of ``checkpoint`` (:func:`prepare_model`) or bicubic, one :func:`upscale_file`
    each (``alpha``, ``quality``, ``lossless`` as there; ``denoise_strength`` and
    ``denoise_checkpoint``, ``self_ensemble`` as in :func:`prepare_model`). Among several inputs an image too
    large to decode safely is skipped with a
    warning; ``skip_existing`` skips inputs whose output exists. Messages (the model, each
    file, notes and warnings) go through ``write(text, file=None)``, by default
    ``tqdm.write`` (stdout; notes and warnings to stderr).

    Raises:
        UserError: no input image, and the errors of the functions named above.
    """
    from tqdm import tqdm

    write = write or tqdm.write
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files = expand_inputs(inputs)
    if not files:
        raise UserError("no input images found")
    check_tiling(tile, tile_pad, tile_batch, outscale)
    dests = destinations(files, output, inputs, format, suffix)
    check_output_options(dests, alpha, quality, lossless)
    if bicubic and (denoise_strength is not None or denoise_checkpoint is not None):
        raise UserError("--denoise-strength blends model weights; it does not apply to --bicubic")
    if bicubic and self_ensemble:
        raise UserError("--self-ensemble averages a model's outputs; it does not apply to --bicubic")
    existing = [d for d in dests if d.exists()]
    if existing and not skip_existing:
        write(f"note: replacing {len(existing)} existing output file(s), e.g. {existing[0]} (--skip-existing keeps them)")
    if bicubic:
        up = bicubic_upscaler(scale)
    else:
        up = prepare_model(checkpoint, weights=weights, device=device, precision=precision, cuda_graph=cuda_graph,
                           tile=tile, scale=scale, denoise_strength=denoise_strength,
                           denoise_checkpoint=denoise_checkpoint, self_ensemble=self_ensemble, log=write)
    return _upscale_all(files, dests, up, write, (tile, tile_pad, tile_batch, outscale),
                        {"alpha": alpha, "quality": quality, "lossless": lossless}, skip_existing, progress)


def _upscale_all(files, dests, up: Upscaler, write, tiling: tuple, output: dict, skip_existing: bool,
                 progress: bool) -> list:
    from tqdm import tqdm

    from fastsr.data import ImageTooLargeError

    several, results, too_large = len(files) > 1, [], []
    for (path, _), dest in tqdm(list(zip(files, dests)), desc="images", unit="img",
                                disable=not progress or not several):
        if skip_existing and dest.exists():
            write(f"{path}: {dest} exists, skipped")
            results.append(UpscaleResult(path, dest, skipped="exists"))
            continue
        try:
            res = _upscale_one(path, dest, up, tiling, output, progress)
        except ImageTooLargeError as e:
            if not several:
                raise
            too_large.append(str(path))
            write(f"warning: {e}; skipped", file=sys.stderr)
            results.append(UpscaleResult(path, dest, skipped="too large"))
            continue
        for note in res.read_notes:
            write(f"{path}: {note}", file=sys.stderr)
        for note in res.write_notes:
            write(f"{dest}: {note}", file=sys.stderr)
        w, h = res.in_size
        write(f"{path} -> {dest} ({w}x{h} -> {res.out_size[0]}x{res.out_size[1]}, {res.bit_depth}-bit)")
        results.append(res)
    if too_large:
        write(f"warning: skipped {len(too_large)} image(s) too large to decode safely: {', '.join(too_large)}",
              file=sys.stderr)
    return results
