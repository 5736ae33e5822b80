"""L1 / Charbonnier loss forward and forward+backward: fastsr vs eager vs torch.compile.

Shape 16x3x96x96: an SRGAN/ESRGAN training batch of 96x96 HR crops (on CUDA also 16x3x256x256).
Run with ``pytest benchmarks/bench_l1_loss.py --benchmark-only``.
"""
import pytest
import torch
import torch.nn.functional as F
from common import cases, measure

from fastsr.ops import l1_loss

SHAPES = {"cpu": [(16, 3, 96, 96)], "cuda": [(16, 3, 96, 96), (16, 3, 256, 256)]}


def _eager(x, y, eps):
    if eps is None:
        return F.l1_loss(x, y)
    d = x - y
    return torch.sqrt(d * d + eps * eps).mean()


_compiled = {}


def _fn(impl, eps):
    if impl == "fastsr":
        return lambda x, y: l1_loss(x, y, eps=eps)
    if impl == "eager":
        return lambda x, y: _eager(x, y, eps)
    if eps not in _compiled:
        _compiled[eps] = torch.compile(lambda x, y: _eager(x, y, eps), fullgraph=True)
    return _compiled[eps]


@pytest.mark.parametrize("impl", ["fastsr", "eager", "compile"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("eps", [None, 1e-3], ids=["l1", "charbonnier"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", cases(SHAPES))
def test_l1_loss(benchmark, case, dtype, eps, mode, impl):
    device, shape = case
    kind = "l1" if eps is None else "charbonnier"
    benchmark.group = f"{kind} {mode} {'x'.join(map(str, shape))} {str(dtype)[6:]}"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g).to(device=device, dtype=dtype)
    y = torch.rand(shape, generator=g).to(device=device, dtype=dtype)
    fn = _fn(impl, eps)
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(x, y)
    else:
        x.requires_grad_(True)

        def run():
            return torch.autograd.grad(fn(x, y), x)
    run()  # compile / warm up outside the timing
    measure(benchmark, run, device)
