"""PixelShuffle(2) + PReLU, forward and forward+backward: fastsr vs eager vs torch.compile.

Shapes: 16x256x24x24 (SRGAN training batch, first x2 stage on 24x24 LR crops) and
1x256x128x128 (inference on a 128x128 LR image); on CUDA 16x256x24x24 and 64x256x96x96;
64 output channels, per-channel PReLU.
Run with ``pytest benchmarks/bench_pixel_shuffle_prelu.py --benchmark-only``.
"""
import pytest
import torch
import torch.nn.functional as F
from common import cases, measure

from fastsr.ops import pixel_shuffle_prelu

R = 2
SHAPES = {"cpu": [(16, 256, 24, 24), (1, 256, 128, 128)], "cuda": [(16, 256, 24, 24), (64, 256, 96, 96)]}


def _eager(x, w):
    return F.prelu(F.pixel_shuffle(x, R), w)


_compiled = {}


def _fn(impl):
    if impl == "fastsr":
        return lambda x, w: pixel_shuffle_prelu(x, w, R)
    if impl == "eager":
        return _eager
    if impl not in _compiled:
        _compiled[impl] = torch.compile(_eager, fullgraph=True)
    return _compiled[impl]


@pytest.mark.parametrize("impl", ["fastsr", "eager", "compile"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", cases(SHAPES))
def test_pixel_shuffle_prelu(benchmark, case, dtype, layout, mode, impl):
    device, shape = case
    benchmark.group = f"pixel_shuffle_prelu {mode} {'x'.join(map(str, shape))} {layout} {str(dtype)[6:]}"
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    C = shape[1] // (R * R)
    w = torch.full((C,), 0.25, dtype=dtype, device=device)
    fn = _fn(impl)
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(x, w)
    else:
        x.requires_grad_(True)
        w.requires_grad_(True)
        gout = torch.randn(shape[0], C, shape[2] * R, shape[3] * R, generator=g).to(device=device, dtype=dtype)
        gout = gout.contiguous(memory_format=fmt)

        def run():
            return torch.autograd.grad(fn(x, w), (x, w), gout)
    run()  # compile / warm up outside the timing
    measure(benchmark, run, device)
