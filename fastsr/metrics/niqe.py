"""NIQE (Mittal et al. 2013, "Making a 'Completely Blind' Image Quality Analyzer"), the
no-reference score of perceptual SR papers, computed by BasicSR's own code.

BasicSR's ``basicsr.metrics.niqe`` reproduces the MATLAB release (its docstring: 5.7296 on
``baboon.png`` in both) with the pristine-image model that ships in the package
(``niqe_pris_params.npz``): lower is more natural. Importing it the usual way runs
``basicsr/__init__``, which imports the whole toolbox (OpenCV, torchvision, ...); the NIQE code
itself needs only NumPy, SciPy and BasicSR's MATLAB ``imresize``. :func:`niqe` therefore
loads ``basicsr/metrics/niqe.py`` with the three BasicSR modules it names
(``metrics/metric_util.py``, ``utils/matlab_functions.py``, ``utils/registry.py``) from the
installed package's files when the normal import fails, without the package ``__init__``
and without OpenCV (used only by ``convert_to='gray'``); nothing is downloaded.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

import numpy as np
import torch

from fastsr.metrics.psnr_ssim import _Image, prepare_y

__all__ = ["niqe", "basicsr_niqe_module"]

_LOCK = threading.Lock()
_MODULE: types.ModuleType | None = None


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _package(name: str, path: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


def _load_without_init() -> types.ModuleType:
    """``basicsr.metrics.niqe`` from its file, its BasicSR imports satisfied from theirs; the
    stand-in package entries are removed from ``sys.modules`` afterwards."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("NIQE needs BasicSR (pip install basicsr --no-deps): it is not installed")
    root = Path(spec.submodule_search_locations[0])
    names = ("basicsr", "basicsr.utils", "basicsr.metrics", "basicsr.utils.color_util",
             "basicsr.utils.matlab_functions", "basicsr.utils.registry", "basicsr.metrics.metric_util",
             "basicsr.metrics.niqe", "cv2")
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    try:
        _package("basicsr", root)
        utils = _package("basicsr.utils", root / "utils")
        _package("basicsr.metrics", root / "metrics")
        utils.bgr2ycbcr = _load_file("basicsr.utils.color_util", root / "utils" / "color_util.py").bgr2ycbcr
        _load_file("basicsr.utils.matlab_functions", root / "utils" / "matlab_functions.py")
        _load_file("basicsr.utils.registry", root / "utils" / "registry.py")
        _load_file("basicsr.metrics.metric_util", root / "metrics" / "metric_util.py")
        if "cv2" not in saved:
            sys.modules["cv2"] = types.ModuleType("cv2")  # only convert_to='gray' would use it
        return _load_file("basicsr.metrics.niqe", root / "metrics" / "niqe.py")
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def basicsr_niqe_module() -> types.ModuleType:
    """BasicSR's ``basicsr.metrics.niqe`` module (imported normally where BasicSR's
    dependencies are installed, else loaded from its file; see the module docstring).

    Raises:
        ImportError: BasicSR is not installed.
    """
    global _MODULE
    with _LOCK:
        if _MODULE is None:
            before = set(sys.modules)
            try:
                _MODULE = importlib.import_module("basicsr.metrics.niqe")
            except ImportError:
                # a failed package import leaves the submodules it had loaded behind
                for name in [n for n in sys.modules if n.split(".")[0] == "basicsr" and n not in before]:
                    del sys.modules[name]
                _MODULE = _load_without_init()
        return _MODULE


def niqe(img: _Image, crop_border: int = 0, data_range: float | None = None, *, quantize: bool = True) -> torch.Tensor:
    """NIQE of each image, as BasicSR's ``calculate_niqe(img, crop_border,
    convert_to='y')``: on the Y channel (BT.601, [0, 255] scale, not rounded, as BasicSR's
    ``to_y_channel``), ``crop_border`` pixels removed from each side, Y rounded to integers,
    then 96 x 96 blocks without overlap at two scales against the pristine model shipped in
    BasicSR. Lower is better (more natural).

    Args:
        img: (N, 3, H, W) / (3, H, W) RGB tensor in [0, ``data_range``] or uint8, or an
            HWC RGB numpy array (one-channel images are used as they are), as
            :func:`fastsr.metrics.psnr` takes it. RGB, not BasicSR's BGR.
        crop_border: pixels removed from each side (SR papers: the scale).
        quantize: round float inputs to 8 bits first (BasicSR scores saved 8-bit images).

    Returns:
        float64 tensor (N,) on the CPU.

    Raises:
        ValueError: ``crop_border`` negative or too large, or fewer than two 96 x 96 blocks
            left (NIQE fits a covariance over the blocks); the errors of
            :func:`fastsr.metrics.psnr`.
        ImportError: BasicSR is not installed.
    """
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"niqe: crop_border must be an int >= 0, got {crop_border!r}")
    y = prepare_y(img, data_range, quantize, "img", "niqe")[:, 0]
    H, W = y.shape[-2:]
    if crop_border:
        if 2 * crop_border >= min(H, W):
            raise ValueError(f"niqe: crop_border={crop_border} leaves nothing of a {H}x{W} image")
        y = y[:, crop_border:-crop_border, crop_border:-crop_border]
    h, w = y.shape[-2:]
    if (h // 96) * (w // 96) < 2:
        raise ValueError(f"niqe: the image must hold at least two 96x96 blocks after crop_border, got {h}x{w}")
    mod = basicsr_niqe_module()
    params = np.load(Path(mod.__file__).with_name("niqe_pris_params.npz"))
    out = []
    for plane in y.cpu().numpy():
        # BasicSR computes Y in float32 and rounds it ("consistent with MATLAB's result")
        plane = plane.astype(np.float32).round()
        out.append(mod.niqe(plane, params["mu_pris_param"], params["cov_pris_param"], params["gaussian_window"]))
    return torch.tensor(out, dtype=torch.float64)
