"""Shared test utilities: layouts, tolerances derived from the arithmetic."""
from __future__ import annotations

import importlib.util

import pytest
import torch

LAYOUTS = ("contiguous", "channels_last", "strided")

# One unit in the last place of bfloat16 (8 significant bits): a kernel that computes in
# fp32 and rounds once can differ from the fp32 reference rounded once by one ulp when an
# FMA changes the last fp32 bit right at a rounding boundary.
BF16_RTOL = 2.0**-7
FP32_RTOL = 1e-6

requires_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


def make_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` (N, C, H, W) as contiguous, channels_last, or a non-contiguous strided view with
    the same values (every other column of a tensor twice as wide)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.zeros(*t.shape[:3], 2 * t.shape[3], dtype=t.dtype)
        wide[..., ::2] = t
        view = wide[..., ::2]
        assert not view.is_contiguous() or t.shape[3] == 1
        return view
    raise ValueError(layout)


def reduction_atol(terms: torch.Tensor, dims, dtype: torch.dtype) -> torch.Tensor:
    """Absolute tolerance for a float32-accumulated sum over ``dims``: a few units of
    fp32 rounding times the sum of |terms| (the classic bound for recursive summation is
    n * eps * sum|t|; chunked summation is far better, so 64 * eps is generous yet still
    catches a wrong term, whose size is ~ |t|)."""
    eps = torch.finfo(torch.float32).eps
    return 64 * eps * terms.abs().to(torch.float64).sum(dims) + 1e-7


def assert_close_sum(actual, expected, terms, dims):
    atol = reduction_atol(terms, dims, actual.dtype)
    diff = (actual.to(torch.float64) - expected.to(torch.float64)).abs()
    assert torch.all(diff <= atol), f"max diff {diff.max().item():.3e} > atol {atol.min().item():.3e}"


def truncate_images_after(monkeypatch, loads: int) -> None:
    """Make every training-image read after the first ``loads`` fail as a truncated file
    would (an error between iterations: with batches of 2, ``loads=6`` lets iterations 1-3
    read fine)."""
    from fastsr.data import HRImageDataset
    from fastsr.data.io import ImageReadError

    real_load, calls = HRImageDataset.load, []

    def load(self, index):
        calls.append(index)
        if len(calls) > loads:
            raise ImageReadError(f"cannot read image {self.sources[index]}: image file is truncated")
        return real_load(self, index)

    monkeypatch.setattr(HRImageDataset, "load", load)
