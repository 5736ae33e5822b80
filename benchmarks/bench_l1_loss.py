"""L1 / Charbonnier loss forward and forward+backward: fastsr vs eager vs torch.compile.

Shape 16x3x96x96: an SRGAN/ESRGAN training batch of 96x96 HR crops.
Run with ``pytest benchmarks/bench_l1_loss.py --benchmark-only``.
"""
import pytest
import torch
import torch.nn.functional as F

from fastsr.ops import l1_loss

SHAPE = (16, 3, 96, 96)


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
def test_l1_loss(benchmark, dtype, eps, mode, impl):
    kind = "l1" if eps is None else "charbonnier"
    benchmark.group = f"{kind} {mode} {'x'.join(map(str, SHAPE))} {str(dtype)[6:]}"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(SHAPE, generator=g).to(dtype)
    y = torch.rand(SHAPE, generator=g).to(dtype)
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
    benchmark(run)
