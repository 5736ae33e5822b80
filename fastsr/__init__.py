"""fastsr: fused CPU (C++) and GPU (Triton) kernels for GAN image super-resolution.

Subpackages: ``fastsr.ops`` (the fused functional ops, ``torch.ops.fastsr.*``),
``fastsr.nn`` (drop-in modules built on them), ``fastsr.models`` (the papers'
generators and discriminators), ``fastsr.losses`` (pixel, SSIM, perceptual,
texture and adversarial losses), ``fastsr.metrics`` (PSNR/SSIM with the papers' conventions),
``fastsr.data`` (datasets, MATLAB bicubic, sample photos), ``fastsr.train`` (import explicitly).
:func:`export_onnx` writes a model or checkpoint as ONNX with dynamic batch and image size;
:func:`optimize_for_inference` prepares a generator for fast inference on its device;
:func:`upscale_file` / :func:`upscale_files` upscale image files as ``fastsr upscale`` does
(:mod:`fastsr.upscale`).
"""
import torch  # noqa: F401  (torch must be imported before the extension loads)

from fastsr import _extension  # noqa: F401  (raises a helpful ImportError when not built)
from fastsr import data, losses, metrics, models, nn, ops
from fastsr.export import export_onnx
from fastsr.inference import InferenceModel, SelfEnsemble, optimize_for_inference
from fastsr.upscale import upscale_file, upscale_files

__all__ = ["data", "losses", "metrics", "models", "nn", "ops", "export_onnx", "InferenceModel", "SelfEnsemble", "optimize_for_inference",
           "upscale_file", "upscale_files"]

# The Triton kernels serve CUDA for the op families fastsr._C has no compiled CUDA kernel for.
if ops._common.TRITON_CUDA and not ops._common.COMPILED_CUDA.issuperset(ops._common.FAMILIES):
    from fastsr import kernels

    kernels.register()
