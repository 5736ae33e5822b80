"""Triton GPU kernels of fastsr, one file per op family (installed as ``fastsr.kernels``).

Each module exposes launchers with the signatures of the ``torch.ops.fastsr.*`` ops they
implement; ``fastsr/ops/<family>.py`` registers them as the CUDA kernels. Importing this
package needs Triton; ``import fastsr`` does not. On a CPU-only machine the kernels run
under ``TRITON_INTERPRET=1`` (set before import) for testing.
"""
