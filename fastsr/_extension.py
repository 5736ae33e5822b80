"""Loads fastsr._C, the compiled kernels, with an error that says how to build it."""

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

