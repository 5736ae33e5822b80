"""One PSNR-oriented training step of the NonBN generator on the CPU (the nonbn_corpus_x4
recipe's shapes: 16 blocks, 64 channels, x4, batch 16 of 128 px HR crops, MSE, Adam(fused=True)),
plain PyTorch against fastsr's fused layers with and without the Winograd convolutions.

    python benchmarks/train_step_cpu.py [--threads 2] [--rounds 4]

Variants, interleaved round by round (one warm-up step each time a variant comes up, then one
timed step, ``time.perf_counter``): plain modules in NCHW and in channels_last; fastsr's fused
layers in NCHW and channels_last with ``use_winograd(False)``; fused with the Winograd
convolutions (forward, input and weight gradients). Same weights, same batch; no allocator
tuning on either side. Prints min and median ms per step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastsr.models import NonBNResNet
from fastsr.nn import use_winograd

VARIANTS = {  # name: (fused, winograd, channels_last)
    "plain NCHW": (False, False, False),
    "plain channels_last": (False, False, True),
    "fastsr fused NCHW, no Winograd": (True, False, False),
    "fastsr fused channels_last, no Winograd": (True, False, True),
    "fastsr fused + Winograd": (True, True, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = NonBNResNet(num_blocks=16, channels=64, scale=4)
    opt = torch.optim.Adam(g.parameters(), lr=1e-4, fused=True)
    lr, hr = torch.rand(16, 3, 32, 32), torch.rand(16, 3, 128, 128)

    def step(channels_last: bool) -> None:
        x = lr.contiguous(memory_format=torch.channels_last) if channels_last else lr
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(g(x), hr).backward()
        opt.step()

    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.rounds):
        for name, (fused, winograd, cl) in VARIANTS.items():
            for m in g.modules():
                if hasattr(m, "fused") and not isinstance(getattr(type(m), "fused", None), property):
                    m.fused = fused
            g.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            use_winograd(winograd)
            step(cl)
            t0 = time.perf_counter()
            step(cl)
            times[name].append(time.perf_counter() - t0)
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
    for name, ts in times.items():
        print(f"{name:42s} min {min(ts) * 1e3:7.0f} ms   median {statistics.median(ts) * 1e3:7.0f} ms")


if __name__ == "__main__":
    main()
