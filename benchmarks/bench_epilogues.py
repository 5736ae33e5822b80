"""Conv epilogues: fastsr vs eager vs torch.compile, forward and forward+backward.

Issue targets on a 2-core CPU: fwd+bwd >= 3x eager, >= 1.5x torch.compile, and >= 60 % of
the bandwidth of a plain copy of the same bytes. On CUDA (when available) the shapes are the
paper's training batch and a 4x larger batch of 4x larger maps.
"""
import pytest
import torch
import torch.nn.functional as F
from common import DEVICES, cases, compiled, copy_fn, fwd_bwd, run_benchmark

from fastsr.nn import ResidualBlockNoBN
from fastsr.ops import bias_prelu, bias_residual

SHAPES = {"cpu": [(16, 64, 24, 24), (1, 64, 128, 128)], "cuda": [(16, 64, 24, 24), (64, 64, 96, 96)]}
DTYPES = [torch.float32, torch.bfloat16]


def eager_bias_prelu(x, b, w):
    return F.prelu(x + b.view(1, -1, 1, 1), w)


def eager_bias_residual(x, b, r):
    return r + (x + b.view(1, -1, 1, 1))


def _tensors(shape, dtype, n, device):
    torch.manual_seed(0)
    return [torch.randn(shape, dtype=dtype).to(device).requires_grad_() for _ in range(n)]


def _impls(kind):
    if kind == "bias_prelu":
        return {"fastsr": bias_prelu, "eager": eager_bias_prelu, "compile": compiled(eager_bias_prelu)}
    return {
        "fastsr": lambda x, b, r: bias_residual(x, b, r, 1.0),
        "eager": eager_bias_residual,
        "compile": compiled(eager_bias_residual),
    }


@pytest.mark.parametrize("impl", ["fastsr", "eager", "compile", "copy"])
@pytest.mark.parametrize("kind", ["bias_prelu", "bias_residual"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", cases(SHAPES))
def test_epilogue(benchmark, case, dtype, pass_, kind, impl):
    device, shape = case
    (x, r, g) = _tensors(shape, dtype, 3, device)
    C = shape[1]
    b = torch.randn(C, device=device, requires_grad=True)
    w = torch.full((C,), 0.25, device=device, requires_grad=True)
    second = w if kind == "bias_prelu" else r
    numel, esize = x.numel(), x.element_size()
    # Minimum traffic of the fused kernels, in tensors of x's size:
    # bias_prelu: fwd x->y (2), bwd g,x->dx (3); bias_residual: fwd x,r->y (3), bwd g read once (1).
    tensors = {("bias_prelu", "fwd"): 2, ("bias_prelu", "fwd+bwd"): 5,
               ("bias_residual", "fwd"): 3, ("bias_residual", "fwd+bwd"): 4}[(kind, pass_)]
    nbytes = tensors * numel * esize
    if impl == "copy":
        fn = copy_fn(nbytes, device)
    else:
        op = _impls(kind)[impl]
        if pass_ == "fwd":
            fn = lambda: op(x.detach(), b.detach(), second.detach())  # noqa: E731
        else:
            fn = fwd_bwd(op, [x, b, second], g.detach())
    run_benchmark(benchmark, fn, group=f"{kind} {pass_} {tuple(shape)} {dtype}", name=impl, nbytes=nbytes,
                  device=device)


@pytest.mark.parametrize("impl", ["fused", "unfused", "unfused+compile"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_residual_block(benchmark, device, dtype, impl):
    torch.manual_seed(0)
    block = ResidualBlockNoBN(64, fused=impl == "fused").to(device=device, dtype=dtype)
    fn_block = compiled(block) if impl == "unfused+compile" else block
    x = torch.randn(16, 64, 24, 24, dtype=dtype).to(device).requires_grad_()
    g = torch.randn_like(x)
    fn = fwd_bwd(lambda t: fn_block(t), [x], g)
    run_benchmark(benchmark, fn, group=f"ResidualBlockNoBN fwd+bwd 16x64x24x24 {dtype}", name=impl, nbytes=0,
                  device=device)
