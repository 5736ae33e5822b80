"""Judge an x4 generator on held-back photographs: the per-photo table a shipped model must pass.

    PYTHONPATH=$PWD python scripts/judge_model.py                       # the shipped nonbn_x4
    PYTHONPATH=$PWD python scripts/judge_model.py --checkpoint runs/corpus/checkpoints/latest.safetensors \\
        --baseline scripts/judge_baseline_nonbn_x4.json

Photographs: the corpus's held-back split (``--data``, default ``data/corpus/val`` made by
``scripts/build_corpus.py``) and fastsr's held-back sample photographs (chelsea, coffee;
``--no-sample-data`` leaves them out). Each HR image is mod-cropped to the scale, its LR made
by MATLAB bicubic (:func:`fastsr.data.degrade`), and the model runs in float32 on the full
image (``--self-ensemble``: its geometric self-ensemble, :class:`fastsr.SelfEnsemble`). Per photo:

* ``Bic`` / ``SR`` Y-PSNR (dB, BT.601 Y, ``crop_border = scale``) and ``Gain`` = SR - Bic;
  ``SSIM`` of SR (same conventions, :func:`fastsr.metrics.ssim`);
* ``Err R/G/B``: mean SR - HR per channel in 8-bit levels (:func:`fastsr.metrics.channel_mean_error`);
* ``Checker``: checkerboard energy, levels^2 (:func:`fastsr.metrics.checkerboard_energy`:
  period-``scale`` component of Y(SR) - Y(bicubic) on blocks whose HR mean gradient is
  <= ``--max-gradient`` levels/px), ``Smooth``: the fraction of such blocks, ``Chk HR``: the
  same measure of the HR image itself (what a perfect SR scores: real detail of the smooth
  blocks that bicubic lacks, not an artefact);
* ``NIQE`` of SR and of bicubic (:func:`fastsr.metrics.niqe`, BasicSR's code, ``crop_border
  = scale``; lower is more natural);
* ``Edge`` / ``Inner``: the Y-PSNR gain over bicubic (dB) on the frame ``--edge-width`` px wide
  just inside the crop border, and on the rest (:func:`edge_inner_gain`). The convolutions
  pad with zeros, so a model's behaviour at the image border is its own; a 224 px test crop
  has 27 % of its pixels in that frame, a 1024 x 640 px photograph 8 %.

The targets a retrained model must meet are checked and printed (PASS / FAIL): every photo
>= bicubic + 0.3 dB, mean gain >= 2 dB, every |Err| <= 0.3 levels and, with ``--baseline``
(a ``--json`` of an earlier run), mean checkerboard <= half of the baseline's on the same
photos. A GAN model is judged instead against its PSNR-oriented model with
``--gan-reference`` (that model's ``--json``): mean NIQE below the reference's and bicubic's,
mean Y-PSNR at most 1.5 dB below the reference's::

    PYTHONPATH=$PWD python scripts/judge_model.py --checkpoint fastsr/weights/nonbn_wgan_x4.safetensors \\
        --gan-reference scripts/judge_nonbn_x4_corpus.json --json scripts/judge_nonbn_wgan_x4_corpus.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from fastsr import metrics
from fastsr.metrics.psnr_ssim import prepare_y
from fastsr.data import degrade, list_images, mod_crop, read_image
from fastsr.errors import UserError
from fastsr.evaluate import evaluate, load_generator, sample_pairs
from fastsr.inference import SelfEnsemble
from fastsr.models import pretrained_path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"min_gain_db": 0.3, "mean_gain_db": 2.0, "max_abs_colour_error": 0.3, "checkerboard_ratio": 0.5}
#: a GAN model against its PSNR-oriented reference (``--gan-reference``): mean NIQE below the
#: reference's and bicubic's, mean Y-PSNR at most this many dB below the reference's
GAN_TARGETS = {"max_psnr_drop_db": 1.5}


def folder_pairs(folder: Path, scale: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, lr, hr)`` of every image in ``folder``: HR mod-cropped, LR by MATLAB bicubic."""
    out = []
    for path in list_images(folder):
        hr = mod_crop(read_image(path), scale).contiguous()
        out.append((path.stem, degrade(hr, scale), hr))
    return out


def edge_inner_gain(sr: torch.Tensor, bic: torch.Tensor, hr: torch.Tensor, scale: int,
                    width: int = 16) -> tuple[float, float]:
    """Y-PSNR gain of ``sr`` over ``bic`` (dB) on the frame ``width`` px wide just inside the
    crop border (``scale`` px) and on the inner rest: where the image border (the
    convolutions' zero padding) is within reach, and where it is not.

    Args:
        sr, bic, hr: (1, 3, H, W) float in [0, 1], H and W > 2 * (scale + width).
        scale: the crop border, px.
        width: the frame's width, px.

    Returns:
        ``(edge_gain_db, inner_gain_db)``; NaN where SR or bicubic equals HR there.

    Raises:
        ValueError: the image too small for the frame.
    """
    b = scale
    if min(hr.shape[-2:]) <= 2 * (b + width):
        raise ValueError(f"edge_inner_gain: image {tuple(hr.shape[-2:])} too small for a {width} px frame "
                         f"inside a {b} px crop border")
    # metrics.psnr's own preparation: quantised to 8 bits, float64, BT.601 Y on the [0, 255] scale
    y = [prepare_y(x.clamp(0, 1), 1.0, True, n, "edge_inner_gain")[..., b:-b, b:-b]
         for x, n in ((sr, "sr"), (bic, "bic"), (hr, "hr"))]
    frame = torch.ones_like(y[2], dtype=torch.bool)
    frame[..., width:-width, width:-width] = False

    def gain(mask):
        mse_sr, mse_bic = ((y[0] - y[2])[mask].pow(2).mean().item(), (y[1] - y[2])[mask].pow(2).mean().item())
        return 10 * math.log10(mse_bic / mse_sr) if mse_sr > 0 and mse_bic > 0 else float("nan")

    return gain(frame), gain(~frame)


def judge(model, pairs, scale: int, max_gradient: float = 1.0, edge_width: int = 16) -> list[dict]:
    """One row per photo (keys: the table's columns, see the module docstring)."""
    extra = {}

    def on_image(name, sr, bic, hr):
        sr, bic = sr.clamp(0, 1)[None], bic[None]
        blocks = metrics.smooth_blocks(hr[None], 8 * scale, max_gradient)
        extra[name] = {
            "checker": float(metrics.checkerboard_energy(sr, bic, hr[None], scale, max_gradient=max_gradient)),
            "smooth": float(blocks.float().mean()),
            "checker_hr": float(metrics.checkerboard_energy(hr[None], bic, hr[None], scale, max_gradient=max_gradient)),
            "niqe_sr": float(metrics.niqe(sr, crop_border=scale)),
            "niqe_bic": float(metrics.niqe(bic, crop_border=scale)),
        }
        extra[name]["edge_gain"], extra[name]["inner_gain"] = edge_inner_gain(sr, bic, hr[None], scale, edge_width)
        print(f"  {name}: done", file=sys.stderr, flush=True)

    res = evaluate(model, pairs, scale, on_image=on_image)
    rows = []
    for i, name in enumerate(res.names):
        err = res.sr_mean_error[i]
        rows.append({"image": name, "bic_psnr": res.bicubic_psnr[i], "sr_psnr": res.sr_psnr[i],
                     "gain": res.sr_psnr[i] - res.bicubic_psnr[i], "sr_ssim": res.sr_ssim[i],
                     "err_r": err[0], "err_g": err[1], "err_b": err[2], **extra[name]})
    return rows


COLUMNS = [("Bic PSNR", "bic_psnr", 2), ("SR PSNR", "sr_psnr", 2), ("Gain dB", "gain", 2), ("SR SSIM", "sr_ssim", 4),
           ("Err R", "err_r", 2), ("Err G", "err_g", 2), ("Err B", "err_b", 2), ("Checker", "checker", 4),
           ("Smooth", "smooth", 2), ("Chk HR", "checker_hr", 4), ("NIQE SR", "niqe_sr", 2), ("NIQE Bic", "niqe_bic", 2),
           ("Edge dB", "edge_gain", 2), ("Inner dB", "inner_gain", 2)]


def _nanmean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def table(rows: list[dict], title: str) -> str:
    cols = {h: [r[k] for r in rows] for h, k, _ in COLUMNS}
    text = metrics.format_table([r["image"] for r in rows], cols, title=title, digits={h: d for h, _, d in COLUMNS})
    if any(math.isnan(r["checker"]) for r in rows):
        text += (f"\n(Checker: NaN = no smooth block; mean over the others: "
                 f"{_nanmean(r['checker'] for r in rows):.4f})")
    return text


def verdicts(rows: list[dict], baseline: dict | None) -> list[str]:
    """``PASS`` / ``FAIL`` lines of the targets (module docstring)."""
    t = TARGETS
    low = [r["image"] for r in rows if r["gain"] < t["min_gain_db"]]
    mean_gain = sum(r["gain"] for r in rows) / len(rows)
    cast = [f"{r['image']} {c.upper()} {r['err_' + c]:+.2f}" for r in rows for c in "rgb"
            if abs(r["err_" + c]) > t["max_abs_colour_error"]]
    out = [f"{'PASS' if not low else 'FAIL'}  every photo >= bicubic + {t['min_gain_db']} dB"
           + (f" (below: {', '.join(low)})" if low else ""),
           f"{'PASS' if mean_gain >= t['mean_gain_db'] else 'FAIL'}  mean gain {mean_gain:.2f} dB >= "
           f"{t['mean_gain_db']} dB",
           f"{'PASS' if not cast else 'FAIL'}  |colour error| <= {t['max_abs_colour_error']} levels"
           + (f" (over: {'; '.join(cast)})" if cast else "")]
    if baseline is not None:
        base = {r["image"]: r["checker"] for r in baseline["rows"]}
        common = [r for r in rows if r["image"] in base and not math.isnan(base[r["image"]])
                  and not math.isnan(r["checker"])]
        if common:
            now, then = _nanmean(r["checker"] for r in common), _nanmean(base[r["image"]] for r in common)
            ok = now <= t["checkerboard_ratio"] * then
            out.append(f"{'PASS' if ok else 'FAIL'}  mean checkerboard {now:.4f} <= {t['checkerboard_ratio']} x "
                       f"baseline {then:.4f} ({len(common)} photos)")
        else:
            out.append("n/a   checkerboard: no photo in common with the baseline has smooth blocks")
    return out


def gan_verdicts(rows: list[dict], reference: dict) -> list[str]:
    """``PASS`` / ``FAIL`` lines of a GAN model's targets against ``reference`` (a ``--json``
    of its PSNR-oriented model on the same photographs): lower mean NIQE than the reference
    and than bicubic, mean Y-PSNR within ``GAN_TARGETS["max_psnr_drop_db"]`` of the reference."""
    ref = {r["image"]: r for r in reference["rows"]}
    missing = [r["image"] for r in rows if r["image"] not in ref]
    if missing:
        raise UserError(f"--gan-reference holds no row for {', '.join(missing)}: judge both models on the same photos")
    n = len(rows)
    niqe, niqe_ref = sum(r["niqe_sr"] for r in rows) / n, sum(ref[r["image"]]["niqe_sr"] for r in rows) / n
    niqe_bic = sum(r["niqe_bic"] for r in rows) / n
    psnr, psnr_ref = sum(r["sr_psnr"] for r in rows) / n, sum(ref[r["image"]]["sr_psnr"] for r in rows) / n
    drop = GAN_TARGETS["max_psnr_drop_db"]
    return [f"{'PASS' if niqe < niqe_ref else 'FAIL'}  mean NIQE {niqe:.2f} < reference {niqe_ref:.2f}",
            f"{'PASS' if niqe < niqe_bic else 'FAIL'}  mean NIQE {niqe:.2f} < bicubic {niqe_bic:.2f}",
            f"{'PASS' if psnr >= psnr_ref - drop else 'FAIL'}  mean PSNR {psnr:.2f} dB >= reference "
            f"{psnr_ref:.2f} - {drop} dB"]


def _pairs(args, scale: int) -> list:
    pairs = []
    for folder in args.data:
        if not folder.is_dir():
            raise UserError(f"--data {folder}: no such folder (build it with scripts/build_corpus.py)")
        pairs += folder_pairs(folder, scale)
    if not args.no_sample_data:
        pairs += sample_pairs(scale)
    if not pairs:
        raise UserError("no photographs to judge: give --data or drop --no-sample-data")
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="generator file (default: the shipped nonbn_x4)")
    ap.add_argument("--weights", default="auto", choices=("auto", "params", "params_ema"),
                    help="weight group of the file (auto: the EMA when present)")
    ap.add_argument("--data", type=Path, action="append",
                    help="folder of held-back HR photographs (repeatable; default data/corpus/val when present)")
    ap.add_argument("--no-sample-data", action="store_true", help="leave out chelsea and coffee")
    ap.add_argument("--max-gradient", type=float, default=1.0,
                    help="smooth-block threshold of the checkerboard, 8-bit levels per pixel (default 1.0)")
    ap.add_argument("--edge-width", type=int, default=16,
                    help="width of the frame inside the crop border whose gain shows as 'Edge', px (default 16)")
    ap.add_argument("--baseline", type=Path, help="a --json of an earlier run: checks checkerboard <= half of it")
    ap.add_argument("--gan-reference", type=Path,
                    help="a --json of the PSNR-oriented model: check a GAN model's targets against it instead")
    ap.add_argument("--self-ensemble", action="store_true",
                    help="judge the model's geometric self-ensemble (fastsr.SelfEnsemble: 8 flips and rotations)")
    ap.add_argument("--json", type=Path, help="write the rows and means here")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.data is None:
        default = ROOT / "data" / "corpus" / "val"
        args.data = [default] if default.is_dir() else []
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        checkpoint = args.checkpoint or pretrained_path("nonbn_x4")
        model, scale = load_generator(checkpoint, args.weights)
        if args.self_ensemble:
            model = SelfEnsemble(model)
        baseline = json.loads(args.baseline.read_text()) if args.baseline else None
        reference = json.loads(args.gan_reference.read_text()) if args.gan_reference else None
        pairs = _pairs(args, scale)
    except (UserError, OSError, ValueError) as e:
        print(f"judge_model: error: {e}", file=sys.stderr)
        return 1
    rows = judge(model, pairs, scale, args.max_gradient, args.edge_width)
    how = " (self-ensemble)" if args.self_ensemble else ""
    print(table(rows, f"{checkpoint.name}{how} x{scale}: Y-PSNR (dB) / SSIM crop_border={scale}; Err = mean SR - HR "
                      f"(8-bit levels); Checker = checkerboard energy (levels^2) on smooth blocks (HR mean gradient "
                      f"<= {args.max_gradient} levels/px; Smooth = their fraction); NIQE crop_border={scale}; "
                      f"Edge / Inner = gain on the {args.edge_width} px frame inside the crop border / the rest"))
    try:
        lines = gan_verdicts(rows, reference) if reference is not None else verdicts(rows, baseline)
    except UserError as e:
        print(f"judge_model: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    if args.json:
        means = {k: _nanmean(r[k] for r in rows) for _, k, _ in COLUMNS}
        shown = checkpoint.resolve().relative_to(ROOT) if checkpoint.resolve().is_relative_to(ROOT) else checkpoint
        args.json.write_text(json.dumps({"checkpoint": str(shown), "scale": scale, "self_ensemble": args.self_ensemble,
                                         "max_gradient": args.max_gradient, "rows": rows, "mean": means},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
