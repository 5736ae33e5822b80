"""RGB <-> YCbCr by ITU-R BT.601 for standard-definition TV, as MATLAB's ``rgb2ycbcr`` /
``ycbcr2rgb`` (and BasicSR's ``rgb2ycbcr``/``ycbcr2rgb``), with RGB in [0, 1]:

    Y  =  16 + ( 65.481 R + 128.553 G +  24.966 B)
    Cb = 128 + (-37.797 R -  74.203 G + 112.000 B)
    Cr = 128 + (112.000 R -  93.786 G -  18.214 B)

Y, Cb, Cr come out on the [0, 255] scale: Y in [16, 235], Cb and Cr in [16, 240]. Pure
white gives Y = 235, black Y = 16. The inverse uses the exact inverse of this matrix
(MATLAB's ``ycbcr2rgb``); BasicSR rounds the inverse's coefficients to 8 digits.

Both functions keep the scale of their input: an image with values in [0, ``data_range``]
gives YCbCr values scaled the same way (``Y * data_range / 255``), so [0, 1] floats map to
[16/255, 235/255] like MATLAB's double path, and [0, 255] values map to [16, 235].
Nothing is rounded: MATLAB rounds when its input is ``uint8`` (the output is ``uint8``);
BasicSR's metrics and fastsr do not (see :mod:`fastsr.metrics.psnr_ssim`).
"""
from __future__ import annotations

import numpy as np
import torch

# Rows: Y, Cb, Cr; columns: R, G, B. Multiply RGB in [0, 1], add OFFSET: [0, 255] scale.
_MATRIX = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_OFFSET = (16.0, 128.0, 128.0)


def _matrix(inverse: bool) -> np.ndarray:
    m = np.array(_MATRIX, dtype=np.float64)
    return np.linalg.inv(m) if inverse else m


def _scale(img, data_range):
    if data_range is None:
        is_uint8 = img.dtype == torch.uint8 if isinstance(img, torch.Tensor) else img.dtype == np.uint8
        return 255.0 if is_uint8 else 1.0
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    return float(data_range)


def _apply(img, matrix: np.ndarray, offset_in: np.ndarray, offset_out: np.ndarray, data_range, name: str):
    """out = matrix @ (img * 255 / dr - offset_in) / 255 * dr + offset_out * dr / 255, per pixel."""
    if not isinstance(img, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(img).__name__}")
    dr = _scale(img, data_range)
    if isinstance(img, torch.Tensor):
        if img.dim() < 3 or img.shape[-3] != 3:
            raise ValueError(f"{name}: expected a (..., 3, H, W) tensor, got shape {tuple(img.shape)}")
        if not (img.is_floating_point() or img.dtype == torch.uint8):
            raise TypeError(f"{name}: expected a floating-point or uint8 tensor, got {img.dtype}")
        dtype = img.dtype if img.is_floating_point() else torch.float64
        x = img.to(dtype)
        m = torch.as_tensor(matrix, dtype=dtype, device=img.device)
        oi = torch.as_tensor(offset_in * dr / 255.0, dtype=dtype, device=img.device).view(-1, 1, 1)
        oo = torch.as_tensor(offset_out * dr / 255.0, dtype=dtype, device=img.device).view(-1, 1, 1)
        return torch.einsum("ij,...jhw->...ihw", m, x - oi) + oo
    else:
        if img.ndim < 3 or img.shape[-1] != 3:
            raise ValueError(f"{name}: expected an (..., H, W, 3) array, got shape {img.shape}")
        if not (np.issubdtype(img.dtype, np.floating) or img.dtype == np.uint8):
            raise TypeError(f"{name}: expected a floating-point or uint8 array, got {img.dtype}")
        x = img.astype(np.float64)
        return (x - offset_in * dr / 255.0) @ matrix.T + offset_out * dr / 255.0


def rgb_to_ycbcr(img, y_only: bool = False, data_range: float | None = None):
    """RGB -> YCbCr (MATLAB ``rgb2ycbcr``, ITU-R BT.601), on the input's value scale.

    Args:
        img: RGB image(s). A tensor (..., 3, H, W) (NCHW or CHW) or a numpy array
            (..., H, W, 3) (HWC), floating point or uint8, values in [0, ``data_range``].
        y_only: return only the luma Y (channel dimension kept, of size 1).
        data_range: the value of full white; default 255 for uint8 input, else 1.0.

    Returns:
        YCbCr (or Y) with the layout of ``img`` and the same scale: Y in
        [16, 235] * data_range / 255. Floating tensors keep their dtype; uint8 tensors and
        all numpy arrays give float64. Not rounded.

    Raises:
        ValueError: the channel dimension is not 3, or ``data_range`` is not positive.
        TypeError: not a tensor/array, or an integer dtype other than uint8.
    """
    m = _matrix(False)
    if y_only:
        m = m[:1]
        off_out = np.array(_OFFSET[:1])
    else:
        off_out = np.array(_OFFSET)
    return _apply(img, m / 255.0, np.zeros(3), off_out, data_range, "rgb_to_ycbcr")


def ycbcr_to_rgb(img, data_range: float | None = None):
    """YCbCr -> RGB (MATLAB ``ycbcr2rgb``), the exact inverse of :func:`rgb_to_ycbcr`.

    Args:
        img: YCbCr image(s), layout and value scale as for :func:`rgb_to_ycbcr` (Y in
            [16, 235] * data_range / 255).
        data_range: the scale; default 255 for uint8 input, else 1.0.

    Returns:
        RGB on the same scale, not clipped (out-of-gamut YCbCr gives values outside
        [0, data_range]) and not rounded; dtype as for :func:`rgb_to_ycbcr`.

    Raises:
        ValueError / TypeError: as :func:`rgb_to_ycbcr`.
    """
    return _apply(img, _matrix(True) * 255.0, np.array(_OFFSET), np.zeros(3), data_range, "ycbcr_to_rgb")
