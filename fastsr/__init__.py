"""fastsr: fused CPU (C++) and GPU (Triton) kernels for GAN image super-resolution.

Subpackages: ``fastsr.ops`` (the fused functional ops, ``torch.ops.fastsr.*``),
``fastsr.nn`` (drop-in modules built on them), ``fastsr.losses`` (pixel, SSIM, perceptual,
texture and adversarial losses), ``fastsr.metrics`` (PSNR/SSIM with the papers' conventions).
"""
import torch  # noqa: F401  (torch must be imported before the extension loads)

from fastsr import _extension  # noqa: F401  (raises a helpful ImportError when not built)
from fastsr import nn, ops
from fastsr import losses, metrics

__version__ = "0.1.0"
__all__ = ["losses", "metrics", "nn", "ops", "__version__"]
