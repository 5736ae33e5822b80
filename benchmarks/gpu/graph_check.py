"""CUDA graphs on a GPU: the GAN iteration and the inference targets, in one run.

Run by hand on a machine with an NVIDIA GPU, from the project root after building fastsr._C
in place (see run.sh):

  PYTHONPATH=$PWD python benchmarks/gpu/graph_check.py            # nonbn_wgan_x4, batch 16, 96 px
  PYTHONPATH=$PWD python benchmarks/gpu/graph_check.py --dry-run  # CPU, tiny models: tests this script

Training (``Trainer.gan_step.step``, the iteration as ``fastsr train``'s loop runs it, without the
host read of the losses; :func:`fastsr.perf.time_fn`: CUDA events, ``--warmup`` then
``--iters`` timed iterations; median and p20/p80 ms):

  A  plain PyTorch eager fp32 NCHW (model.fused, bf16, channels_last, fused Adam, graphs off)
  B  plain PyTorch, bf16 autocast + channels_last + fused Adam (the best eager setting)
  C  B replayed as a CUDA graph (graphs without fastsr's ops)
  D  `fastsr train` defaults (fused ops; bf16, channels_last and cuda_graph on auto)
  E  D with cuda_graph off

and the targets D vs A (>= 4x) and D vs the best of B and C (>= 1.5x). Then 5 iterations of D
and E from the same seed and batches, and the largest |difference| of every logged loss.

Inference (NonBN x4, batch 1, 256 and 512 px LR, ``inference_mode``): eager fp32, fused
channels_last bf16, and the same replayed by :class:`fastsr.graphs.GraphedModule`; target
>= 3x eager fp32. The dry run does the eager rows only (graphs need CUDA), tiny and on the CPU.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile

import torch

from fastsr.perf import time_fn

_PLAIN = ["model.fused=false", "train.bf16=false", "train.channels_last=false", "train.fused_optimizer=false",
          "train.cuda_graph=false"]
_BEST_EAGER = ["model.fused=false", "train.bf16=true", "train.channels_last=true", "train.fused_optimizer=true",
               "train.cuda_graph=false"]
CONFIGS = {
    "A": ("plain eager fp32 NCHW", _PLAIN),
    "B": ("plain eager bf16 + channels_last + fused Adam", _BEST_EAGER),
    "C": ("B as a CUDA graph", [*_BEST_EAGER[:-1], "train.cuda_graph=true"]),
    "D": ("fastsr train defaults", []),
    "E": ("D without CUDA graph", ["train.cuda_graph=false"]),
}


def _trainer(sets: list[str], args, tmp: str):
    from fastsr.train import Trainer, load_config

    sets = [f"data.batch_size={args.batch}", f"data.crop_size={args.crop}", "train.pretrain_iters=0", *sets]
    if args.dry_run:
        sets += ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}",
                 "model.discriminator={name: WGANCritic, input_size: 64, num_feat: 1}"]
    base = load_config(args.recipe, sets)
    if "input_size" in (base["model"].get("discriminator") or {}):  # the critic's FC layer follows the crop
        sets.append(f"model.discriminator.input_size={args.crop}")
    cfg = load_config(args.recipe, sets + list(args.set))
    torch.manual_seed(0)
    return Trainer(cfg, tmp, data=False, progress=False, device=args.device), cfg


def _batches(cfg, n, device):
    g = torch.Generator().manual_seed(1)
    s, c, b = cfg["scale"], cfg["data"]["crop_size"], cfg["data"]["batch_size"]
    return [(torch.rand(b, 3, c // s, c // s, generator=g).to(device), torch.rand(b, 3, c, c, generator=g).to(device))
            for _ in range(n)]


def _row(label: str, t, extra: str = "") -> None:
    print(f"{label:52s} median {t.median_s * 1e3:9.3f} ms  p20 {t.p20_s * 1e3:9.3f}  p80 {t.p80_s * 1e3:9.3f}"
          f"{'' if t.peak_mib is None else f'  peak {t.peak_mib:.0f} MiB'}{extra}")


def training(args, keys) -> dict:
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            label, sets = CONFIGS[key]
            tr, cfg = _trainer(sets, args, tmp)
            batches = _batches(cfg, 4, tr.device)
            cycle = itertools.cycle(batches)
            t = time_fn(lambda tr=tr: tr.gan_step.step(*next(cycle)), tr.device, iters=args.iters,
                        warmup=args.warmup)
            runner = tr.gan_step.phases["adversarial"].graph
            state = "" if runner is None else ("  (replayed)" if runner.captured else f"  ({runner.failure})")
            _row(f"{key} {label}", t, state)
            medians[key] = t.median_s
            del tr
            if args.device == "cuda":
                torch.cuda.empty_cache()
    if {"A", "D"} <= set(medians):
        print(f"D vs A (target >= 4x): {medians['A'] / medians['D']:.2f}x")
    best = [medians[k] for k in ("B", "C") if k in medians]
    if best and "D" in medians:
        print(f"D vs best plain PyTorch of B, C (target >= 1.5x): {min(best) / medians['D']:.2f}x")
    return medians


def parity(args) -> None:
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("D", "E"):
            tr, cfg = _trainer(CONFIGS[key][1], args, tmp)
            losses[key] = [tr.train_step(lr, hr) for lr, hr in _batches(cfg, 5, tr.device)]
            del tr
    diff = {k: max(abs(a[k] - b[k]) for a, b in zip(losses["D"], losses["E"])) for k in losses["E"][0]}
    print("max |loss difference| over 5 iterations, D vs E: " + ", ".join(f"{k} {v:.3g}" for k, v in diff.items()))


def inference(args) -> None:
    from fastsr.graphs import GraphedModule
    from fastsr.models import create

    dev = torch.device(args.device)
    sizes = (16,) if args.dry_run else (256, 512)
    kw = {"num_blocks": 1, "channels": 8} if args.dry_run else {}
    for size in sizes:
        x = torch.rand(1, 3, size, size, device=dev)
        rows = [("eager fp32", False, torch.contiguous_format, torch.float32, False),
                ("fused channels_last bf16", True, torch.channels_last, torch.bfloat16, False)]
        if dev.type == "cuda":
            rows.append(("fused channels_last bf16 + CUDA graph", True, torch.channels_last, torch.bfloat16, True))
        eager = None
        for label, fused, fmt, dtype, graph in rows:
            g = create("NonBNResNet", scale=4, fused=fused, **kw).to(dev, dtype=dtype, memory_format=fmt).eval()
            model = GraphedModule(g) if graph else g
            xi = x.to(dtype=dtype, memory_format=fmt)
            with torch.inference_mode():
                t = time_fn(lambda: model(xi), dev, iters=args.iters, warmup=3)
            eager = eager or t.median_s
            _row(f"inference {size}x{size} {label}", t, f"  {eager / t.median_s:.2f}x eager fp32 (target >= 3x)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="nonbn_wgan_x4")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96, help="HR crop side (px)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--configs", default="ABCDE", help="training configurations to time (letters, see above)")
    p.add_argument("--set", action="append", default=[], help="extra config override, key=value")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny models, eager only: tests this script")
    args = p.parse_args(argv)
    keys = [k for k in args.configs if k in CONFIGS]
    if args.dry_run:
        args.device, args.batch, args.crop, args.warmup, args.iters = "cpu", 2, 64, 1, 2
        keys = [k for k in keys if k in "AE"]  # the others use CUDA graphs or bf16
        print("dry run: CPU, tiny models, eager only (CUDA graphs need a CUDA device)")
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --dry-run to test this script on a CPU", file=sys.stderr)
            return 2
        args.device = "cuda"
        print(f"{torch.cuda.get_device_name()} | torch {torch.__version__}")
    print(f"{args.recipe}, batch {args.batch}, {args.crop} px HR, {args.warmup} warm-up + {args.iters} timed "
          f"iterations")
    training(args, keys)
    if not args.dry_run:
        parity(args)
    inference(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
