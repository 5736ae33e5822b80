"""The ``fastsr`` command (also ``python -m fastsr``): train, eval, upscale, export.

User errors -- :class:`fastsr.errors.UserError` and its subclasses (bad arguments, invalid
configs or checkpoints, unreadable images) and the operating system's errors about the
paths given (not found, not a directory, no permission) -- print one line
``fastsr: error: ...`` and exit with status 2, without a traceback; set ``FASTSR_DEBUG=1``
to see the traceback. Any other exception is a bug and keeps its traceback. An interrupted
training (Ctrl-C) saves a checkpoint and exits with status 130.

Subcommands are registered in ``SUBCOMMANDS`` (name -> (help, add_arguments, run)).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fastsr.errors import UserError

__all__ = ["main", "SUBCOMMANDS", "UserError"]

#: the operating system's errors about a path the user gave, reported like user errors
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


# ---------------------------------------------------------------------------- train
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="recipe name (nonbn_wgan_x4, srresnet_x4, srgan_x4, esrgan_x4, sharpness, "
                                  "attentive_began_x4) or a YAML file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR", help="folder of HR training images (recursive)")
    src.add_argument("--sample-data", action="store_true",
                     help="train on scikit-image's sample photographs (the default without --data)")
    p.add_argument("--val-data", metavar="DIR", help="folder of HR validation images (default: held-back images)")
    p.add_argument("--iters", type=int, help="total generator updates (train.iters)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.*")
    p.add_argument("--init-from", metavar="CKPT", help="start G from these weights (e.g. SRGAN from SRResNet)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr_g=2e-4 (repeatable); "
                        "'--train.lr_g 2e-4' works too")
    p.add_argument("--batch-size", type=int, help="data.batch_size (total over processes)")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--num-workers", type=int, help="data.num_workers")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (train.bf16)")
    p.add_argument("--channels-last", action="store_true", help="train.channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile the generator (train.compile)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _run_train(args, extra: list[str]) -> int:
    from fastsr.train import load_config, train
    from fastsr.train.config import dump_config

    overrides = list(args.overrides)
    it = iter(extra)
    for tok in it:  # dotted options: --train.lr_g 2e-4 or --train.lr_g=2e-4
        if not tok.startswith("--") or "." not in tok.split("=", 1)[0]:
            raise UserError(f"unrecognized argument: {tok}")
        if "=" in tok:
            overrides.append(tok[2:])
        else:
            val = next(it, None)
            if val is None:
                raise UserError(f"option {tok} needs a value")
            overrides.append(f"{tok[2:]}={val}")
    for flag, key in (("iters", "train.iters"), ("batch_size", "data.batch_size"), ("seed", "train.seed"),
                      ("num_workers", "data.num_workers")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    for flag, key in (("bf16", "train.bf16"), ("channels_last", "train.channels_last"), ("compile", "train.compile")):
        if getattr(args, flag):
            overrides.append(f"{key}=true")
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    out = Path(args.out or Path("runs") / cfg.get("name", "run"))
    summary = train(cfg, out, data_dir=args.data, val_dir=args.val_data, resume=args.resume,
                    init_from=args.init_from, device=args.device, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        msg = (f"{summary['status']} at iteration {summary['iteration']} in {summary['seconds']:.1f} s "
               f"({summary['sec_per_iter']:.3f} s/iter); checkpoints in {out / 'checkpoints'}")
        if "val_psnr" in summary:
            msg += (f"\nvalidation: PSNR {summary['val_psnr']:.2f} dB / SSIM {summary['val_ssim']:.4f} "
                    f"(bicubic {summary['val_psnr_bicubic']:.2f} dB / {summary['val_ssim_bicubic']:.4f}), "
                    "mean error R G B " + " ".join(f"{v:+.2f}" for v in summary["val_mean_error"]) + " levels")
        print(msg)
    return 130 if summary["status"] == "interrupted" else 0


def _default_checkpoint() -> Path:
    """The generator shipped with fastsr (``fastsr.models.pretrained_path("nonbn_x4")``)."""
    from fastsr.models import pretrained_path

    try:
        return pretrained_path("nonbn_x4")
    except FileNotFoundError as e:
        raise UserError(f"{e}; give --checkpoint") from None


def _load_model(checkpoint, weights: str, device):
    """``(model, scale, description)`` of a checkpoint. ``--weights auto`` reads any file
    ``fastsr.models.load`` recognises (fastsr's own, ESRGAN, Real-ESRGAN, BasicSR; the
    architecture from the keys); ``params`` / ``params_ema`` pick a weight group of a fastsr file."""
    if weights != "auto":
        from fastsr.models import load_generator

        model, scale = load_generator(checkpoint, weights, device)
        return model, scale, f"{type(model).__name__} x{scale} ({weights})"
    from fastsr.models import load

    model, detected = load(checkpoint, device=device)
    return model, detected.scale, str(detected)


# ---------------------------------------------------------------------------- eval
def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="generator .safetensors from fastsr train, or an ESRGAN / Real-ESRGAN / BasicSR .pth / .safetensors file (default: the shipped nonbn_x4 model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="HR test images (LR made by MATLAB bicubic)")
    src.add_argument("--sample-data", action="store_true", help="the sample photographs' validation split")
    p.add_argument("--lr-data", metavar="DIR", help="LR images paired with --data by name (x4 suffix accepted)")
    p.add_argument("--scale", type=int, help="must match the checkpoint (default: the checkpoint's)")
    p.add_argument("--weights", choices=["auto", "params", "params_ema"], default="auto")
    p.add_argument("--save-images", metavar="DIR", help="write SR images and bicubic|SR|HR crops as PNG")
    p.add_argument("--crop", type=int, default=128, help="side of the side-by-side crops in HR pixels")
    p.add_argument("--tile", type=int, default=0, help="LR tile size (0 = whole image)")
    p.add_argument("--tile-pad", type=int, default=16)
    p.add_argument("--device", choices=["cpu", "cuda"])


def _side_by_side(imgs, crop: int):
    """Centre crops (``crop`` px, at most the last image's size) of (3, H, W) images side by
    side with 4 px white gaps."""
    import torch

    h, w = imgs[-1].shape[-2:]
    c = min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    gap = torch.ones(3, c, 4)
    parts = []
    for i, x in enumerate(imgs):
        parts.append(x[:, top:top + c, left:left + c])
        if i < len(imgs) - 1:
            parts.append(gap)
    return torch.cat(parts, dim=2)


def _run_eval(args, extra) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    import torch

    from fastsr.data import HRFolderDataset, PairedFolderDataset, write_image
    from fastsr.evaluate import evaluate, load_generator, sample_pairs

    _check_tiles(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = args.checkpoint or _default_checkpoint()
    model, scale, description = _load_model(checkpoint, args.weights, device)
    if args.scale is not None and args.scale != scale:
        raise UserError(f"--scale {args.scale} does not match the checkpoint's scale {scale}")
    if args.sample_data:
        pairs = sample_pairs(scale)
    else:
        if args.lr_data:
            ds = PairedFolderDataset(args.lr_data, args.data, scale=scale)
        else:
            ds = HRFolderDataset(args.data, scale=scale, crop_size=None, augment=False,
                                 degradation="bicubic" if scale > 1 else "bicubic_blur")
        pairs = [(it["name"], it["lr"], it["hr"]) for it in (ds[i] for i in range(len(ds)))]

    def save(name, sr, bic, hr):
        out, safe = Path(args.save_images), name.replace("/", "_")
        write_image(sr, out / f"{safe}_SR.png")
        write_image(_side_by_side([bic, sr, hr], args.crop), out / f"{safe}_bicubic_SR_HR.png")

    result = evaluate(model, pairs, scale, tile=args.tile, tile_pad=args.tile_pad,
                      on_image=save if args.save_images else None)
    print(result.table(title=f"x{scale}, Y channel, crop_border={scale} ({Path(checkpoint).name}: {description})"))
    return 0


def _check_tiles(args) -> None:
    if args.tile < 0 or args.tile_pad < 0:
        raise UserError("--tile and --tile-pad must be >= 0")


# ---------------------------------------------------------------------------- upscale
def _add_upscale(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder, or a file name when there is one input file")
    method = p.add_mutually_exclusive_group()
    method.add_argument("--checkpoint", metavar="CKPT",
                        help="generator .safetensors from fastsr train, or an ESRGAN / Real-ESRGAN / BasicSR .pth / .safetensors file (default: the shipped x4 nonbn_x4 model)")
    method.add_argument("--bicubic", action="store_true", help="MATLAB bicubic instead of a model")
    p.add_argument("--scale", type=int, help="scale for --bicubic (default 4); must match the model's otherwise")
    p.add_argument("--weights", choices=["auto", "params", "params_ema"], default="auto")
    p.add_argument("--tile", type=int, default=0, help="LR tile size, e.g. 256 (0 = whole image)")
    p.add_argument("--tile-pad", type=int, default=16, help="LR context pixels around each tile")
    p.add_argument("--format", choices=["png", "jpg", "webp", "bmp", "tif"], default="png")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--device", choices=["cpu", "cuda"])


def _run_upscale(args, extra) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    import torch

    from fastsr.data import IMAGE_EXTENSIONS, list_images, read_image, write_image
    from fastsr.evaluate import bicubic_upscale, load_generator, upscale_image

    files = []
    for inp in args.inputs:
        p = Path(inp)
        if p.is_dir():
            files += [(f, f.relative_to(p)) for f in list_images(p)]
        elif p.is_file():
            files.append((p, Path(p.name)))
        else:
            raise UserError(f"input not found: {inp}")
    if not files:
        raise UserError("no input images found")
    _check_tiles(args)
    out = Path(args.output)
    single_file = (len(files) == 1 and Path(args.inputs[0]).is_file() and out.suffix.lower() in IMAGE_EXTENSIONS)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not args.bicubic:
        model, scale, description = _load_model(args.checkpoint or _default_checkpoint(), args.weights, device)
        print(f"model: {description}")
        if args.scale is not None and args.scale != scale:
            raise UserError(f"--scale {args.scale} does not match the model's scale {scale} (use --bicubic "
                            "for other scales)")
    else:
        model, scale = None, args.scale or 4
        if scale < 1:
            raise UserError(f"--scale must be >= 1, got {scale}")
    for path, rel in files:
        rgb, alpha = read_image(path, keep_alpha=True)
        if model is None:
            sr = bicubic_upscale(rgb[None], scale)
        else:
            sr = upscale_image(model, rgb[None], scale, args.tile, args.tile_pad, args.bf16)
        a = bicubic_upscale(alpha[None], scale)[0] if alpha is not None else None
        dest = out if single_file else (out / rel).with_suffix("." + args.format)
        if a is not None and dest.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
            a = None  # formats without alpha
        write_image(sr[0], dest, alpha=a)
        print(f"{path} -> {dest} ({rgb.shape[2]}x{rgb.shape[1]} -> {sr.shape[3]}x{sr.shape[2]})")
    return 0


# ---------------------------------------------------------------------------- export
def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="CKPT", help="generator .safetensors from fastsr train, or an ESRGAN / Real-ESRGAN / BasicSR .pth / .safetensors file (default: the shipped nonbn_x4 model)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (>= 18)")


def _run_export(args, extra) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    from fastsr.export import export_onnx
    from fastsr.models import load

    checkpoint = args.checkpoint or _default_checkpoint()
    model, detected = load(checkpoint)
    try:
        out = export_onnx(model, args.output, opset=args.opset)
    except ImportError as e:
        raise UserError(str(e)) from None
    print(f"{checkpoint} -> {out}: {detected}; input 'lr' (batch, C, height, width) in [0, 1], "
          f"output 'sr' (batch, C, {detected.scale}*height, {detected.scale}*width), opset {args.opset}")
    return 0


# ---------------------------------------------------------------------------- bench
def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", default="1,2,3,4,5,6,7",
                   help="comma-separated variants of the per-iteration benchmark (default: all 7, listed in "
                        "fastsr.bench.iteration)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each variant in a fresh process)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per variant and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before timing")
    p.add_argument("--batch", type=int, default=16, help="batch size (paper: 16)")
    p.add_argument("--crop", type=int, default=96, help="HR crop side in pixels (paper: 96)")
    p.add_argument("--quick", action="store_true", help="batch 4, 64 px, 1 round, 2 iterations: a smoke run")
    p.add_argument("--no-inference", action="store_true", help="skip the inference timings")
    p.add_argument("--no-parity", action="store_true", help="skip the fused-vs-unfused parity check")
    p.add_argument("--out", default="benchmarks/results", metavar="DIR",
                   help="where iteration.json / .md / .png go (default: benchmarks/results)")
    p.add_argument("--profile", metavar="VARIANTS",
                   help="instead of timing, write a torch.profiler table of where one iteration's time "
                        "goes for these comma-separated variants (OUT/profile_variant<V>.txt)")


def _run_bench(args, extra: list[str]) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    from fastsr.bench.iteration import run_benchmark

    for name in ("rounds", "iters", "batch", "crop"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if args.quick:
        args.batch, args.crop, args.rounds, args.iters, args.warmup = 4, 64, 1, 2, 1
    if args.crop % 4:
        raise UserError(f"--crop must be a multiple of the scale 4, got {args.crop}")
    if args.profile:
        from fastsr.bench.iteration import profile_variant

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for key in [v.strip() for v in args.profile.split(",") if v.strip()]:
            table = profile_variant(key, batch=args.batch, crop=args.crop)
            (out / f"profile_variant{key}.txt").write_text(table)
            print(table)
        return 0
    run_benchmark(variants=[v.strip() for v in args.variants.split(",") if v.strip()], rounds=args.rounds,
                  iters=args.iters, warmup=args.warmup, batch=args.batch, crop=args.crop,
                  inference=not args.no_inference, parity=not args.no_parity, out_dir=args.out)
    return 0


# ---------------------------------------------------------------------------- main
#: name -> (help, add_arguments(parser), run(args, extra_argv) -> exit code)
SUBCOMMANDS = {
    "train": ("train a generator (and discriminator) from a recipe", _add_train, _run_train),
    "eval": ("PSNR/SSIM table of a checkpoint on a test folder", _add_eval, _run_eval),
    "upscale": ("super-resolve image files", _add_upscale, _run_upscale),
    "export": ("write a model as ONNX (dynamic batch, height, width)", _add_export, _run_export),
    "bench": ("per-iteration GAN training and inference benchmark (fused vs unfused variants)", _add_bench, _run_bench),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsr", description="GAN image super-resolution on fused layers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_, add, _) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        return SUBCOMMANDS[args.command][2](args, extra)
    except (UserError, *_PATH_ERRORS) as e:
        if os.environ.get("FASTSR_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"fastsr: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
