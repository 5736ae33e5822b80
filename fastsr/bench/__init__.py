"""End-to-end benchmarks behind ``fastsr bench``: the per-iteration GAN training time of
the EM-distance paper's models in eight variants (BN vs NonBN, eager vs fused, fp32 vs
bf16, compiled, the ``fastsr train`` defaults), inference time, FLOPs, and a
fused-vs-unfused parity check, on the CPU or a CUDA GPU (timed with
:func:`fastsr.perf.time_fn`). See :mod:`fastsr.bench.iteration`."""
from fastsr.bench.iteration import VARIANTS, run_benchmark

__all__ = ["VARIANTS", "run_benchmark"]
