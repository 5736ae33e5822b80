import os

import torch

# The Triton kernels run on CPU tensors only under the interpreter, which must be switched
# on before any @triton.jit decorator runs (i.e. before fastsr.kernels is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
