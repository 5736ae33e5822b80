import os

import torch

# The Triton kernels run on CPU tensors only under the interpreter, which must be switched
# on before any @triton.jit decorator runs (i.e. before fastsr.kernels is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The torch.compile baselines specialise one eager function per (shape, dtype, layout, pass):
# more than Dynamo's default recompile limit of 8 per code object, all of them legitimate.
torch._dynamo.config.recompile_limit = 64

# Compare kernels, not page faults: without this, whether a 2-4 MB output is a fresh mmap
# (page-faulted on every call, +0.3 ms here) depends on glibc's dynamic thresholds, i.e. on
# whatever ran earlier in the process. Applied once for every implementation alike.
from fastsr.perf import tune_allocator  # noqa: E402

tune_allocator()
