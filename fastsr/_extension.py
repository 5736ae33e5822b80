"""Loads fastsr._C, the compiled kernels, with an error that says how to build it, and fills
in CUDA kernels from Triton where fastsr._C has none."""

try:
    from fastsr import _C  # noqa: F401  (importing registers torch.ops.fastsr.* CPU/CUDA kernels)
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fastsr's C++ extension fastsr._C is not built or does not match this torch "
        f"({exc}). Build it from the source tree with:\n"
        "    pip install torch==2.13.0\n"
        "    pip install --no-build-isolation -e .\n"
        "(or `python setup.py build_ext --inplace` for an incremental rebuild)."
    ) from exc


def register_triton_kernels() -> list[str]:
    """Registers the Triton launchers (fastsr.kernels) for the op families without a compiled
    CUDA kernel, on a machine with CUDA and Triton; returns the ops registered."""
    from fastsr.ops import _common

    if not _common.TRITON_CUDA or _common.COMPILED_CUDA.issuperset(_common.FAMILIES):
        return []
    from fastsr import kernels

    return kernels.register(skip=_common.COMPILED_CUDA)
