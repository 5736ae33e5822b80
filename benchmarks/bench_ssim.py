"""SSIM forward and forward+backward: fastsr vs the eager reference, torch.compile of it,
pytorch-msssim and kornia (run with ``pytest benchmarks/bench_ssim.py --benchmark-only``).

Every implementation computes the same per-image SSIM (11x11 Gaussian window, sigma 1.5,
'valid' filtering, data_range 1); fwd+bwd differentiates the mean SSIM w.r.t. the first
image only (the SR output of a training step; the HR target needs no gradient). Issue
target on this 2-core CPU: fastsr fwd+bwd >= 15x pytorch-msssim.

kornia (0.9.0) installs against the torch already present (it needs torch>=2.5.1,
kornia-rs, numpy); its benchmarks are skipped when it is not installed.
"""
import pytest
import torch
from common import cases, measure

from fastsr.ops import ssim, ssim_reference

pytorch_msssim = pytest.importorskip("pytorch_msssim")

SHAPES = {"cpu": [(16, 3, 96, 96), (1, 3, 512, 512), (1, 1, 512, 512)],
          "cuda": [(16, 3, 96, 96), (16, 3, 256, 256), (1, 3, 2048, 2048)]}
IMPLS = ["fastsr", "eager", "compile", "pytorch-msssim", "kornia"]


def _msssim(x, y):
    return pytorch_msssim.ssim(x, y, data_range=1.0, size_average=False, win_size=11, nonnegative_ssim=False)


def _kornia(x, y):
    kornia = pytest.importorskip("kornia")
    return kornia.metrics.ssim(x, y, 11, max_val=1.0, padding="valid").flatten(1).mean(1)


_COMPILED = {}


def _impl(name):
    if name == "fastsr":
        return ssim
    if name == "eager":
        return ssim_reference
    if name == "compile":
        if "fn" not in _COMPILED:
            _COMPILED["fn"] = torch.compile(ssim_reference, dynamic=False)
        return _COMPILED["fn"]
    if name == "pytorch-msssim":
        return _msssim
    if name == "kornia":
        pytest.importorskip("kornia")
        return _kornia
    raise ValueError(name)


def _images(shape, device):
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(shape, generator=g)
    sr = (hr + 0.05 * torch.randn(shape, generator=g)).clamp(0, 1)
    return sr.to(device), hr.to(device)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", cases(SHAPES))
def test_ssim(benchmark, case, pass_, impl):
    device, shape = case
    fn = _impl(impl)
    sr, hr = _images(shape, device)
    if pass_ == "fwd":
        def run():
            with torch.no_grad():
                return fn(sr, hr)
    else:
        srg = sr.clone().requires_grad_()

        def run():
            return torch.autograd.grad(fn(srg, hr).mean(), srg)

    for _ in range(2):  # warm-up (and compilation for torch.compile)
        run()
    benchmark.group = f"SSIM {pass_} {'x'.join(map(str, shape))} float32"
    benchmark.name = impl
    rounds = 10 if shape[-1] >= 512 else 20
    measure(benchmark, run, device, pedantic={"rounds": rounds, "iterations": 1, "warmup_rounds": 1})
