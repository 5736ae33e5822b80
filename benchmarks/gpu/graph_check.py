"""train.cuda_graph on a GPU: time of one training iteration eager vs replayed as a CUDA graph,
and the agreement of their losses. Run by hand on a machine with an NVIDIA GPU, from the
project root after building fastsr._C in place (see run.sh):

  PYTHONPATH=$PWD python benchmarks/gpu/graph_check.py            # nonbn_wgan_x4, batch 16, 96 px
  PYTHONPATH=$PWD python benchmarks/gpu/graph_check.py --dry-run  # CPU, tiny models: tests this script

For each of ``train.cuda_graph=false`` and ``true`` (the recipe's other settings as
``fastsr train`` picks them): ``Trainer.train_step`` timed with CUDA events, 20 warm-up
iterations (the graph's 3 warm-up iterations and its capture among them) then 50 timed
ones; prints the median and p20/p80 ms per iteration and the speed-up. Then 5 iterations
of each from the same seed and batches, and the largest |difference| of every logged loss.
``train_step`` includes one device-to-host read of the losses per call (``fastsr train``
reads them only every ``log.every`` iterations), so this is a slight upper bound.
The dry run does the eager part only (graphs need CUDA) at tiny size on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch


def _quantiles(ts):
    ts = sorted(ts)
    q = statistics.quantiles(ts, n=5) if len(ts) > 1 else [ts[0]] * 4
    return statistics.median(ts), q[0], q[3]


def _trainer(graph: bool, args, tmp: str):
    from fastsr.train import Trainer, load_config

    sets = [f"data.batch_size={args.batch}", f"data.crop_size={args.crop}", "train.pretrain_iters=0",
            f"train.cuda_graph={'true' if graph else 'false'}"]
    if args.dry_run:
        sets += ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}",
                 "model.discriminator={name: WGANCritic, input_size: 64, num_feat: 1}"]
    base = load_config(args.recipe, sets)
    if "input_size" in (base["model"].get("discriminator") or {}):  # the critic's FC layer follows the crop
        sets.append(f"model.discriminator.input_size={args.crop}")
    cfg = load_config(args.recipe, sets + list(args.set))
    torch.manual_seed(0)
    return Trainer(cfg, tmp, data=False, progress=False, device=args.device), cfg


def _batches(cfg, n):
    g = torch.Generator().manual_seed(1)
    s, c, b = cfg["scale"], cfg["data"]["crop_size"], cfg["data"]["batch_size"]
    return [(torch.rand(b, 3, c // s, c // s, generator=g), torch.rand(b, 3, c, c, generator=g)) for _ in range(n)]


def _time(tr, batches, warmup: int, iters: int, cuda: bool):
    dev = tr.device
    batches = [(lr.to(dev), hr.to(dev)) for lr, hr in batches]
    for i in range(warmup):
        tr.train_step(*batches[i % len(batches)])
    ts = []
    for i in range(iters):
        lr, hr = batches[i % len(batches)]
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            tr.train_step(lr, hr)
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            tr.train_step(lr, hr)
            ts.append((time.perf_counter() - t) * 1e3)
    return _quantiles(ts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="nonbn_wgan_x4")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96, help="HR crop side (px)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--set", action="append", default=[], help="extra config override, key=value")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny models, eager only: tests this script")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.batch, args.crop, args.warmup, args.iters = "cpu", 2, 64, 2, 3
        print("dry run: CPU, tiny models, eager only (CUDA graphs need a CUDA device)")
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --dry-run to test this script on a CPU", file=sys.stderr)
            return 2
        args.device = "cuda"
        print(f"{torch.cuda.get_device_name()} | torch {torch.__version__}")
    cuda = args.device == "cuda"
    modes = [False] if args.dry_run else [False, True]
    print(f"{args.recipe}, batch {args.batch}, {args.crop} px HR, {args.warmup} warm-up + {args.iters} timed "
          f"iterations ({'CUDA events' if cuda else 'perf_counter'})")
    medians, losses = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for graph in modes:
            tr, cfg = _trainer(graph, args, tmp)
            if graph and not tr.cuda_graph:
                print("cuda_graph could not be turned on", file=sys.stderr)
                return 1
            med, p20, p80 = _time(tr, _batches(cfg, 4), args.warmup, args.iters, cuda)
            runner = (tr._graphs or {}).get("adversarial")
            state = "" if runner is None else (" (replayed)" if runner.captured else f" ({runner.failure})")
            print(f"cuda_graph={str(graph).lower():5s}  median {med:8.3f} ms  p20 {p20:8.3f}  p80 {p80:8.3f}"
                  f"{state}")
            medians[graph] = med
            del tr
            tr, cfg = _trainer(graph, args, tmp)
            losses[graph] = [tr.train_step(lr, hr) for lr, hr in _batches(cfg, 5)]
            del tr
            if cuda:
                torch.cuda.empty_cache()
    if True in medians:
        print(f"speed-up of the graph: {medians[False] / medians[True]:.2f}x")
        diff = {k: max(abs(a[k] - b[k]) for a, b in zip(losses[True], losses[False])) for k in losses[False][0]}
        print("max |loss difference| over 5 iterations, graph vs eager: "
              + ", ".join(f"{k} {v:.3g}" for k, v in diff.items()))
    else:
        print("losses of 5 eager iterations: " + ", ".join(f"{k} {v:.4g}" for k, v in losses[False][-1].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
