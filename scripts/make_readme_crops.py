"""Side-by-side crops for the README: bicubic | model(s) | HR of held-back photographs, one PNG.

    PYTHONPATH=$PWD python scripts/make_readme_crops.py -o docs/crops.png
    PYTHONPATH=$PWD python scripts/make_readme_crops.py -o crops.png \\
        --model shipped=fastsr/weights/nonbn_x4.safetensors --model corpus=runs/nonbn_corpus_x4/checkpoints/latest.safetensors \\
        --at mate_Storm=512,128 --pick smooth

Each row is one photograph of ``--data`` (default ``data/corpus/val``) and fastsr's held-back
sample photographs: the LR image is the MATLAB-bicubic x``scale`` reduction of the whole HR
image (as :mod:`scripts.judge_model`), then a ``--crop`` px HR square is shown as the bicubic
upscale, each model's output and the HR original, magnified ``--zoom`` times with
nearest-neighbour so the pixels stay visible, with a label and the crop's Y-PSNR against HR.
The models see the LR crop with ``--context`` LR pixels of the real image around it (no
tile border in the shown area). The crop is placed by ``--at NAME=X,Y`` (HR pixels of its
top-left corner), or else automatically (``--pick``): ``detail``, the window with the
largest HR gradient energy, or ``smooth``, the flattest window that is not flat (median
gradient), where a checkerboard shows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fastsr import metrics
from fastsr.data import degrade, list_images, mod_crop, read_image, sample_images
from fastsr.evaluate import bicubic_upscale, load_generator
from fastsr.models import list_pretrained, pretrained_path

ROOT = Path(__file__).resolve().parents[1]
LABEL_H = 18


def pick_window(hr: torch.Tensor, crop: int, scale: int, how: str) -> tuple[int, int]:
    """Top-left (x, y) of a ``crop`` px window on the scale grid (see the module docstring)."""
    y = metrics.rgb_to_ycbcr(hr[None] * 255, y_only=True, data_range=255.0)[0, 0].double()
    gy, gx = torch.gradient(y)
    g = (gx * gx + gy * gy).sqrt()
    step = max(scale, crop // 4 // scale * scale)
    H, W = g.shape
    cands = [(x, yy) for yy in range(0, H - crop + 1, step) for x in range(0, W - crop + 1, step)]
    if not cands:
        raise ValueError(f"the image ({W}x{H}) is smaller than --crop {crop}")
    score = [float(g[yy:yy + crop, x:x + crop].mean()) for x, yy in cands]
    if how == "detail":
        return cands[int(np.argmax(score))]
    target = float(np.median(score)) / 4  # flat, but not a blank sky at 0
    return cands[int(np.argmin([abs(s - target) for s in score]))]


def crops_of(name, hr, models, scale, x, y, crop, context) -> list[tuple[str, torch.Tensor]]:
    """``[(label, (3, crop, crop) image)]``: bicubic, each model, HR."""
    lr = degrade(hr, scale)
    c, p = crop // scale, context
    lx, ly = x // scale, y // scale
    x0, y0 = max(0, lx - p), max(0, ly - p)
    x1, y1 = min(lr.shape[-1], lx + c + p), min(lr.shape[-2], ly + c + p)
    patch = lr[None, :, y0:y1, x0:x1]
    ox, oy = (lx - x0) * scale, (ly - y0) * scale
    ref = hr[:, y:y + crop, x:x + crop]

    def cut(img):
        return img[0, :, oy:oy + crop, ox:ox + crop].clamp(0, 1)

    out = [("bicubic", cut(bicubic_upscale(patch, scale)))]
    for label, model in models:
        with torch.no_grad():
            out.append((label, cut(model(patch))))
    out = [(f"{lab} {float(metrics.psnr(img, ref, test_y_channel=True)):.2f} dB", img) for lab, img in out]
    return out + [(f"HR ({name})", ref)]


def to_pil(img: torch.Tensor, zoom: int) -> Image.Image:
    arr = (img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    return im.resize((im.width * zoom, im.height * zoom), Image.Resampling.NEAREST)


def compose(rows: list[list[tuple[str, torch.Tensor]]], zoom: int, gap: int = 4) -> Image.Image:
    tiles = [[(label, to_pil(img, zoom)) for label, img in row] for row in rows]
    w, h = tiles[0][0][1].size
    cols = max(len(r) for r in tiles)
    sheet = Image.new("RGB", (cols * (w + gap) - gap, len(tiles) * (h + LABEL_H + gap) - gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(tiles):
        for j, (label, im) in enumerate(row):
            x, y = j * (w + gap), i * (h + LABEL_H + gap)
            draw.text((x + 2, y + 3), label, fill="black")
            sheet.paste(im, (x, y + LABEL_H))
    return sheet


def _images(args, scale):
    out = []
    for folder in args.data:
        out += [(p.stem, mod_crop(read_image(p), scale)) for p in list_images(folder)]
    if not args.no_sample_data:
        out += [(n, mod_crop(img, scale)) for n, img in sample_images("val")]
    if args.only:
        out = [(n, img) for n, img in out if n in args.only]
    return out[: args.max_images]


def _models(specs):
    models, scale = [], None
    for spec in specs or [f"{name}={pretrained_path(name)}" for name in list_pretrained()]:
        label, _, path = spec.rpartition("=")
        model, s = load_generator(Path(path), "auto")
        if scale not in (None, s):
            raise ValueError(f"--model {spec}: scale x{s} differs from the first model's x{scale}")
        models.append((label or Path(path).stem, model.eval()))
        scale = s
    return models, scale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--model", action="append", metavar="LABEL=PATH",
                    help="a generator file with its column label (repeatable; default every shipped model: "
                         "nonbn_x4, nonbn_wgan_x4)")
    ap.add_argument("--data", type=Path, action="append", help="HR folder (default data/corpus/val when present)")
    ap.add_argument("--no-sample-data", action="store_true", help="leave out chelsea and coffee")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these photographs (file stems)")
    ap.add_argument("--max-images", type=int, default=4, help="rows at most (default 4)")
    ap.add_argument("--crop", type=int, default=96, help="HR crop side in px (default 96)")
    ap.add_argument("--zoom", type=int, default=2, help="nearest-neighbour magnification (default 2)")
    ap.add_argument("--context", type=int, default=16, help="LR pixels of context around the crop (default 16)")
    ap.add_argument("--pick", choices=("detail", "smooth"), default="detail", help="automatic crop placement")
    ap.add_argument("--at", action="append", default=[], metavar="NAME=X,Y", help="crop's top-left corner (HR px)")
    args = ap.parse_args(argv)
    if args.data is None:
        default = ROOT / "data" / "corpus" / "val"
        args.data = [default] if default.is_dir() else []
    try:
        at = {k: tuple(int(v) for v in xy.split(",")) for k, _, xy in (a.partition("=") for a in args.at)}
        models, scale = _models(args.model)
        if args.crop < 2 * scale or args.crop % scale or args.zoom < 1 or args.context < 0:
            raise ValueError(f"--crop must be a multiple of {scale} >= {2 * scale}, --zoom >= 1, --context >= 0")
        rows = []
        for name, hr in _images(args, scale):
            x, y = at.get(name) or pick_window(hr, args.crop, scale, args.pick)
            x, y = x // scale * scale, y // scale * scale
            if x < 0 or y < 0 or x + args.crop > hr.shape[-1] or y + args.crop > hr.shape[-2]:
                raise ValueError(f"--at {name}={x},{y}: the crop leaves the {hr.shape[-1]}x{hr.shape[-2]} image")
            rows.append(crops_of(name, hr, models, scale, x, y, args.crop, args.context))
            print(f"{name}: crop at x={x}, y={y}")
        if not rows:
            raise ValueError("no photographs: check --data / --only")
        compose(rows, args.zoom).save(args.output)
    except (ValueError, OSError) as e:
        print(f"make_readme_crops: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
