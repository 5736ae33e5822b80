"""Which kernel serves which device: the compiled CPU kernels, the compiled CUDA kernels where
fastsr._C was built with CUDA, the Triton launchers for the rest, the reference elsewhere --
decided from facts fixed at import, so the decision traces under torch.compile."""
import pytest
import torch

import fastsr
from fastsr.ops import _common
from helpers import requires_triton


def test_every_family_has_a_cpu_kernel():
    for family in _common.FAMILIES:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastsr::{family}", "CPU"), family


def test_every_family_has_a_cpp_autograd():
    # Autograd of every op is C++ (csrc/autograd/<family>.cpp): no Python formula per call.
    for family in _common.FAMILIES:
        dump = torch._C._dispatch_dump(f"fastsr::{family}")
        lines = [line for line in dump.splitlines() if line.startswith("Autograd")]
        assert lines and all(f"csrc/autograd/{family}.cpp" in line for line in lines), dump


def test_compiled_cuda_kernels_match_the_build():
    # A CPU build of torch cannot build the CUDA kernels; a CUDA build with nvcc builds all
    # families but SSIM (whose CUDA kernel is Triton's).
    if torch.version.cuda is None:
        assert _common.COMPILED_CUDA == frozenset()
    else:
        assert _common.COMPILED_CUDA <= set(_common.FAMILIES) - {"ssim"}


def test_use_reference_decisions():
    x = torch.zeros(1, 1, 1, 1)
    assert _common.use_reference("reference", x, "fastsr.ops.bias_prelu")
    assert not _common.use_reference("auto", x, "fastsr.ops.bias_prelu")
    assert _common.use_reference("auto", torch.zeros(1, 1, 1, 1, device="meta"), "fastsr.ops.bias_prelu")
    with pytest.raises(ValueError, match="impl must be one of"):
        _common.use_reference("triton", x, "fastsr.ops.bias_prelu")


def test_kernel_choice_traces_under_compile():
    # The choice runs inside the compiled region: no graph break, no Python helper Dynamo
    # refuses (an importlib lookup here once broke fullgraph compilation on CUDA).
    def f(x, b, w):
        return fastsr.ops.bias_prelu(x, b, w) * 2

    x, b, w = torch.randn(2, 3, 4, 5), torch.randn(3), torch.rand(3)
    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True, backend="eager")(x, b, w)
    torch.testing.assert_close(out, f(x, b, w))


@requires_triton
def test_triton_launchers_name_existing_ops():
    import importlib

    for family in _common.FAMILIES:
        module = importlib.import_module(f"fastsr.kernels.{family}")
        assert module.CUDA_KERNELS, family
        for op, fn in module.CUDA_KERNELS.items():
            assert hasattr(torch.ops.fastsr, op), op
            assert callable(fn)


def test_no_cuda_kernel_registered_without_cuda():
    # import fastsr registers neither compiled nor Triton CUDA kernels on a CPU-only build.
    if torch.version.cuda is None:
        for family in _common.FAMILIES:
            assert not torch._C._dispatch_has_kernel_for_dispatch_key(f"fastsr::{family}", "CUDA"), family
