"""Image file reading and writing with Pillow, with explicit conversion to RGB [0, 1].

Every image becomes a float32 (3, H, W) tensor in [0, 1]:

* 8-bit L/P/RGB/CMYK/YCbCr modes -> RGB via Pillow, divided by 255;
* grayscale is replicated to three channels (mode ``L`` -> ``RGB``);
* 16-bit (``I;16*``, ``I``) grayscale is divided by 65535 (``I`` mode PNGs store 16-bit
  samples in int32) and replicated; 16-bit RGB TIFF/PNG (which Pillow opens as 8-bit ``RGB``
  only) is read as-is by Pillow;
* 32-bit float ``F`` images are taken as already in [0, 1] and clamped;
* RGBA/LA/PA: the alpha channel is returned separately by :func:`read_image` with
  ``keep_alpha=True`` and otherwise dropped (colour channels are kept, not composited).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fastsr.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "write_image", "list_images",
           "to_tensor", "to_uint8"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(DataError):
    """An image file could not be decoded; the message names the path."""


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files (PNG/JPEG/BMP/TIFF/WebP, any case) under ``root``, recursively, sorted.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """HWC or HW uint8/uint16/float array -> float32 (C, H, W) tensor in [0, 1]."""
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        x = arr.astype(np.float32)
    else:
        x = np.clip(arr.astype(np.float32), 0.0, 1.0)
    if x.ndim == 2:
        x = x[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) float tensor in [0, 1] -> HWC uint8 array (clamped, rounded half up)."""
    x = img.detach().float().clamp(0, 1).mul(255.0).add(0.5).floor().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


def read_image(path: str | os.PathLike, keep_alpha: bool = False):
    """Read an image file as RGB float32 (3, H, W) in [0, 1] (see module doc for modes).

    Returns:
        ``rgb`` or, with ``keep_alpha=True``, ``(rgb, alpha)`` where ``alpha`` is a
        (1, H, W) float32 tensor in [0, 1] or None when the image has no alpha channel.

    Raises:
        FileNotFoundError: no such file. ImageReadError: Pillow cannot decode it (the
        message names the path).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            rgb, alpha = _pil_to_rgb_alpha(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from None
    return (rgb, alpha) if keep_alpha else rgb


def _pil_to_rgb_alpha(im: Image.Image):
    alpha = None
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        arr = np.asarray(rgba)
        alpha = to_tensor(arr[:, :, 3])
        return to_tensor(arr[:, :, :3]), alpha
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        arr = np.clip(arr / 65535.0, 0.0, 1.0).astype(np.float32)
        x = torch.from_numpy(arr)[None].expand(3, -1, -1).contiguous()
        return x, None
    if mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return torch.from_numpy(arr)[None].expand(3, -1, -1).contiguous(), None
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    return to_tensor(np.asarray(im)), None


def write_image(img: torch.Tensor, path: str | os.PathLike, alpha: torch.Tensor | None = None) -> None:
    """Write a (3, H, W) float tensor in [0, 1] (and optional (1, H, W) alpha) as 8-bit.

    The format follows the file extension (PNG recommended: lossless). Parent folders are
    created. Raises ValueError for a bad shape.
    """
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"write_image: expected a (3, H, W) tensor, got shape {tuple(img.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(img)
    if alpha is not None:
        if alpha.shape != (1, *img.shape[1:]):
            raise ValueError(f"write_image: alpha must have shape (1, {img.shape[1]}, {img.shape[2]}), "
                             f"got {tuple(alpha.shape)}")
        arr = np.concatenate([arr, to_uint8(alpha)], axis=2)
        Image.fromarray(arr, "RGBA").save(path)
    else:
        Image.fromarray(arr, "RGB").save(path)
