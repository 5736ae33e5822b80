"""Train, validate and export the generator shipped as ``fastsr/weights/nonbn_x4.safetensors``.

Train (CPU or CUDA) within a wall-time budget, then validate and export::

    PYTHONPATH=$PWD python scripts/ship_pretrained.py --device cuda --minutes 4 \\
        --batch-size 32 --num-workers 12 --set model.fused=false --out runs/nonbn_x4

``--minutes`` first times a short calibration run (same settings, thrown away) and then sets
``train.iters`` so that the real run takes about that long; the recipe's LR milestones are
rescaled to the same fractions of the run. ``--iters N`` fixes the length instead.

Fine-tune shipped weights instead of training from scratch (G and its EMA start from them;
the optimiser starts fresh)::

    PYTHONPATH=$PWD python scripts/ship_pretrained.py --device cuda --iters 8000 \\
        --init-from weights/start.safetensors --set train.lr_g=5e-5 --out runs/nonbn_x4_ft

Export an existing ``fastsr train`` run instead of training::

    python scripts/ship_pretrained.py --from-run runs/nonbn_x4 --command "<the train command>"

``--checkpoint-file`` picks another checkpoint of the run (e.g. ``g_0002500.safetensors``),
``--group params`` its raw G instead of the EMA. ``--blend WEIGHTS --blend-share S`` ships
the network interpolation ``S * WEIGHTS + (1 - S) * G`` of the run's generator with another
generator file of the same architecture, parameter by parameter (Wang et al. 2018, "ESRGAN:
Enhanced Super-Resolution Generative Adversarial Networks", section 3.4: a GAN generator
blended with its PSNR-oriented start trades perceptual quality for PSNR without the GAN's
artefacts)::

    python scripts/ship_pretrained.py --from-run runs/nonbn_wgan_corpus_x4 --config nonbn_wgan_corpus_x4 \
        --name nonbn_wgan_x4 --group params --blend fastsr/weights/nonbn_x4.safetensors --blend-share 0.5 \
        --previous fastsr/weights/nonbn_x4.safetensors --command "<the train command>"

Either way the generator (by default the EMA of the final checkpoint) is stored as float16
(the ``params`` group), the *stored* file is evaluated on the CPU in float32 on the held-back sample
photographs (full images, MATLAB bicubic x4 LR, Y channel, crop_border = 4) against
bicubic with :func:`fastsr.evaluate.evaluate` -- PSNR, SSIM and the mean per-channel error
SR - HR in 8-bit levels -- the table
is printed, and the recipe, command, iterations, timing, training photographs and the
table go into the file's metadata.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from fastsr.data import sample_images
from fastsr.evaluate import EvalResult, evaluate, load_generator, sample_pairs
from fastsr.models import export_generator, interpolate_weights
from fastsr.models.checkpoint import read_metadata, save_generator
from fastsr.train import ConfigError, load_config
from fastsr.train.config import load_run_config

ROOT = Path(__file__).resolve().parents[1]
CONVENTIONS = ("full images, LR by MATLAB bicubic x4, Y channel (BT.601), crop_border=4, float64; "
               "mean error = mean of SR - HR per RGB channel in 8-bit levels after rounding to 8 bits")


def validate(weights: Path, which: str = "params") -> EvalResult:
    """The stored generator on the held-back photographs vs bicubic
    (:func:`fastsr.evaluate.evaluate`: Y-PSNR (dB), SSIM, mean error SR - HR per RGB channel
    in 8-bit levels)."""
    model, scale = load_generator(weights, which)
    return evaluate(model, sample_pairs(scale), scale)


def table(result: EvalResult) -> str:
    return result.table(title="x4 on the held-back photographs: Y-PSNR (dB) / SSIM, crop_border=4; "
                              "err = mean SR - HR per channel (8-bit levels)")


def _train_cfg(args, iters: int, out: Path) -> dict:
    base = load_config(args.config)
    overrides = list(args.set)
    if args.batch_size is not None:
        overrides.append(f"data.batch_size={args.batch_size}")
    if args.num_workers is not None:
        overrides.append(f"data.num_workers={args.num_workers}")
    # LR milestones at the recipe's fractions of the run
    frac = [s / int(base["train"]["iters"]) for s in base["train"]["lr_steps"]]
    steps = [max(1, round(f * iters)) for f in frac]
    overrides += [f"train.iters={iters}", f"train.lr_steps={json.dumps(steps)}", f"train.seed={args.seed}",
                  f"log.every={min(args.log_every, iters)}", f"log.val_every={iters}", f"log.save_every={iters}",
                  "log.keep_weights=false"]
    return load_config(args.config, overrides)


def _fit(cfg: dict, out: Path, device: str, progress: bool, overwrite: bool = False,
         init_from=None) -> tuple[dict, list[dict]]:
    from fastsr.train import train

    summary = train(cfg, out, device=device, progress=progress, overwrite=overwrite, init_from=init_from)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    return summary, log


def calibrate(args) -> float:
    """Seconds per iteration of the real settings, from a short run after its warm-up."""
    n = args.calibration_iters
    with tempfile.TemporaryDirectory() as tmp:
        a = argparse.Namespace(**{**vars(args), "log_every": 10})
        cfg = _train_cfg(a, n, Path(tmp))
        _, log = _fit(cfg, Path(tmp), args.device, False, init_from=args.init_from)
    t = {r["iter"]: r["time"] for r in log if "time" in r}
    first, last = min(t), max(t)
    return (t[last] - t[first]) / (last - first)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--minutes", type=float, help="train for about this many minutes (calibrated)")
    src.add_argument("--iters", type=int, help="train for exactly this many iterations")
    src.add_argument("--from-run", type=Path, help="export this finished `fastsr train` run instead of training")
    p.add_argument("--command", help="with --from-run: the exact fastsr train command of the run")
    p.add_argument("--config", default="nonbn_x4", help="recipe (default nonbn_x4)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, help="data.batch_size")
    p.add_argument("--num-workers", type=int, help="data.num_workers (DataLoader worker processes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", type=Path, metavar="WEIGHTS",
                   help="fine-tune: start G (and its EMA) from these generator weights (fastsr safetensors)")
    p.add_argument("--out", type=Path, default=Path("runs/nonbn_x4"), help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in the run folder")
    p.add_argument("--calibration-iters", type=int, default=60)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--name", default="nonbn_x4", help="shipped model name")
    p.add_argument("--dest", type=Path, help="output file (default fastsr/weights/<name>.safetensors)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--generator-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a generator constructor option stored with the weights (e.g. back_projection=1); "
                        "the validation runs with it (repeatable)")
    p.add_argument("--data-description", help="what the model was trained on (metadata 'data'; default: "
                                              "the sample photographs)")
    p.add_argument("--device-description", help="with --from-run: where it trained (metadata 'device')")
    p.add_argument("--checkpoint-file", metavar="NAME",
                   help="with --from-run: this file of RUN/checkpoints (default latest.safetensors)")
    p.add_argument("--group", choices=["params_ema", "params"], default="params_ema",
                   help="the run's weight group to ship: the EMA of G (default) or G itself")
    p.add_argument("--blend", type=Path, metavar="WEIGHTS",
                   help="ship --blend-share x WEIGHTS + (1 - share) x the run's G (network interpolation)")
    p.add_argument("--blend-share", type=float, metavar="S", help="with --blend: the share of WEIGHTS, in (0, 1)")
    p.add_argument("--previous", type=Path, metavar="WEIGHTS",
                   help="with --from-run: the generator file the run started from (its --init-from); its "
                        "history is carried into the metadata with this run appended")
    return p


def main(argv=None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    dest = a.dest or ROOT / "fastsr" / "weights" / f"{a.name}.safetensors"
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    for name, v in (("--minutes", a.minutes), ("--iters", a.iters)):
        if v is not None and v <= 0:
            p.error(f"{name} must be > 0, got {v}")

    if a.init_from is not None:
        if a.from_run is not None:
            p.error("--init-from trains; it cannot be combined with --from-run")
        if not a.init_from.is_file():
            p.error(f"--init-from: no such file: {a.init_from}")
    if (a.blend is None) != (a.blend_share is None):
        p.error("--blend and --blend-share go together")
    if a.blend_share is not None and not 0 < a.blend_share < 1:
        p.error(f"--blend-share must be in (0, 1), got {a.blend_share}")
    if a.blend is not None and not a.blend.is_file():
        p.error(f"--blend: no such file: {a.blend}")
    if a.checkpoint_file is not None and a.from_run is None:
        p.error("--checkpoint-file picks a checkpoint of --from-run")
    train_names = [n for n, _ in sample_images("train")]
    if a.from_run is not None:
        if not a.command:
            p.error("--from-run needs --command (the train command, recorded in the metadata)")
        run, command = a.from_run, a.command
        extra = {"device": a.device_description} if a.device_description else {}
        try:
            cfg = load_run_config(run, a.config)
        except ConfigError as e:
            p.error(f"--from-run: {e} (--config)")
        if cfg is not None:
            extra["config_resolved"] = cfg
        if a.previous is not None:
            prev = read_metadata(a.previous)
            history = list(prev.get("history") or [])
            history.append({"stage": len(history) + 1, "what": f"fine-tune of {a.previous.name} (recipe {a.config})",
                            "command": command})
            extra.update(init_from=str(a.previous), history=history)
    else:
        if a.minutes is None and a.iters is None:
            p.error("give --minutes, --iters or --from-run")
        command = "PYTHONPATH=$PWD python scripts/ship_pretrained.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        iters = a.iters
        extra = {}
        if a.minutes is not None:
            spi = calibrate(a)
            iters = max(10, int(a.minutes * 60 / spi))
            extra["calibration"] = f"{spi:.4f} s/iter over {a.calibration_iters} iterations -> {iters} iterations"
            print(f"calibration: {spi * 1000:.1f} ms/iter -> {iters} iterations for {a.minutes} min", flush=True)
        cfg = _train_cfg(a, iters, a.out)
        _fit(cfg, a.out, a.device, not a.no_progress, a.overwrite, a.init_from)
        run = a.out
        extra["config_resolved"] = cfg
        if a.init_from is not None:
            extra["init_from"] = str(a.init_from)
        extra["device"] = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    _export(a, run, dest, command, train_names, extra)
    return 0


def _export(a, run: Path, dest: Path, command: str, train_names: list, extra: dict) -> None:
    """Validate the run's EMA generator as it ships (fp16) and write it with its metadata."""
    ckpt = run / "checkpoints" / (a.checkpoint_file or "latest.safetensors")
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint {ckpt}")
    at = read_metadata(ckpt).get("iteration")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    timed = [r for r in log if "time" in r and (at is None or r["iter"] <= int(at))]
    last = timed[-1]
    # a resumed run restarts its clock: the wall time is the sum of the segments' last times
    wall = sum(a["time"] for a, b in zip(timed, timed[1:]) if b["time"] < a["time"]) + last["time"]
    generator = dict(read_metadata(ckpt).get("generator") or {})
    for item in a.generator_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--generator-option {item!r}: expected KEY=VALUE")
        generator[key] = yaml.safe_load(value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    group = a.group
    ema = (extra.get("config_resolved") or load_config(a.config))["train"]["ema_decay"]
    what = f"EMA of G (decay {ema})" if group == "params_ema" else "G (not its EMA)"
    if a.blend is not None:
        tmp = tempfile.TemporaryDirectory()
        ckpt, group, what = _blended(ckpt, group, a.blend, a.blend_share, Path(tmp.name)), "params", (
            f"network interpolation {a.blend_share:g} x {a.blend.name} + {1 - a.blend_share:g} x {what} "
            "(ESRGAN, section 3.4)")
    # validate what ships: fp16 weights, the stored generator options
    export_generator(ckpt, dest, group, torch.float16, {"generator": generator})
    result = validate(dest)
    print(table(result))
    rows = {n: {k: [round(x, 4) for x in v] if isinstance(v, list) else v for k, v in r.items()}
            for n, r in result.rows().items()}
    meta = {
        "recipe": a.config, "command": command, "iterations": last["iter"], "generator": generator,
        "wall_time_s": round(wall, 1), "sec_per_iter": round(wall / last["iter"], 4),
        "data": (a.data_description or "fastsr.data.sample_images('train'): " + ", ".join(train_names))
                + "; validation: held-back split " + ", ".join(rows),
        "weights": f"{what}, stored as float16",
        "validation": rows, "validation_conventions": CONVENTIONS, **extra,
    }
    out = export_generator(ckpt, dest, group, torch.float16, meta)
    if a.blend is not None:
        tmp.cleanup()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def _blended(ckpt: Path, group: str, other: Path, share: float, folder: Path) -> Path:
    """A generator file in ``folder`` holding ``share * other + (1 - share) * ckpt[group]``
    (float32, :func:`fastsr.models.interpolate_weights`) with ``ckpt``'s metadata, named
    ``<ckpt>+<other>.safetensors`` (the shipped file's ``exported_from``)."""
    model, _ = load_generator(ckpt, group)
    theirs, _ = load_generator(other, "params")
    interpolate_weights(model, theirs.float(), 1.0 - share)
    out = folder / f"{ckpt.stem}+{other.stem}.safetensors"
    save_generator(out, model.state_dict(), None, read_metadata(ckpt))
    return out


if __name__ == "__main__":
    sys.exit(main())
