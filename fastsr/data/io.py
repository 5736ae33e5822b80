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

import io
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fastsr.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "ImageTooLargeError", "read_image", "write_image",
           "list_images", "to_tensor", "to_uint8", "ImageData", "load_image", "save_image"]

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
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image {path} is too large: {e}") from None
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
    created; the file is replaced atomically (:func:`replace_atomically`). Raises ValueError
    for a bad shape or a ``path`` that is a symbolic link.
    """
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"write_image: expected a (3, H, W) tensor, got shape {tuple(img.shape)}")
    arr = to_uint8(img)
    if alpha is not None:
        if alpha.shape != (1, *img.shape[1:]):
            raise ValueError(f"write_image: alpha must have shape (1, {img.shape[1]}, {img.shape[2]}), "
                             f"got {tuple(alpha.shape)}")
        arr = np.concatenate([arr, to_uint8(alpha)], axis=2)
    mode = "RGB" if alpha is None else "RGBA"
    replace_atomically(Path(path), lambda tmp: Image.fromarray(arr, mode).save(tmp), "write_image")


# ---------------------------------------------------------------------------- upscaler I/O
class ImageTooLargeError(ImageReadError):
    """An image has more pixels than Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, twice it for the hard error)."""


@dataclass
class ImageData:
    """An image as :func:`load_image` reads it for upscaling, with what is needed to write
    the result in kind (:func:`save_image`).

    Attributes:
        pixels: (C, H, W) float32 in [0, 1]; C = 1 for grayscale, 3 for colour (RGB).
        alpha: (1, H, W) float32 in [0, 1], or None without an alpha channel.
        bit_depth: 8 or 16, the bits per sample of the file (16 for float images).
        icc_profile: the embedded ICC colour profile (bytes), or None.
        notes: conversions made while reading (palette, CMYK, EXIF orientation), one
            sentence each, to tell the user.
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None = None
    bit_depth: int = 8
    icc_profile: bytes | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rgb(self) -> torch.Tensor:
        """The pixels as (3, H, W) (grayscale replicated)."""
        return self.pixels.expand(3, -1, -1).contiguous() if self.pixels.shape[0] == 1 else self.pixels


#: EXIF orientation -> the numpy operation on an (H, W, ...) array that makes it upright
#: (the TIFF/EXIF Orientation tag 274; Pillow's ``ImageOps.exif_transpose`` table)
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit_depth, colour_type)`` of a PNG file's IHDR, None for other files."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit colour or gray+alpha PNG as an (H, W, planes) uint16 array (pypng: Pillow
    reads these as 8-bit)."""
    import png

    w, h, rows, info = png.Reader(filename=str(path)).read()
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    return arr.reshape(h, w, info["planes"])


def load_image(path: str | os.PathLike) -> ImageData:
    """Read any image a user may have, keeping what the output should keep.

    * 8-bit and 16-bit files (PNG, TIFF: 16-bit colour read with pypng / tifffile, since
      Pillow reads those as 8-bit) give ``bit_depth`` 8 or 16; 32-bit float ``F`` images
      count as 16-bit;
    * grayscale (``1``, ``L``, ``I;16``, ``I``, ``F``) stays one channel; ``LA`` / ``RGBA``
      keep their alpha;
    * palette images become RGB(A), CMYK becomes RGB through its ICC profile when it has one
      (the output is then tagged sRGB), other modes (YCbCr, LAB, HSV) RGB: each with a note;
    * the EXIF orientation is applied once (with a note; Pillow itself transposes TIFFs), the
      ICC profile is returned;
    * of a multi-frame file (GIF, WebP, APNG, TIFF pages) the first frame is read, with a note.

    Raises:
        FileNotFoundError: no such file. ImageTooLargeError: more pixels than Pillow's
        decompression-bomb limit. ImageReadError: the file cannot be decoded (the message
        names the path).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        try:
            with Image.open(path) as im:
                return _load(path, im)
        except UnidentifiedImageError:
            if path.suffix.lower() not in (".tif", ".tiff"):
                raise
            return _load_tiff(path)  # e.g. 16-bit gray + alpha, which Pillow does not open
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image {path} is too large: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, KeyError) as e:
        if isinstance(e, (FileNotFoundError, DataError)):
            raise
        raise ImageReadError(f"cannot read image {path}: {e}") from None


def _load(path: Path, im: Image.Image) -> ImageData:
    frames = getattr(im, "n_frames", 1)
    notes = [f"{frames} frames (animation or multi-page file): the first is used"] if frames > 1 else []
    icc = im.info.get("icc_profile") or None
    orientation = im.getexif().get(0x0112, 1)
    bit_depth, alpha = 8, None
    png_head = _png_header(path) if im.format == "PNG" else None
    bits = im.tag_v2.get(258) if im.format == "TIFF" and hasattr(im, "tag_v2") else None
    if png_head is not None and png_head[0] == 16 and png_head[1] in (2, 4, 6):
        arr, bit_depth = _read_png16(path), 16
    elif im.mode in ("RGB", "RGBA") and bits is not None and max(np.atleast_1d(bits)) == 16:
        import tifffile

        arr, bit_depth = tifffile.imread(path, key=0), 16
        arr = arr[:, :, :4] if arr.ndim == 3 else arr
    else:
        im.load()
        if orientation != 1 and im.getexif().get(0x0112, 1) == 1:  # Pillow transposed it on load (TIFF)
            notes.append(f"EXIF orientation {orientation} applied")
            orientation = 1
        mode = im.mode
        if mode.startswith("I;16") or mode == "I":
            arr, bit_depth = np.clip(np.asarray(im).astype(np.int64), 0, 65535).astype(np.uint16), 16
        elif mode == "F":
            arr, bit_depth = np.clip(np.asarray(im, dtype=np.float32), 0, 1), 16
        elif mode in ("L", "LA", "RGB", "RGBA"):
            arr = np.asarray(im)
        elif mode == "1":
            arr = np.asarray(im.convert("L"))
        elif mode in ("La", "RGBa"):
            arr = np.asarray(im.convert(mode.upper()))
        elif mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in im.info
            arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
            notes.append(f"palette image converted to {'RGBA' if has_alpha else 'RGB'}")
        elif mode == "CMYK" and icc is not None:
            from PIL import ImageCms

            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb,
                                            outputMode="RGB")
            arr, icc = np.asarray(rgb), srgb.tobytes()
            notes.append("CMYK converted to sRGB through its ICC profile")
        else:
            arr = np.asarray(im.convert("RGB"))
            notes.append(f"{mode} image converted to RGB" + (" without a colour profile (approximate colours)"
                                                             if mode == "CMYK" else ""))
    if orientation in _ORIENT:
        arr = _ORIENT[orientation](arr)
        notes.append(f"EXIF orientation {orientation} applied")
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr, alpha = arr[:, :, :-1], to_tensor(arr[:, :, -1])
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return ImageData(to_tensor(arr), alpha, bit_depth, icc, notes)


def _load_tiff(path: Path) -> ImageData:
    """A TIFF through tifffile (first page): 8/16-bit gray, gray + alpha, RGB, RGBA."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        arr = page.asarray()
        tags = {t.code: t.value for t in page.tags}
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] > 4):
        raise ImageReadError(f"cannot read image {path}: unsupported TIFF layout {arr.shape} {arr.dtype}")
    notes = []
    orientation = int(tags.get(274, 1))
    if orientation in _ORIENT:
        arr = _ORIENT[orientation](arr)
        notes.append(f"EXIF orientation {orientation} applied")
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr, alpha = arr[:, :, :-1], to_tensor(arr[:, :, -1])
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    icc = tags.get(34675)
    return ImageData(to_tensor(arr), alpha, 16 if arr.dtype == np.uint16 else 8, bytes(icc) if icc else None, notes)


def _quantise(x: torch.Tensor, bit_depth: int) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> HWC (or HW for C = 1) uint8/uint16, rounded half up."""
    top, dtype = (255.0, torch.uint8) if bit_depth == 8 else (65535.0, torch.int32)
    q = x.detach().float().clamp(0, 1).mul(top).add(0.5).floor().to(dtype).permute(1, 2, 0).cpu().numpy()
    q = q.astype(np.uint8 if bit_depth == 8 else np.uint16)
    return q[:, :, 0] if q.shape[2] == 1 else q


def _write_png16(path: Path, arr: np.ndarray, icc: bytes | None) -> None:
    """A 16-bit PNG with pypng (Pillow writes 16-bit gray only), the ICC profile as iCCP."""
    import png

    h, w = arr.shape[:2]
    planes = 1 if arr.ndim == 2 else arr.shape[2]
    writer = png.Writer(w, h, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16)
    buf = io.BytesIO()
    writer.write_array(buf, arr.reshape(-1).astype(np.uint16))
    chunks = list(png.Reader(bytes=buf.getvalue()).chunks())
    if icc:
        chunks.insert(1, (b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    with open(path, "wb") as f:
        png.write_chunks(f, chunks)


def save_image(path: str | os.PathLike, pixels: torch.Tensor, alpha: torch.Tensor | None = None,
               bit_depth: int = 8, icc_profile: bytes | None = None, quality: int | None = None,
               lossless: bool = False) -> list[str]:
    """Write an image read by :func:`load_image` (or computed from one) in kind.

    The format follows the extension (PNG, JPEG, WebP, BMP, TIFF). 16-bit is written to PNG
    (pypng for colour or alpha) and TIFF (tifffile); JPEG, WebP and BMP store 8 bits. The
    ICC profile is embedded in PNG, JPEG, WebP and TIFF. Parent folders are created. The
    file is written to a temporary file in the destination folder and renamed into place,
    so a kill leaves either the old file or the new one, never a truncated one; a
    destination that is a symbolic link is refused (the write would land elsewhere).

    Args:
        pixels: (C, H, W) float in [0, 1], C = 1 (grayscale) or 3 (RGB).
        alpha: (1, H, W) float in [0, 1] or None.
        bit_depth: 8 or 16.
        quality: JPEG / WebP quality, 1..100 (Pillow's ``quality``; None: 95); with
            ``lossless`` it is Pillow's WebP compression effort (None: Pillow's 80). Other
            formats ignore it.
        lossless: a lossless WebP (Pillow's ``lossless=True`` with ``exact=True``, so that
            the colours of fully transparent pixels are kept too); ignored by other formats.

    Returns:
        The notes on what the format could not store (16 bits, alpha, ICC profile).

    Raises:
        ValueError: bad shapes, ``bit_depth`` not 8 or 16, an unknown extension, ``path`` a
            symbolic link.
    """
    path = Path(path)
    if pixels.dim() != 3 or pixels.shape[0] not in (1, 3):
        raise ValueError(f"save_image: pixels must be (1 or 3, H, W), got shape {tuple(pixels.shape)}")
    if alpha is not None and tuple(alpha.shape) != (1, *pixels.shape[1:]):
        raise ValueError(f"save_image: alpha must have shape (1, {pixels.shape[1]}, {pixels.shape[2]}), "
                         f"got {tuple(alpha.shape)}")
    if bit_depth not in (8, 16):
        raise ValueError(f"save_image: bit_depth must be 8 or 16, got {bit_depth}")
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        raise ValueError(f"save_image: quality must be an integer from 1 to 100, got {quality!r}")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"save_image: unknown image extension {ext!r} of {path}; expected one of "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    notes = []
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}.get(ext)
    if fmt and bit_depth == 16:
        notes.append(f"{fmt} stores 8 bits per sample: written as 8-bit")
        bit_depth = 8
    if fmt == "JPEG" and alpha is not None:
        notes.append("JPEG has no alpha channel: alpha dropped")
        alpha = None
    if fmt == "BMP" and icc_profile:
        notes.append("BMP cannot hold an ICC profile: profile dropped")
        icc_profile = None
    if fmt in ("WEBP", "BMP") and pixels.shape[0] == 1 and (fmt == "WEBP" or alpha is not None):
        pixels = pixels.expand(3, -1, -1)  # WebP has no gray modes, BMP no gray + alpha
    x = pixels if alpha is None else torch.cat([pixels, alpha])
    arr = _quantise(x, bit_depth)
    has_alpha = alpha is not None
    if fmt == "WEBP" and lossless:
        # exact: libwebp otherwise replaces the colours under alpha 0 (Pillow's default exact=False)
        encoder = {"lossless": True, "exact": True, **({} if quality is None else {"quality": quality})}
    else:
        encoder = {"quality": 95 if quality is None else quality} if fmt in ("JPEG", "WEBP") else {}
    replace_atomically(path, lambda tmp: _write_file(tmp, arr, pixels.shape[0], has_alpha, bit_depth, ext,
                                                     icc_profile, encoder), "save_image")
    return notes


def replace_atomically(path: Path, write, op: str = "write") -> None:
    """Create or replace the file ``path`` with what ``write(tmp)`` writes to ``tmp``, a new
    file in the same folder (same extension), renamed over ``path`` once complete: a kill
    or an error leaves the old file (or none), never a partial one. Parent folders are
    created; the file gets the usual permissions (0666 less the umask).

    Raises:
        ValueError: ``path`` is a symbolic link (the write would land where it points).
    """
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{op}: {path} is a symbolic link; refusing to write through it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _write_file(path: Path, arr: np.ndarray, channels: int, has_alpha: bool, bit_depth: int, ext: str,
                icc_profile, encoder: dict) -> None:
    """Encode ``arr`` (from :func:`_quantise`) into ``path`` in the format of ``ext``;
    ``encoder``: Pillow's save options of the format (quality, lossless)."""
    if bit_depth == 16 and ext in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, arr, photometric="rgb" if channels == 3 else "minisblack",
                         extrasamples=["unassalpha"] if has_alpha else None,
                         iccprofile=icc_profile, compression="zlib")
    elif bit_depth == 16 and (has_alpha or channels == 3):
        _write_png16(path, arr, icc_profile)
    else:
        im = Image.fromarray(arr)  # L, LA, RGB, RGBA or I;16 from the shape and dtype
        kw = dict(encoder)
        if icc_profile:
            kw["icc_profile"] = icc_profile
        im.save(path, **kw)
