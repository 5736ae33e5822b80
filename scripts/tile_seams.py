"""Max difference between tiled and untiled upscaling with the shipped model at tile borders.

Compares fastsr's blended tiles (:func:`fastsr.evaluate.upscale_image`) with hard-cut
tiles (each tile's centre pasted into the output, its context cut off: the scheme of
Real-ESRGAN's tiled inference) on the held-back sample photographs, LR made by the
default bicubic degradation. Prints the max absolute difference in 8-bit levels, of the
float outputs and after quantising both to 8 bits, for a few ``tile_pad`` values.

    python scripts/tile_seams.py [--tile 48] [--pads 4,8,16]
"""
import argparse

import torch

from fastsr.evaluate import sample_pairs, upscale_image
from fastsr.models import load, pretrained_path


@torch.no_grad()
def hard_cut(model, lr, scale, tile, pad):
    """Tiles of ``tile`` LR pixels plus ``pad`` of context (clipped at the image border),
    the context cut from the output."""
    _, c, h, w = lr.shape
    out = torch.zeros(1, c, h * scale, w * scale)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0, py1, px1 = max(y0 - pad, 0), max(x0 - pad, 0), min(y1 + pad, h), min(x1 + pad, w)
            sr = model(lr[:, :, py0:py1, px0:px1]).clamp(0, 1)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                sr[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


def q8(x):
    return x.mul(255).add(0.5).floor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=48, help="LR tile side of the blended tiles")
    ap.add_argument("--pads", default="4,8,16")
    args = ap.parse_args()
    model, detected = load(pretrained_path("nonbn_x4"))
    model.eval()
    print(f"model: {detected}; tile {args.tile}; max |tiled - untiled| in 8-bit levels (float / quantised)")
    for name, lr, _ in sample_pairs(detected.scale):
        lr = lr[None]
        ref = upscale_image(model, lr, detected.scale)
        for pad in map(int, args.pads.split(",")):
            blended = upscale_image(model, lr, detected.scale, args.tile, pad)
            # the same tile shape the model sees: core = tile - 2 * pad
            cut = hard_cut(model, lr, detected.scale, args.tile - 2 * pad, pad)
            row = []
            for label, x in (("hard cut", cut), ("blended", blended)):
                row.append(f"{label} {(x - ref).abs().max().item() * 255:.4f} / "
                           f"{(q8(x) - q8(ref)).abs().max().item():.0f}")
            print(f"{name} {tuple(lr.shape[-2:])} pad {pad:2d}: " + ", ".join(row))


if __name__ == "__main__":
    main()
