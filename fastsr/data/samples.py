"""The embedded default data set: real colour photographs bundled with scikit-image."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["SAMPLE_TRAIN", "SAMPLE_VAL", "sample_images"]

#: Training photographs (names as in ``skimage.data``; the motorcycle pair is
#: ``stereo_motorcycle()``'s left and right views).
SAMPLE_TRAIN = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right", "immunohistochemistry",
                "hubble_deep_field")
#: Held-back validation photographs (never in the training split).
SAMPLE_VAL = ("chelsea", "coffee")


def _load(name: str) -> np.ndarray:
    import skimage.data as d

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = d.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(d, name)()


def sample_images(split: str = "train") -> list[tuple[str, torch.Tensor]]:
    """The scikit-image colour photographs as ``(name, image)`` pairs.

    ``image`` is a float32 (3, H, W) tensor in [0, 1] (sizes 300x451 to 1000x872 px). The
    split is fixed: ``"train"`` = :data:`SAMPLE_TRAIN` (6 photos), ``"val"`` =
    :data:`SAMPLE_VAL` (chelsea, coffee), ``"all"`` = both. No network access: these files
    ship inside scikit-image.

    Raises:
        ValueError: unknown ``split``.
    """
    names = {"train": SAMPLE_TRAIN, "val": SAMPLE_VAL, "all": SAMPLE_TRAIN + SAMPLE_VAL}.get(split)
    if names is None:
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    out = []
    for n in names:
        arr = _load(n)
        x = torch.from_numpy(np.ascontiguousarray(arr[:, :, :3].transpose(2, 0, 1))).float().div_(255.0)
        out.append((n, x))
    return out
