"""Loading a trained generator from a checkpoint and running it on whole images (tiled)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from fastsr.train import builders
from fastsr.train.checkpoint import CheckpointError, load_generator_weights, read_metadata

__all__ = ["load_generator", "upscale_image"]


def load_generator(path, weights: str = "auto", device="cpu") -> tuple[nn.Module, int]:
    """Rebuild the generator saved in a fastsr safetensors checkpoint, in eval mode.

    Args:
        path: ``*.safetensors`` written by ``fastsr train`` (metadata says which model).
        weights: ``"params"``, ``"params_ema"`` or ``"auto"`` (the EMA when present).

    Returns:
        ``(model, scale)``.

    Raises:
        CheckpointError: missing/unreadable file, no fastsr metadata, missing weight group.
        ValueError: the weights do not fit the model (missing/unexpected keys listed).
    """
    path = Path(path)
    meta = read_metadata(path)
    spec = meta.get("generator")
    if meta.get("format") != "fastsr" or not isinstance(spec, dict):
        raise CheckpointError(f"{path} is not a fastsr generator checkpoint (no 'generator' metadata)")
    if weights not in ("auto", "params", "params_ema"):
        raise ValueError(f"weights must be 'auto', 'params' or 'params_ema', got {weights!r}")
    if weights == "auto":
        try:
            sd = load_generator_weights(path, "params_ema")
        except CheckpointError:
            sd = load_generator_weights(path, "params")
    else:
        sd = load_generator_weights(path, weights)
    model = builders.build_generator(spec)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit {spec.get('name')}: missing keys {missing[:10]}, "
                              f"unexpected keys {unexpected[:10]}")
    return model.to(device).eval(), int(meta.get("scale", spec.get("scale", 1)))


@torch.no_grad()
def upscale_image(model: nn.Module, lr: torch.Tensor, scale: int, tile: int = 0, tile_pad: int = 16,
                  autocast_bf16: bool = False) -> torch.Tensor:
    """Run ``model`` on an LR image (1, 3, h, w) in [0, 1]; returns (1, 3, h*scale, w*scale) in [0, 1].

    With ``tile > 0`` the image is processed in ``tile`` x ``tile`` LR tiles, each with
    ``tile_pad`` LR pixels of context on every side (clipped at the image border) that are
    cut from the output. The result equals the untiled one (up to float rounding) whenever
    the generator's receptive-field radius is at most ``tile_pad`` LR pixels and it has no
    batch-dependent layers in eval mode; for deeper models the seams differ by far less than
    one 8-bit level with the default pad on natural images, which ``fastsr upscale`` does
    not guarantee -- raise ``tile_pad`` if in doubt. Memory is bounded by one padded tile.

    Raises:
        ValueError: bad shape, ``tile`` < 0 or ``tile_pad`` < 0.
    """
    if lr.dim() != 4 or lr.shape[:2] != (1, 3):
        raise ValueError(f"upscale_image: expected a (1, 3, h, w) tensor, got {tuple(lr.shape)}")
    if tile < 0 or tile_pad < 0:
        raise ValueError(f"tile and tile_pad must be >= 0, got {tile}, {tile_pad}")
    dev = next(model.parameters()).device
    ctx = torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if autocast_bf16 else _null()

    def run(x):
        with ctx:
            return model(x.to(dev)).float().clamp_(0, 1).cpu()

    _, _, h, w = lr.shape
    if tile == 0 or (h <= tile and w <= tile):
        return run(lr)
    out = torch.zeros(1, 3, h * scale, w * scale)
    for ty in range(math.ceil(h / tile)):
        for tx in range(math.ceil(w / tile)):
            y0, x0 = ty * tile, tx * tile
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            sr = run(lr[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                sr[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
