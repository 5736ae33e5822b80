"""PSNR and SSIM computed the way SR papers compute them (MATLAB / BasicSR conventions).

The pipeline, applied identically to ``sr`` and ``hr`` (each step names the BasicSR code
it reproduces):

1. **Quantise** (``quantize=True``, the default, float inputs only): clamp to
   [0, data_range], map to [0, 255] and round half to even, in float32 -- exactly
   BasicSR's ``tensor2img`` (``.float().clamp_(0, 1)``, ``(img * 255.0).round()``,
   ``uint8``), which its validation loop applies to the SR output before
   ``calculate_psnr``/``calculate_ssim``, and what saving a PNG and evaluating it in MATLAB
   does. uint8 inputs are already quantised. ``quantize=False`` skips this step and scales
   by ``255 / data_range`` instead, as BasicSR's ``calculate_psnr_pt``/``calculate_ssim_pt``
   do (they never round).
2. **float64** from here on (BasicSR: ``img.astype(np.float64)``).
3. **crop_border**: ``crop_border`` pixels removed from each of the four sides (the SR
   convention is ``crop_border = scale``).
4. **Y channel** (``test_y_channel=True``, 3-channel images): Y = 16 + (65.481 R +
   128.553 G + 24.966 B) / 255 with R, G, B on [0, 255] (MATLAB ``rgb2ycbcr``, ITU-R BT.601;
   see :mod:`fastsr.metrics.color`), **not rounded**, on the [0, 255] scale -- BasicSR's
   ``to_y_channel`` ("without round"). One-channel images are used as they are.
   MATLAB's ``rgb2ycbcr`` on a uint8 image returns uint8, i.e. a rounded Y; evaluation
   scripts that call it on uint8 images therefore differ from BasicSR (and from us) by
   about 0.01 dB (measured: 0.0075 dB on a 256x256 astronaut crop, bicubic x4,
   crop_border 4). BasicSR computes Y in float32; we use float64 (measured difference on
   the same image: 9e-8 dB).
5. **PSNR** = 10 log10(255^2 / MSE) in dB, the MSE over all channels and pixels of an
   image (BasicSR ``calculate_psnr``); +inf for identical images. Equivalently
   10 log10(data_range^2 / MSE) on the input scale. ``calculate_psnr_pt`` adds 1e-8 to the
   MSE of [0, 1] values (so it never returns inf); we do not.
6. **SSIM** (Wang et al. 2004, eq. 13) on the [0, 255] values with L = 255, K1 = 0.01,
   K2 = 0.03 and an 11x11 Gaussian window of sigma 1.5 (normalised, separable -- the same
   window as ``cv2.getGaussianKernel(11, 1.5)``) applied 'valid' (the map is (H-10)x(W-10);
   BasicSR filters with ``cv2.filter2D`` and then crops 5 pixels, which is the same thing);
   the image's SSIM is the mean of the map. A 3-channel image (``test_y_channel=False``)
   gets the SSIM of each channel averaged, as ``calculate_ssim``; averaging the per-channel
   means equals the mean over all channels and positions, which is what
   :func:`fastsr.ops.ssim` returns. No automatic downsampling (the 2009 ``ssim.m`` of Wang
   downsamples images larger than 256 px; ``ssim_index.m``, BasicSR and the SR papers'
   scripts do not).

So ``psnr(sr, hr, crop_border=scale, test_y_channel=True)`` on [0, 1] tensors equals
BasicSR's ``calculate_psnr(tensor2img(sr), tensor2img(hr), crop_border=scale,
test_y_channel=True)`` (up to the float32 Y noted above), and likewise for SSIM. BasicSR's
numpy path reads BGR images (OpenCV) and converts with ``bgr2ycbcr``; fastsr takes RGB.

Every value is per image: both functions return a float64 tensor of shape (N,). The mean
over a data set (the number papers tabulate) is the mean of the per-image values, as
BasicSR and the MATLAB scripts average; :func:`fastsr.metrics.format_table` prints both.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fastsr.metrics.color import rgb_to_ycbcr

_Image = torch.Tensor | np.ndarray


def _to_nchw255(img, data_range, quantize: bool, name: str, fn: str) -> torch.Tensor:
    """One argument of psnr/ssim -> float64 (N, C, H, W) on [0, 255] (quantised if asked)."""
    if isinstance(img, np.ndarray):
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise ValueError(f"{fn}: {name} as a numpy array must be HWC or HW, got shape {img.shape}")
        if not (img.dtype == np.uint8 or np.issubdtype(img.dtype, np.floating)):
            raise TypeError(f"{fn}: {name} must be a uint8 or floating-point array, got {img.dtype}")
        if data_range is None and img.dtype != np.uint8:
            raise ValueError(
                f"{fn}: {name} is a floating-point numpy array; pass data_range (1.0 for [0, 1] "
                "values, 255 for [0, 255]) -- it cannot be guessed"
            )
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    elif isinstance(img, torch.Tensor):
        t = img.detach()
        if t.dim() == 3:
            t = t[None]
        if t.dim() != 4:
            raise ValueError(f"{fn}: {name} as a tensor must be NCHW or CHW, got shape {tuple(img.shape)}")
        if not (t.dtype == torch.uint8 or t.is_floating_point()):
            raise TypeError(f"{fn}: {name} must be a uint8 or floating-point tensor, got {t.dtype}")
    else:
        raise TypeError(f"{fn}: {name} must be a torch.Tensor or numpy.ndarray, got {type(img).__name__}")

    if t.dtype == torch.uint8:
        if data_range not in (None, 255, 255.0):
            raise ValueError(f"{fn}: {name} is uint8, so data_range must be 255 (or None), got {data_range!r}")
        return t.to(torch.float64)
    dr = 1.0 if data_range is None else data_range
    if quantize:
        # BasicSR tensor2img: float32, clamp, (x - 0) / (dr - 0), * 255.0, round half to even.
        t = t.float().clamp(0.0, dr)
        t = ((t / dr) * 255.0).round()
        return t.to(torch.float64)
    return t.to(torch.float64) * (255.0 / dr)


def _check_data_range(data_range, fn):
    if data_range is None:
        return
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not (
        np.isfinite(data_range) and data_range > 0
    ):
        raise ValueError(f"{fn}: data_range must be a finite number > 0 (or None), got {data_range!r}")


def prepare_y(img: _Image, data_range: float | None, quantize: bool, name: str, fn: str) -> torch.Tensor:
    """Steps 1, 2 and 4 of the pipeline for one image argument of the metric ``fn``: float64
    (N, 1, H, W) on the [0, 255] scale, the Y channel of RGB (one-channel images as they
    are). Errors name ``fn`` and the argument ``name``.

    Raises:
        ValueError / TypeError: as :func:`psnr` for one image; not 1 or 3 channels.
    """
    _check_data_range(data_range, fn)
    x = _to_nchw255(img, data_range, quantize, name, fn)
    if x.shape[1] == 3:
        return rgb_to_ycbcr(x, y_only=True, data_range=255.0)
    if x.shape[1] != 1:
        raise ValueError(f"{fn}: {name} must have 3 (RGB) or 1 channels, got {x.shape[1]}")
    return x


def _prepare(sr, hr, crop_border, test_y_channel, data_range, quantize, fn):
    _check_data_range(data_range, fn)
    if type(sr) is not type(hr) and not (isinstance(sr, torch.Tensor) and isinstance(hr, torch.Tensor)):
        raise TypeError(
            f"{fn}: sr and hr must be the same kind (both tensors or both numpy arrays), "
            f"got {type(sr).__name__} and {type(hr).__name__}"
        )
    if sr.shape != hr.shape:
        raise ValueError(f"{fn}: sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    if isinstance(sr, torch.Tensor) and sr.device != hr.device:
        raise ValueError(f"{fn}: sr and hr must be on the same device, got {sr.device} and {hr.device}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"{fn}: crop_border must be an int >= 0, got {crop_border!r}")
    x = _to_nchw255(sr, data_range, quantize, "sr", fn)
    y = _to_nchw255(hr, data_range, quantize, "hr", fn)
    H, W = x.shape[-2:]
    if crop_border:
        if 2 * crop_border >= min(H, W):
            raise ValueError(f"{fn}: crop_border={crop_border} leaves nothing of a {H}x{W} image")
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        C = x.shape[1]
        if C == 3:
            x = rgb_to_ycbcr(x, y_only=True, data_range=255.0)
            y = rgb_to_ycbcr(y, y_only=True, data_range=255.0)
        elif C != 1:
            raise ValueError(f"{fn}: test_y_channel needs RGB (3 channels) or 1-channel images, got {C} channels")
    return x, y


def psnr(
    sr: _Image,
    hr: _Image,
    crop_border: int = 0,
    test_y_channel: bool = False,
    data_range: float | None = None,
    *,
    quantize: bool = True,
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB (BasicSR ``calculate_psnr`` / MATLAB).

    Args:
        sr, hr: the super-resolved and ground-truth images, same shape and kind: tensors
            (N, C, H, W) or (C, H, W), floating point in [0, ``data_range``] or uint8; or
            numpy arrays (H, W, C) or (H, W), uint8 (or floating point with an explicit
            ``data_range``). RGB channel order.
        crop_border: pixels removed from each side before measuring (SR papers: the scale).
        test_y_channel: measure the Y channel of YCbCr (BT.601) instead of RGB.
        data_range: value of white; default 1.0 for float tensors, 255 for uint8; required
            for floating-point numpy arrays.
        quantize: round float inputs to 8 bits first (BasicSR ``tensor2img``); see the
            module docstring.

    Returns:
        float64 tensor (N,) on the input's device (CPU for numpy): PSNR in dB of each image,
        +inf where the images are identical.

    Raises:
        ValueError: different shapes or devices, bad layout, ``crop_border`` negative or too
            large, ``test_y_channel`` with neither 1 nor 3 channels, a bad ``data_range``.
        TypeError: unsupported types or dtypes, a tensor paired with an array.
    """
    x, y = _prepare(sr, hr, crop_border, test_y_channel, data_range, quantize, "psnr")
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10((255.0 * 255.0) / mse)  # mse == 0 -> +inf


def ssim(
    sr: _Image,
    hr: _Image,
    crop_border: int = 0,
    test_y_channel: bool = False,
    data_range: float | None = None,
    *,
    quantize: bool = True,
) -> torch.Tensor:
    """Structural similarity per image (BasicSR ``calculate_ssim`` / MATLAB ``ssim_index``).

    Gaussian 11x11 window, sigma 1.5, 'valid' filtering, K1 = 0.01, K2 = 0.03, L = 255 on
    [0, 255] values, float64; channels averaged. The SSIM map comes from the fused op
    :func:`fastsr.ops.ssim`. Arguments, value handling and errors as :func:`psnr`; the
    (cropped) images must be at least 11x11.

    Returns:
        float64 tensor (N,): SSIM of each image, 1 for identical images, at most 1.

    Source: Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004, eq. 13 and Sec. III-C.
    """
    from fastsr import ops

    x, y = _prepare(sr, hr, crop_border, test_y_channel, data_range, quantize, "ssim")
    H, W = x.shape[-2:]
    if H < 11 or W < 11:
        raise ValueError(f"ssim: images must be at least 11x11 after crop_border, got {H}x{W}")
    return ops.ssim(x.contiguous(), y.contiguous(), data_range=255.0, window_size=11, sigma=1.5, k1=0.01, k2=0.03)


def channel_mean_error(
    sr: _Image,
    hr: _Image,
    crop_border: int = 0,
    data_range: float | None = None,
    *,
    quantize: bool = True,
) -> torch.Tensor:
    """Mean signed error ``SR - HR`` of each colour channel of each image, in 8-bit levels:
    the colour cast of an SR result (a global tint that PSNR and the Y-channel metrics
    barely show).

    The images go through the same steps 1-3 as :func:`psnr` (quantised to 8 bits by
    default, float64, ``crop_border`` removed) and are compared per channel on the [0, 255]
    scale, RGB (never Y): ``mean over H, W of (sr - hr)``. A value of -1.0 in G means the
    result is on average one 8-bit level too dark in green. Bicubic interpolation of a
    bicubic-downsampled photograph scores about 0.0 (|error| < 0.1 levels on the sample
    photographs).

    Args:
        sr, hr: as for :func:`psnr`: tensors (N, C, H, W) or (C, H, W), floating point in
            [0, ``data_range``] or uint8; or numpy arrays (H, W, C) or (H, W), uint8 (or
            floating point with an explicit ``data_range``).
        crop_border: pixels removed from each side first (SR papers: the scale).
        data_range: value of white; default 1.0 for float tensors, 255 for uint8.
        quantize: round float inputs to 8 bits first (as :func:`psnr`).

    Returns:
        float64 tensor (N, C) on the input's device (CPU for numpy), in 8-bit levels
        (1 level = 1/255 of ``data_range``); positive = SR brighter than HR in that channel.

    Raises:
        ValueError / TypeError: as :func:`psnr` (shapes, devices, layout, ``crop_border``,
        ``data_range``, dtypes).
    """
    x, y = _prepare(sr, hr, crop_border, False, data_range, quantize, "channel_mean_error")
    return (x - y).mean(dim=(2, 3))


def psnr_ssim_lists(
    srs: Sequence[_Image],
    hrs: Sequence[_Image],
    crop_border: int = 0,
    test_y_channel: bool = False,
    data_range: float | None = None,
    *,
    quantize: bool = True,
) -> tuple[list[float], list[float]]:
    """PSNR and SSIM of image pairs of different sizes (a Set5/Set14-style test set).

    Each pair is measured as by :func:`psnr` and :func:`ssim` (one image or one batch per
    pair); returns two flat lists of per-image values (dB, SSIM).

    Raises:
        ValueError: the two sequences differ in length; any error of :func:`psnr`.
    """
    if len(srs) != len(hrs):
        raise ValueError(f"psnr_ssim_lists: got {len(srs)} sr images and {len(hrs)} hr images")
    p, s = [], []
    for a, b in zip(srs, hrs):
        p += psnr(a, b, crop_border, test_y_channel, data_range, quantize=quantize).tolist()
        s += ssim(a, b, crop_border, test_y_channel, data_range, quantize=quantize).tolist()
    return p, s
