"""Shared test utilities: layouts, tolerances derived from the arithmetic."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

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


def spandrel_arch(family: str, module: str):
    """spandrel's architecture module ``spandrel/architectures/<family>/__arch/<module>.py``,
    the independent reference of the community-architecture tests, or a pytest skip where
    spandrel is not installed. spandrel's package ``__init__`` imports its whole registry,
    which needs torchvision (not installable beside the pinned torch); the architecture files
    need only torch, einops and ``spandrel.util``, so the parent packages are registered as
    bare namespaces and the architecture module is imported alone."""
    import sys
    import types

    if "spandrel" in sys.modules:
        base = sys.modules["spandrel"].__path__[0]
    else:
        spec = importlib.util.find_spec("spandrel")
        if spec is None or importlib.util.find_spec("einops") is None:
            pytest.skip("spandrel (pip install --no-deps spandrel==0.4.2) and einops are the reference")
        base = spec.submodule_search_locations[0]
    for name, path in (("spandrel", base), ("spandrel.architectures", f"{base}/architectures"),
                       (f"spandrel.architectures.{family}", f"{base}/architectures/{family}")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
    return importlib.import_module(f"spandrel.architectures.{family}.__arch.{module}")


def save_state_dict(sd: dict, path, wrap: str | None = None):
    """``sd`` as upstream code saves it: ``.safetensors`` (contiguous copies), else
    ``torch.save`` of the dict, or of ``{wrap: sd}`` (``"params_ema"``, ...); returns ``path``."""
    from safetensors.torch import save_file

    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    if str(path).endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save({wrap: sd} if wrap else sd, path)
    return path


def assert_same_output(model, ref, x: torch.Tensor, atol: float, rtol: float) -> None:
    """``model`` (fused and unfused) gives ``ref``'s output for ``x`` within the tolerances;
    leaves ``model.fused`` True."""
    with torch.no_grad():
        want = ref(x.clone())
        for fused in (True, False):
            model.fused = fused
            got = model(x.clone())
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m: f"fused={fused}: {m}")
    model.fused = True


class AtenOps(TorchDispatchMode):
    """Records the name (``overloadpacket.__name__``) of every ATen op that runs inside it."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
