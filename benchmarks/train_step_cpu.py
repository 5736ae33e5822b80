"""One PSNR-oriented training step of the NonBN generator on the CPU (the nonbn_corpus_x4
recipe's shapes: 16 blocks, 64 channels, x4, batch 16 of 128 px HR crops, MSE, Adam(fused=True)),
plain PyTorch against fastsr's fused layers with and without the Winograd convolutions.

    python benchmarks/train_step_cpu.py [--threads 2] [--rounds 4] [--bf16 auto|on|off]

Variants, interleaved round by round (one warm-up step each time a variant comes up, then one
timed step, ``time.perf_counter``): plain modules in NCHW and in channels_last; fastsr's fused
layers in NCHW and channels_last with ``use_winograd(False)``; fused with the Winograd
convolutions (forward, input and weight gradients). With ``--bf16`` (auto: where the CPU
computes bf16 natively, AVX512-BF16 or AMX) the same under CPU bf16 autocast in channels_last:
plain PyTorch (the best plain setting on such a CPU), fastsr's fused layers without and with
the Winograd convolutions (bf16 forward and input gradient; the weight gradient in the
float32 Winograd domain, the default, or oneDNN's in bf16: ``winograd_bf16_weight_grad``; on
AMX CPUs ``winograd_preferred`` leaves bf16 to oneDNN). Same weights, same batch; no
allocator tuning on either side. Prints min and median ms per step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastsr.models import NonBNResNet
from fastsr.nn import use_winograd
from fastsr.ops import winograd_bf16_weight_grad
from fastsr.perf import native_bf16

VARIANTS = {  # name: (fused, winograd, channels_last, bf16 autocast, bf16 weight gradient)
    "plain NCHW": (False, False, False, False, "winograd"),
    "plain channels_last": (False, False, True, False, "winograd"),
    "fastsr fused NCHW, no Winograd": (True, False, False, False, "winograd"),
    "fastsr fused channels_last, no Winograd": (True, False, True, False, "winograd"),
    "fastsr fused + Winograd": (True, True, True, False, "winograd"),
}
BF16_VARIANTS = {
    "plain bf16 + channels_last": (False, False, True, True, "winograd"),
    "fastsr fused bf16 + channels_last, no Winograd": (True, False, True, True, "winograd"),
    "fastsr fused bf16 + Winograd": (True, True, True, True, "winograd"),
    "fastsr fused bf16 + Winograd, oneDNN bf16 wgrad": (True, True, True, True, "onednn"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="the bf16 autocast variants (auto: where the CPU computes bf16 natively)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128, help="HR crop side in px (a multiple of 4)")
    args = ap.parse_args()
    if args.crop % 4 or args.crop < 16:
        raise SystemExit(f"--crop must be a multiple of 4 and at least 16, got {args.crop}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = NonBNResNet(num_blocks=16, channels=64, scale=4)
    opt = torch.optim.Adam(g.parameters(), lr=1e-4, fused=True)
    lr, hr = torch.rand(args.batch_size, 3, args.crop // 4, args.crop // 4), torch.rand(args.batch_size, 3, args.crop,
                                                                                         args.crop)
    variants = dict(VARIANTS)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16("cpu"))
    if bf16:
        variants.update(BF16_VARIANTS)

    def step(channels_last: bool, autocast: bool) -> None:
        x = lr.contiguous(memory_format=torch.channels_last) if channels_last else lr
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            sr = g(x)
        torch.nn.functional.mse_loss(sr.float(), hr).backward()
        opt.step()

    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, (fused, winograd, cl, autocast, wgrad) in variants.items():
            for m in g.modules():
                if hasattr(m, "fused") and not isinstance(getattr(type(m), "fused", None), property):
                    m.fused = fused
            g.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            use_winograd(winograd)
            winograd_bf16_weight_grad(wgrad)
            step(cl, autocast)
            t0 = time.perf_counter()
            step(cl, autocast)
            times[name].append(time.perf_counter() - t0)
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 {native_bf16('cpu')}, batch {args.batch_size} of {args.crop} px")
    for name, ts in times.items():
        print(f"{name:48s} min {min(ts) * 1e3:7.0f} ms   median {statistics.median(ts) * 1e3:7.0f} ms")


if __name__ == "__main__":
    main()
