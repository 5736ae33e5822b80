"""Super-resolution datasets: HR folders degraded on the fly, paired LR/HR folders, sample photos.

Every dataset item is a dict ``{"lr": (3, h, w), "hr": (3, H, W), "name": str}`` of float32
tensors in [0, 1] with ``H = scale * h`` (``H = h`` for ``scale=1`` same-resolution tasks).
Items are plain tensors, so the default ``DataLoader`` collate, worker processes and a
``DistributedSampler`` all work unchanged.

Randomness (crop position, flips, rotation). The index passed to ``__getitem__`` is either an
``int`` -- randomness then comes from torch's global RNG, which ``DataLoader`` seeds per worker
-- or a tuple ``(index, sample_seed)``: randomness then comes only from ``sample_seed``, so an
item is the same whatever the number of workers or processes. fastsr's trainer uses the tuple
form (see :class:`fastsr.data.IterationBatchSampler`) to make runs and resumes exact.

Policies (documented choices):

* Unreadable files: at construction each file's header is opened; files Pillow cannot
  identify are *skipped with one warning* listing their paths (a dataset of thousands of
  files should not die on one bad download). A file whose header is fine but whose data is
  corrupt fails later in ``__getitem__`` with :class:`~fastsr.data.io.ImageReadError`
  naming the path -- replacing it silently would break reproducibility.
* Images smaller than the HR crop: ``small_images="pad"`` (default) mirror-pads them
  (reflect, falling back to edge replication when the image is too small to reflect) up to
  the crop size; ``"skip"`` leaves them out with a warning; ``"error"`` raises ValueError.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fastsr.data.imresize import imresize
from fastsr.errors import DataError
from fastsr.data.io import list_images, read_image

__all__ = ["HRImageDataset", "HRFolderDataset", "PairedFolderDataset", "degrade", "augment",
           "mod_crop", "UnreadableImageWarning"]

_DEGRADATIONS = ("bicubic", "bicubic_blur")
_SMALL = ("pad", "skip", "error")


class UnreadableImageWarning(UserWarning):
    """An image file that Pillow cannot identify was left out of a dataset (the message names
    it; the dataset's ``unreadable`` attribute lists all of them)."""


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return scale


def mod_crop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (..., H, W) to the largest size that is a multiple of ``scale`` (top-left kept)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def degrade(hr: torch.Tensor, scale: int, degradation: str = "bicubic", blur_factor: int = 2) -> torch.Tensor:
    """Make the LR input from an HR image (C, H, W) or batch (N, C, H, W) in [0, 1].

    ``"bicubic"``: MATLAB ``imresize(hr, 1/scale)`` antialiased bicubic (H, W multiples of
    ``scale``), the standard SR degradation. ``"bicubic_blur"``: same-resolution blur for
    clarity enhancement (the sharpness GAN): down by ``blur_factor`` and back up, then the
    result is downsampled by ``scale`` (normally 1). Output clamped to [0, 1].
    """
    if degradation == "bicubic":
        lr = imresize(hr, 1.0 / scale) if scale > 1 else hr.clone()
    elif degradation == "bicubic_blur":
        h, w = hr.shape[-2:]
        low = imresize(hr, 1.0 / blur_factor)
        lr = imresize(low, float(blur_factor))[..., :h, :w]
        if scale > 1:
            lr = imresize(lr, 1.0 / scale)
    else:
        raise ValueError(f"degradation must be one of {_DEGRADATIONS}, got {degradation!r}")
    return lr.clamp_(0.0, 1.0)


def augment(imgs: Sequence[torch.Tensor], hflip: bool, vflip: bool, rot90: bool) -> list[torch.Tensor]:
    """Apply the same flips / 90-degree rotation (transpose of H and W) to every (C, H, W) image."""
    out = []
    for x in imgs:
        if hflip:
            x = x.flip(-1)
        if vflip:
            x = x.flip(-2)
        if rot90:
            x = x.transpose(-2, -1)
        out.append(x.contiguous())
    return out


def _pad_to(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return img
    pad = (0, pw, 0, ph)
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(img[None], pad, mode=mode)[0]


class _Rand:
    """Uniform draws from either a per-sample numpy Generator or torch's global RNG."""

    def __init__(self, seed):
        self.rng = None if seed is None else np.random.default_rng(seed)

    def randint(self, high: int) -> int:  # [0, high)
        if self.rng is not None:
            return int(self.rng.integers(0, high))
        return int(torch.randint(0, high, (1,)).item())

    def coin(self) -> bool:
        return self.randint(2) == 1


def _split_key(key):
    if isinstance(key, (tuple, list)):
        index, seed = key
        return int(index), [int(s) for s in (seed if isinstance(seed, (tuple, list)) else [seed])]
    return int(key), None


class HRImageDataset(Dataset):
    """HR images -> (random crop, LR by MATLAB bicubic, random flips/rotation).

    Args:
        images: a sequence of sources, each a path to an image file or a (3, H, W) float
            tensor in [0, 1]; names are the file stems or ``names``.
        scale: integer SR factor (1 for same-resolution tasks with ``"bicubic_blur"``).
        crop_size: HR crop side in pixels, a multiple of ``scale`` (96 for x4 in SRGAN);
            ``None`` returns whole images mod-cropped to a multiple of ``scale``
            (validation / test).
        augment: random horizontal flip, vertical flip and 90-degree rotation, each p=0.5.
        degradation / blur_factor: see :func:`degrade`.
        small_images: ``"pad"``, ``"skip"`` or ``"error"`` for images smaller than the crop.
        cache: keep decoded images in memory (per worker process).
        names: optional names for tensor sources.

    Raises:
        ValueError: bad scale/crop_size/option; DataError (a ValueError): no usable image.
    """

    def __init__(self, images: Sequence, scale: int = 4, crop_size: int | None = 96, augment: bool = True,
                 degradation: str = "bicubic", blur_factor: int = 2, small_images: str = "pad",
                 cache: bool = False, names: Sequence[str] | None = None):
        self.scale = _check_scale(scale)
        if crop_size is not None:
            if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < scale \
                    or crop_size % scale:
                raise ValueError(f"crop_size must be a positive multiple of scale={scale}, got {crop_size!r}")
        if degradation not in _DEGRADATIONS:
            raise ValueError(f"degradation must be one of {_DEGRADATIONS}, got {degradation!r}")
        if small_images not in _SMALL:
            raise ValueError(f"small_images must be one of {_SMALL}, got {small_images!r}")
        if degradation == "bicubic" and scale == 1:
            raise ValueError("scale=1 with degradation='bicubic' makes LR == HR; use 'bicubic_blur'")
        self.crop_size = crop_size
        self.augment = augment
        self.degradation = degradation
        self.blur_factor = int(blur_factor)
        self.cache = cache
        self._cache: dict[int, torch.Tensor] = {}
        sources = list(images)
        if names is None:
            names = [Path(s).stem if not isinstance(s, torch.Tensor) else f"image{i:04d}"
                     for i, s in enumerate(sources)]
        if len(names) != len(sources):
            raise ValueError(f"names has {len(names)} entries for {len(sources)} images")
        keep, small = [], []
        #: ``"path: reason"`` of each file left out because Pillow cannot identify it
        self.unreadable: list[str] = []
        min_side = crop_size if crop_size is not None else scale
        for src, name in zip(sources, names):
            size = self._size(src)
            if size is None:
                continue
            h, w = size
            if min(h, w) < min_side:
                if small_images == "error" or (crop_size is None):
                    raise DataError(f"image {src if not isinstance(src, torch.Tensor) else name} is {w}x{h}, "
                                     f"smaller than {min_side} px")
                if small_images == "skip":
                    small.append(str(src) if not isinstance(src, torch.Tensor) else name)
                    continue
            keep.append((src, name))
        if small:
            warnings.warn(f"skipping {len(small)} image(s) smaller than crop_size={crop_size}: "
                          + ", ".join(small[:10]) + (" ..." if len(small) > 10 else ""), stacklevel=2)
        if not keep:
            raise DataError("no usable images")
        self.sources = [s for s, _ in keep]
        self.names = [n for _, n in keep]

    def _size(self, src):
        if isinstance(src, torch.Tensor):
            if src.dim() != 3 or src.shape[0] != 3 or not src.is_floating_point():
                raise ValueError(f"image tensors must be float (3, H, W), got {src.dtype} {tuple(src.shape)}")
            return tuple(src.shape[-2:])
        try:
            with Image.open(src) as im:
                w, h = im.size
            return h, w
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            self.unreadable.append(f"{src}: {e}")
            warnings.warn(f"skipping unreadable image {src}: {e}", UnreadableImageWarning, stacklevel=3)
            return None

    def __len__(self) -> int:
        return len(self.sources)

    def load(self, index: int) -> torch.Tensor:
        """The whole HR image ``index`` as float32 (3, H, W) in [0, 1]."""
        src = self.sources[index]
        if isinstance(src, torch.Tensor):
            return src
        img = self._cache.get(index)
        if img is None:
            img = read_image(src)
            if self.cache:
                self._cache[index] = img
        return img

    def __getitem__(self, key):
        index, seed = _split_key(key)
        if not 0 <= index < len(self.sources):
            raise IndexError(f"index {index} out of range for {len(self.sources)} images")
        hr = self.load(index)
        if self.crop_size is None:
            hr = mod_crop(hr, self.scale).contiguous()
        else:
            rnd = _Rand(seed)
            hr = _pad_to(hr, self.crop_size)
            h, w = hr.shape[-2:]
            top, left = rnd.randint(h - self.crop_size + 1), rnd.randint(w - self.crop_size + 1)
            hr = hr[:, top:top + self.crop_size, left:left + self.crop_size]
            if self.augment:
                hr = augment([hr], rnd.coin(), rnd.coin(), rnd.coin())[0]
            hr = hr.contiguous()
        lr = degrade(hr, self.scale, self.degradation, self.blur_factor)
        return {"lr": lr, "hr": hr, "name": self.names[index]}


class HRFolderDataset(HRImageDataset):
    """:class:`HRImageDataset` over every PNG/JPEG/BMP/TIFF/WebP file under ``root`` (recursive).

    Raises:
        FileNotFoundError: ``root`` missing. DataError (a ValueError): no usable image in ``root``.
    """

    def __init__(self, root: str | os.PathLike, scale: int = 4, crop_size: int | None = 96, **kwargs):
        files = list_images(root)
        if not files:
            raise DataError(f"no PNG/JPEG/BMP/TIFF/WebP images found under {root}")
        self.root = Path(root)
        names = [str(p.relative_to(self.root).with_suffix("")) for p in files]
        super().__init__(files, scale=scale, crop_size=crop_size, names=names, **kwargs)


def _lr_key(rel: Path, scale: int) -> str:
    stem = rel.stem
    for suffix in (f"x{scale}", f"_x{scale}", f"X{scale}", f"_X{scale}"):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    return str(rel.parent / stem)


class PairedFolderDataset(Dataset):
    """LR and HR folders matched by file name (DIV2K/Set5-style benchmark pairs).

    An LR file matches the HR file with the same relative path and stem, after removing a
    trailing ``x{scale}`` / ``_x{scale}`` from the LR stem (DIV2K's ``0801x4.png`` <->
    ``0801.png``); extensions may differ. HR images larger than ``scale * LR`` by less than
    ``scale`` pixels are mod-cropped; other size mismatches raise ValueError naming the file.

    Args:
        lr_root, hr_root: the two folders.
        scale: integer SR factor.
        crop_size: HR crop (multiple of ``scale``) for training; ``None`` for whole images.
        augment: random flips / rotation (training).

    Raises:
        FileNotFoundError: a folder is missing. DataError (a ValueError): names that do not match (all
        unmatched names are listed, up to 20), or an empty folder.
    """

    def __init__(self, lr_root, hr_root, scale: int = 4, crop_size: int | None = None, augment: bool = False):
        self.scale = _check_scale(scale)
        if crop_size is not None and (crop_size < scale or crop_size % scale):
            raise ValueError(f"crop_size must be a positive multiple of scale={scale}, got {crop_size!r}")
        self.crop_size, self.augment = crop_size, augment
        lr_root, hr_root = Path(lr_root), Path(hr_root)
        lr_files, hr_files = list_images(lr_root), list_images(hr_root)
        if not hr_files:
            raise DataError(f"no images found under HR folder {hr_root}")
        hr_map = {str(p.relative_to(hr_root).with_suffix("")): p for p in hr_files}
        lr_map = {_lr_key(p.relative_to(lr_root), scale): p for p in lr_files}
        only_hr = sorted(set(hr_map) - set(lr_map))
        only_lr = sorted(set(lr_map) - set(hr_map))
        if only_hr or only_lr:
            def show(names):
                return ", ".join(names[:20]) + (f" ... ({len(names)} total)" if len(names) > 20 else "")
            parts = []
            if only_hr:
                parts.append(f"HR without LR in {lr_root}: {show(only_hr)}")
            if only_lr:
                parts.append(f"LR without HR in {hr_root}: {show([str(lr_map[k].relative_to(lr_root)) for k in only_lr])}")
            raise DataError("LR/HR names do not match (LR names may end in x%d); " % scale + "; ".join(parts))
        self.names = sorted(hr_map)
        self.pairs = [(lr_map[n], hr_map[n]) for n in self.names]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key):
        index, seed = _split_key(key)
        lr_path, hr_path = self.pairs[index]
        lr, hr = read_image(lr_path), read_image(hr_path)
        s = self.scale
        lh, lw = lr.shape[-2:]
        hh, hw = hr.shape[-2:]
        if not (lh * s <= hh < lh * s + s and lw * s <= hw < lw * s + s):
            raise DataError(f"size mismatch for {hr_path.name}: LR {lw}x{lh} x{s} != HR {hw}x{hh}")
        hr = hr[:, : lh * s, : lw * s]
        if self.crop_size is not None:
            rnd = _Rand(seed)
            lc = self.crop_size // s
            if lh < lc or lw < lc:
                raise DataError(f"LR image {lr_path} ({lw}x{lh}) is smaller than the LR crop {lc}")
            top, left = rnd.randint(lh - lc + 1), rnd.randint(lw - lc + 1)
            lr = lr[:, top:top + lc, left:left + lc]
            hr = hr[:, top * s:(top + lc) * s, left * s:(left + lc) * s]
            if self.augment:
                lr, hr = augment([lr, hr], rnd.coin(), rnd.coin(), rnd.coin())
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": self.names[index]}
