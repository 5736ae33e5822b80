"""The ``fastsr`` command (also ``python -m fastsr``): train, eval, upscale, export.

User errors -- :class:`fastsr.errors.UserError` and its subclasses (bad arguments, invalid
configs or checkpoints, unreadable images, a non-finite training loss) and the operating
system's errors about the paths given or written (not found, not a directory, already
exists, no permission, read-only file system, disk full) -- print one line
``fastsr: error: ...`` (with the error's notes, e.g. the checkpoint saved before stopping)
and exit with status 2, without a traceback; set ``FASTSR_DEBUG=1`` to see the traceback.
Any other exception is a bug and keeps its traceback. An interrupted training (Ctrl-C)
saves a checkpoint and exits with status 130.

Subcommands are registered in ``SUBCOMMANDS`` (name -> (help, add_arguments, run)).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from fastsr.errors import UserError

__all__ = ["main", "SUBCOMMANDS", "UserError"]

#: the operating system's errors about a path the user gave or fastsr writes to, reported like user errors
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
#: errnos of other OSErrors reported like user errors (the file system refuses a write)
_PATH_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP}


def _is_user_error(e: BaseException) -> bool:
    return isinstance(e, (UserError, *_PATH_ERRORS)) or (isinstance(e, OSError) and e.errno in _PATH_ERRNOS)


def _recipes() -> str:
    """The shipped recipe names, read from the package's config folder (no torch import)."""
    folder = Path(__file__).resolve().parent / "configs"
    return ", ".join(sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")))


# ---------------------------------------------------------------------------- train
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help=f"recipe name ({_recipes()}) or a YAML file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR", help="folder of HR training images (recursive)")
    src.add_argument("--sample-data", action="store_true",
                     help="train on scikit-image's sample photographs (the default without --data)")
    p.add_argument("--val-data", metavar="DIR", help="folder of HR validation images (default: held-back images)")
    p.add_argument("--iters", type=int, help="total generator updates (train.iters)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<config name>)")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.* with the run's own OUT/config.yaml "
                                                           "(this command's --iters / --set on top)")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an OUT that holds an earlier run (its config.yaml, log.jsonl and "
                          "checkpoints/ are deleted); without --resume or --overwrite a non-empty OUT is refused")
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
    from fastsr.train import ConfigError, load_config, train
    from fastsr.train.config import dump_config, load_run_config

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
    out = Path(args.out or Path("runs") / cfg["name"])
    if args.resume:  # a resumed run continues with its own config.yaml, this command's overrides on top
        try:
            cfg = load_run_config(out, cfg["name"], overrides) or cfg
        except ConfigError as e:
            raise UserError(f"{e}: resume it as `fastsr train NAME --out {out} --resume` with the name it was "
                            "trained with, or start a new run in another --out") from None
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    summary = train(cfg, out, data_dir=args.data, val_dir=args.val_data, resume=args.resume,
                    overwrite=args.overwrite, init_from=args.init_from, device=args.device,
                    progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        msg = (f"{summary['status']} at iteration {summary['iteration']} in {summary['seconds']:.1f} s "
               f"({summary['sec_per_iter']:.3f} s/iter); checkpoints in {out / 'checkpoints'}")
        if summary["iteration"] >= cfg["train"]["iters"] and summary["sec_per_iter"] != summary["sec_per_iter"]:
            msg = (f"nothing to train (no iteration ran): the run is at iteration {summary['iteration']} and train.iters is "
                   f"{cfg['train']['iters']} (raise --iters to continue); checkpoints in {out / 'checkpoints'}")
        if "val_psnr" in summary:
            msg += (f"\nvalidation: PSNR {summary['val_psnr']:.2f} dB / SSIM {summary['val_ssim']:.4f} "
                    f"(bicubic {summary['val_psnr_bicubic']:.2f} dB / {summary['val_ssim_bicubic']:.4f}), "
                    "mean error R G B " + " ".join(f"{v:+.2f}" for v in summary["val_mean_error"]) + " levels")
        print(msg)
    return 130 if summary["status"] == "interrupted" else 0


_CUDA_GRAPH_HELP = ("replay the model as a CUDA graph per tile shape (one kernel launch per tile after the "
                    "first): auto = on for CUDA with --tile, on = also without tiles (one graph per image size)")


# ---------------------------------------------------------------------------- eval
_MODEL_HELP = ("a generator shipped with fastsr, by name (fastsr.models.list_pretrained(); default nonbn_x4, "
               "the x4 NonBNResNet)")
_SELF_ENSEMBLE_HELP = ("average the model's outputs for the 8 flips and rotations of each input (EDSR's "
                       "geometric self-ensemble): a little higher PSNR, 8x the time")


def _checkpoint_of(args):
    """``--checkpoint``, else the file of ``--model`` (None when neither is given)."""
    if getattr(args, "model", None) is None:
        return args.checkpoint
    from fastsr.upscale import default_checkpoint

    return default_checkpoint(args.model)


def _add_eval(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="NAME", help=_MODEL_HELP)
    which.add_argument("--checkpoint", metavar="CKPT",
                   help="generator .safetensors from fastsr train, or an ESRGAN / Real-ESRGAN / BasicSR .pth / .safetensors file (default: the shipped nonbn_x4 model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="HR test images (LR made by MATLAB bicubic)")
    src.add_argument("--sample-data", action="store_true", help="the sample photographs' validation split")
    p.add_argument("--lr-data", metavar="DIR", help="LR images paired with --data by name (x4 suffix accepted)")
    p.add_argument("--scale", type=int, help="must match the checkpoint (default: the checkpoint's)")
    p.add_argument("--weights", choices=["auto", "params", "params_ema"], default="auto")
    p.add_argument("--save-images", metavar="DIR", help="write SR images and bicubic|SR|HR crops as PNG")
    p.add_argument("--crop", type=int, default=128, help="side of the side-by-side crops in HR pixels (>= 1)")
    p.add_argument("--tile", type=int, default=0, help="LR tile size (0 = whole image)")
    p.add_argument("--self-ensemble", action="store_true", help=_SELF_ENSEMBLE_HELP)
    p.add_argument("--tile-pad", type=int, default=16)
    p.add_argument("--cuda-graph", choices=["auto", "on", "off"], default="auto", help=_CUDA_GRAPH_HELP)
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


def _eval_pairs(args, scale: int) -> list:
    """The (name, LR, HR) pairs ``fastsr eval`` measures: the sample photos or the folder(s),
    with the files that cannot be read reported in one line."""
    import warnings

    from fastsr.data import HRFolderDataset, PairedFolderDataset
    from fastsr.data.datasets import UnreadableImageWarning
    from fastsr.data.io import ImageReadError
    from fastsr.evaluate import min_hr_side, sample_pairs

    unreadable = []
    if args.sample_data:
        pairs = sample_pairs(scale)
    else:
        with warnings.catch_warnings():  # reported below, in one line with the truncated files
            warnings.simplefilter("ignore", UnreadableImageWarning)
            if args.lr_data:
                ds = PairedFolderDataset(args.lr_data, args.data, scale=scale)
            else:
                ds = HRFolderDataset(args.data, scale=scale, crop_size=None, augment=False,
                                     degradation="bicubic" if scale > 1 else "bicubic_blur")
        unreadable += getattr(ds, "unreadable", [])
        pairs = []
        for i in range(len(ds)):  # files whose header reads but whose data is cut short
            try:
                item = ds[i]
            except ImageReadError as e:
                unreadable.append(str(e).removeprefix("cannot read image "))
                continue
            pairs.append((item["name"], item["lr"], item["hr"]))
    if unreadable:
        print(f"fastsr: warning: skipped {len(unreadable)} unreadable image(s): {'; '.join(unreadable)}",
              file=sys.stderr)
    small = [name for name, _, hr in pairs if min(hr.shape[-2:]) < min_hr_side(scale)]
    if small:
        print(f"fastsr: warning: skipped {len(small)} image(s) under {min_hr_side(scale)} px on a side (after the "
              f"crop to a multiple of {scale}), too small to measure: {'; '.join(small)}", file=sys.stderr)
        pairs = [p for p in pairs if p[0] not in small]
    if not pairs:
        raise UserError(f"no readable images large enough to measure in {args.data}")
    return pairs


def _flat_names(names: list[str]) -> dict[str, str]:
    """Each image name (``sub/x`` for files in subfolders) -> a file name without folders,
    ``/`` as ``_``; names that then coincide (``sub1/x``, ``sub1_x``) get ``_2``, ``_3``, ...
    with a notice, so that no saved image replaces another."""
    flat, taken = {}, set()
    for name in names:
        base = cand = name.replace("/", "_")
        k = 1
        while cand in taken:
            k += 1
            cand = f"{base}_{k}"
        if cand != base:
            print(f"fastsr: note: {name} is saved as {cand} (its flat name {base} is another image's)", file=sys.stderr)
        flat[name] = cand
        taken.add(cand)
    return flat


def _run_eval(args, extra) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    import torch

    from fastsr.data import write_image
    from fastsr.evaluate import evaluate
    from fastsr.inference import SelfEnsemble, optimize_for_inference
    from fastsr.models.checkpoint import check_finite_weights
    from fastsr.evaluate import check_cuda
    from fastsr.upscale import check_tiling, default_checkpoint, graphed, load_model

    check_tiling(args.tile, args.tile_pad)
    if args.crop < 1:
        raise UserError(f"--crop must be a positive number of HR pixels, got {args.crop}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        check_cuda()
    checkpoint = _checkpoint_of(args) or default_checkpoint()
    model, scale, description = load_model(checkpoint, args.weights, device)
    check_finite_weights(model, checkpoint)
    if args.scale is not None and args.scale != scale:
        raise UserError(f"--scale {args.scale} does not match the checkpoint's scale {scale}")
    pairs = _eval_pairs(args, scale)
    file_names = _flat_names([name for name, _, _ in pairs])

    def on_image(name, sr, bic, hr):
        if not bool(sr.isfinite().all()):
            raise UserError(f"{checkpoint}: the model's output for {name} holds NaN or infinite values")
        if args.save_images:
            out, safe = Path(args.save_images), file_names[name]
            write_image(sr, out / f"{safe}_SR.png")
            write_image(_side_by_side([bic, sr, hr], args.crop), out / f"{safe}_bicubic_SR_HR.png")

    if device == "cpu":  # fp32: the table keeps the model's own numbers, computed faster
        model = optimize_for_inference(model, device, "fp32")
    if args.self_ensemble:
        model = SelfEnsemble(model)
    model = graphed(model, args.cuda_graph, device, args.tile)
    result = evaluate(model, pairs, scale, tile=args.tile, tile_pad=args.tile_pad, on_image=on_image)
    how = ", self-ensemble" if args.self_ensemble else ""
    print(result.table(title=f"x{scale}, Y channel, crop_border={scale} ({Path(checkpoint).name}: {description}{how})"))
    return 0


# ---------------------------------------------------------------------------- upscale
def _tile_arg(v: str):
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'auto', got {v!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'auto', got {v!r}")
    return n


def _add_upscale(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs ('photos/*.jpg')")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder, or a file name (.png, .jpg, .webp, .bmp, .tif) when there is one input file")
    method = p.add_mutually_exclusive_group()
    method.add_argument("--model", metavar="NAME", help=_MODEL_HELP)
    method.add_argument("--checkpoint", metavar="CKPT",
                        help="generator .safetensors from fastsr train, or an ESRGAN / Real-ESRGAN / BasicSR .pth / .safetensors file (default: the shipped x4 nonbn_x4 model)")
    method.add_argument("--bicubic", action="store_true", help="MATLAB bicubic instead of a model")
    p.add_argument("--scale", type=int, help="scale for --bicubic (default 4); must match the model's otherwise")
    p.add_argument("--outscale", type=float, metavar="S",
                   help="final scale if not the model's: the model's output is resized (Lanczos) to S x the input size")
    p.add_argument("--weights", choices=["auto", "params", "params_ema"], default="auto")
    p.add_argument("--tile", type=_tile_arg, default=0, metavar="N|auto",
                   help="LR tile side the model sees, e.g. 256 (0 = whole image; auto = from free memory, "
                        "halved on out-of-memory)")
    p.add_argument("--tile-pad", type=int, default=16,
                   help="LR context pixels on each inner tile edge; tiles overlap by twice this and are blended")
    p.add_argument("--tile-batch", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: fp16 on CUDA; on the CPU bf16 where it computes bf16 natively (AVX512-BF16 or AMX), "
                        "else fp32; tiles with NaN/Inf in bf16/fp16 are redone in fp32")
    p.add_argument("--bf16", action="store_true", help="same as --precision bf16")
    p.add_argument("--format", choices=["png", "jpg", "webp", "bmp", "tif"], default="png",
                   help="output format in folder mode (16-bit images stay 16-bit in png and tif)")
    p.add_argument("--quality", type=int, metavar="Q",
                   help="JPEG / WebP quality 1..100 (Pillow's quality; default 95); with --lossless the WebP "
                        "compression effort (default 80). An error for other output formats")
    p.add_argument("--lossless", action="store_true",
                   help="lossless WebP (Pillow's lossless=True, exact=True: the colours under fully transparent "
                        "pixels are kept too); WebP outputs only")
    p.add_argument("--alpha", choices=["model", "bicubic"], default="model",
                   help="how the alpha channel of RGBA / LA images is upscaled: model = run through the model as "
                        "a gray image (Real-ESRGAN's default, twice the work; a uniform alpha stays uniform), "
                        "bicubic = MATLAB bicubic (default: model)")
    p.add_argument("--denoise-strength", type=float, metavar="S",
                   help="0..1, for Real-ESRGAN's realesr-general-x4v3: blend its weights with its denoising "
                        "companion realesr-general-wdn-x4v3 (S * net + (1 - S) * wdn_net, parameter by parameter, "
                        "as Real-ESRGAN's --denoise_strength); 1 = the model as is, 0 = the wdn model, strongest "
                        "denoising. Needs --checkpoint (default: no blending; Real-ESRGAN's script uses 0.5)")
    p.add_argument("--denoise-checkpoint", metavar="CKPT",
                   help="the companion for --denoise-strength (default: the --checkpoint file name with -x4v3 -> "
                        "-wdn-x4v3, beside it); same architecture and shapes as --checkpoint")
    p.add_argument("--self-ensemble", action="store_true", help=_SELF_ENSEMBLE_HELP)
    p.add_argument("--suffix", default="", help="added to each output file name's stem, e.g. _x4")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose output file exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--cuda-graph", choices=["auto", "on", "off"], default="auto", help=_CUDA_GRAPH_HELP)
    p.add_argument("--device", choices=["cpu", "cuda"])


def _run_upscale(args, extra) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    from fastsr.upscale import upscale_files

    upscale_files(args.inputs, args.output, _checkpoint_of(args), bicubic=args.bicubic, scale=args.scale,
                  weights=args.weights, device=args.device, precision="bf16" if args.bf16 else args.precision,
                  cuda_graph=args.cuda_graph, tile=args.tile, tile_pad=args.tile_pad, tile_batch=args.tile_batch,
                  outscale=args.outscale, format=args.format, suffix=args.suffix, skip_existing=args.skip_existing,
                  progress=not args.no_progress, alpha=args.alpha, quality=args.quality, lossless=args.lossless,
                  denoise_strength=args.denoise_strength, denoise_checkpoint=args.denoise_checkpoint,
                  self_ensemble=args.self_ensemble)
    return 0


# ---------------------------------------------------------------------------- export
def _add_export(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="NAME", help=_MODEL_HELP)
    which.add_argument("--checkpoint", metavar="CKPT", help="generator .safetensors from fastsr train, or an ESRGAN / Real-ESRGAN / BasicSR .pth / .safetensors file (default: the shipped nonbn_x4 model)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=18,
                   help="ONNX opset version, >= 9 (default 18): 9-20 are written by torch's TorchScript exporter "
                        "(torch.onnx.export(dynamo=False), the faster), 21 and later by torch.onnx.export(dynamo=True); "
                        "the output names it")
    p.add_argument("--fp16", action="store_true",
                   help="weights, input and output in float16 (half the file; for runtimes with float16 kernels)")
    p.add_argument("--fixed-shape", type=_shape_arg, metavar="HxW",
                   help="a static graph for LR images of H x W pixels, batch 1 (no dynamic axes), e.g. 256x256")


def _shape_arg(v: str) -> tuple[int, int]:
    try:
        h, w = (int(p) for p in v.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 256x256, got {v!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected positive HxW, got {v!r}")
    return h, w


def _run_export(args, extra) -> int:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    from fastsr.export import export_onnx, exporter_for
    from fastsr.models import load
    from fastsr.upscale import default_checkpoint

    checkpoint = _checkpoint_of(args) or default_checkpoint()
    try:
        exporter = exporter_for(args.opset)
    except ValueError as e:
        raise UserError(str(e).replace("export_onnx: opset", "--opset")) from None
    model, detected = load(checkpoint)
    try:
        out = export_onnx(model, args.output, opset=args.opset, fp16=args.fp16, fixed_shape=args.fixed_shape)
    except (ImportError, ValueError) as e:  # a missing exporter package; an opset it cannot write
        raise UserError(str(e).replace("export_onnx: opset", "--opset").replace(
            "export_onnx: fixed_shape", "--fixed-shape")) from None
    s, dtype = detected.scale, "float16" if args.fp16 else "float32"
    if args.fixed_shape:
        h, w = args.fixed_shape
        shapes = f"input 'lr' (1, C, {h}, {w}), output 'sr' (1, C, {s * h}, {s * w})"
    else:
        shapes = f"input 'lr' (batch, C, height, width), output 'sr' (batch, C, {s}*height, {s}*width)"
    how = "torch.onnx.export(dynamo=True)" if exporter == "dynamo" else "TorchScript exporter (dynamo=False)"
    print(f"{checkpoint} -> {out}: {detected}; {shapes}, {dtype}, input in [0, 1]; opset {args.opset}, {how}")
    return 0


# ---------------------------------------------------------------------------- bench
def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants",
                   help="comma-separated variants of the per-iteration benchmark (default: all 13, listed in "
                        "fastsr.bench.iteration)")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   help="where the trainer and the inference rows run (default: cuda when available, as for "
                        "fastsr train); on cuda each iteration is timed with CUDA events and the report names "
                        "the GPU and its peak memory")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each variant in a fresh process)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per variant and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before timing")
    p.add_argument("--batch", type=int, default=16, help="batch size (paper: 16)")
    p.add_argument("--crop", type=int, default=96, help="HR crop side in pixels (paper: 96)")
    p.add_argument("--quick", action="store_true",
                   help="batch 4, 64 px, 1 round, 2 iterations, inference on one 32 px image: a smoke run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every variant after its own settings, e.g. --set "
                        "model.generator.num_blocks=4 (repeatable)")
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
    from fastsr.bench.iteration import resolve_device, run_benchmark

    device = resolve_device(args.device)  # `--device cuda` without CUDA: one line, before any work
    for name in ("rounds", "iters", "batch", "crop"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    inference_sizes = None
    if args.quick:
        args.batch, args.crop, args.rounds, args.iters, args.warmup = 4, 64, 1, 2, 1
        inference_sizes = (32,)
    if args.crop % 4:
        raise UserError(f"--crop must be a multiple of the scale 4, got {args.crop}")
    if args.profile:
        from fastsr.bench.iteration import profile_variant

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for key in [v.strip() for v in args.profile.split(",") if v.strip()]:
            table = profile_variant(key, batch=args.batch, crop=args.crop, device=device, overrides=args.overrides)
            (out / f"profile_variant{key}.txt").write_text(table)
            print(table)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    run_benchmark(variants=variants, rounds=args.rounds,
                  iters=args.iters, warmup=args.warmup, batch=args.batch, crop=args.crop,
                  inference=not args.no_inference, parity=not args.no_parity, out_dir=args.out, device=device,
                  overrides=args.overrides, inference_sizes=inference_sizes)
    return 0


# ---------------------------------------------------------------------------- main
#: name -> (help, add_arguments(parser), run(args, extra_argv) -> exit code)
SUBCOMMANDS = {
    "train": ("train a generator (and discriminator) from a recipe", _add_train, _run_train),
    "eval": ("PSNR/SSIM table of a checkpoint on a test folder", _add_eval, _run_eval),
    "upscale": ("super-resolve image files", _add_upscale, _run_upscale),
    "export": ("write a model as ONNX (dynamic batch, height, width, or a fixed shape)", _add_export, _run_export),
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
    except (UserError, OSError) as e:
        if os.environ.get("FASTSR_DEBUG") or not _is_user_error(e):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        for note in getattr(e, "__notes__", ()):
            msg += f"; {note}"
        print(f"fastsr: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
