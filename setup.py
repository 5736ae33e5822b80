"""Build fastsr._C (the C++ CPU kernels, and the CUDA kernels where a CUDA build of torch and
a CUDA toolkit are present) and install fastsr with fastsr.kernels (Triton).

Build with the torch that is already installed::

    pip install torch==2.13.0
    pip install --no-build-isolation -e .

``FASTSR_CUDA=0`` builds without the CUDA kernels even where they could be built;
``FASTSR_CUDA=1`` fails the build when they cannot be.
"""
import glob
import os

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # pragma: no cover - only hit by a wrong build command
    raise SystemExit(
        "fastsr needs PyTorch at build time. Install it first with "
        "`pip install torch==2.13.0`, then build with "
        "`pip install --no-build-isolation .` (an isolated build cannot see torch)."
    ) from exc

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "**", pattern), recursive=True))


sources = _sources("*.cpp")

# The CUDA kernels (csrc/cuda/*.cu) need a CUDA build of torch and nvcc; a CPU-only install
# builds exactly the CPU extension.
_want_cuda = os.environ.get("FASTSR_CUDA", "auto")
_can_cuda = torch.version.cuda is not None and CUDA_HOME is not None
if _want_cuda == "1" and not _can_cuda:
    raise SystemExit(
        f"FASTSR_CUDA=1 but the CUDA kernels cannot be built: torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), CUDA toolkit {CUDA_HOME}."
    )
with_cuda = _can_cuda and _want_cuda != "0"

# -O3 for the auto-vectorised loops; OpenMP at compile AND link time, otherwise
# at::parallel_for silently runs on one thread. No native-arch flag: ISA-specific code is
# selected at run time with GCC target_clones (see csrc/cpu/common.h).
# -fno-math-errno: no kernel reads errno, and without it GCC cannot vectorise sqrt (it
# keeps a scalar sqrtf call per element for the errno side effect; 5x slower Charbonnier).
# -fno-trapping-math: no kernel reads the floating-point exception flags, and without it GCC
# may not evaluate both arms of `z > 0 ? z : a * z` (the multiply could raise a flag), so
# without AVX-512's masked stores the PReLU loops stay scalar with a branch per element
# (the AVX2 clone of the bias + PReLU forward ran 9x slower than PyTorch's on a Zen 3).
# Results are unchanged: rounding, NaN and infinity behave exactly as before.
cxx_flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wno-unused-function"]
link_flags = ["-fopenmp"]
# No fast-math: the CUDA kernels keep IEEE division and sqrt, so they match the references.
nvcc_flags = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]

# FASTSR_SANITIZE=1: build with AddressSanitizer + UndefinedBehaviorSanitizer for the test run
# in README.md ("Sanitizer run"). Undefined behaviour aborts instead of printing and going
# on; -fno-wrapv undoes the -fwrapv of Python's own CFLAGS, which would otherwise define
# signed overflow and hide it from the sanitizer; -O1 keeps the reports readable.
if os.environ.get("FASTSR_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    cxx_flags += sanitize + ["-fno-omit-frame-pointer", "-fno-wrapv", "-O1", "-g"]
    link_flags += sanitize

# fastsr/kernels is a symlink to the top-level kernels/ directory, so the Triton kernels
# install as fastsr.kernels and also import from a source checkout without installing.
packages = find_packages(include=["fastsr", "fastsr.*"])

setup(
    packages=packages,
    package_data={"fastsr": ["configs/*.yaml", "weights/*"]},
    ext_modules=[
        (CUDAExtension if with_cuda else CppExtension)(
            name="fastsr._C",
            sources=sources + (_sources("*.cu") if with_cuda else []),
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags} if with_cuda else {"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
