"""The embedded default data set: real colour photographs that install with fastsr's
dependencies (scikit-image's ``skimage.data``, and matplotlib's bundled sample photograph
when matplotlib is installed). Nothing is downloaded."""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["SAMPLE_TRAIN", "SAMPLE_VAL", "sample_images"]

#: Training photographs: every colour photograph bundled with scikit-image (names as in
#: ``skimage.data``; the motorcycle pair is ``stereo_motorcycle()``'s left and right views;
#: ``retina`` is a fundus photograph) except the held-back ones, plus matplotlib's
#: ``grace_hopper.jpg`` (``matplotlib.cbook.get_sample_data``). Not photographs, so left
#: out: ``colorwheel``, ``logo``, ``chessboard_RGB`` (synthetic), matplotlib's
#: ``Minduka_Present_Blue_Pack.png`` (a 128-px clip-art icon), the greyscale images.
SAMPLE_TRAIN = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right", "immunohistochemistry",
                "hubble_deep_field", "retina", "grace_hopper")
#: Held-back validation photographs (never in the training split).
SAMPLE_VAL = ("chelsea", "coffee")

#: Photographs that come from matplotlib, an optional dependency.
_MATPLOTLIB = ("grace_hopper",)


def _load(name: str) -> np.ndarray:
    if name == "grace_hopper":
        from matplotlib import cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
            return np.asarray(im.convert("RGB"))
    import skimage.data as d

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = d.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(d, name)()


def _have_matplotlib() -> bool:
    try:
        import matplotlib.cbook  # noqa: F401
    except ImportError:
        return False
    return True


def sample_images(split: str = "train") -> list[tuple[str, torch.Tensor]]:
    """The bundled colour photographs as ``(name, image)`` pairs.

    ``image`` is a float32 (3, H, W) tensor in [0, 1] (sizes 300x451 to 1411x1411 px). The
    split is fixed: ``"train"`` = :data:`SAMPLE_TRAIN` (8 photos), ``"val"`` =
    :data:`SAMPLE_VAL` (chelsea, coffee), ``"all"`` = both. No network access: the files
    ship inside scikit-image and matplotlib. Without matplotlib installed, ``grace_hopper``
    is left out of the training split with a warning (the names returned say which
    photographs were used).

    Raises:
        ValueError: unknown ``split``.
    """
    names = {"train": SAMPLE_TRAIN, "val": SAMPLE_VAL, "all": SAMPLE_TRAIN + SAMPLE_VAL}.get(split)
    if names is None:
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    missing = [n for n in names if n in _MATPLOTLIB] if not _have_matplotlib() else []
    if missing:
        warnings.warn(f"matplotlib is not installed: sample photograph(s) {', '.join(missing)} left out "
                      "(pip install matplotlib to use them)", stacklevel=2)
    out = []
    for n in names:
        if n in missing:
            continue
        arr = _load(n)
        x = torch.from_numpy(np.ascontiguousarray(arr[:, :, :3].transpose(2, 0, 1))).float().div_(255.0)
        out.append((n, x))
    return out
