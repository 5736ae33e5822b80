"""The fused functional ops of fastsr. Each is also a registered custom op,
``torch.ops.fastsr.<name>``, with a fake implementation and autograd, so it works under
``torch.compile(fullgraph=True)``. Every function takes ``impl="auto"|"reference"``.
:func:`winograd_conv3x3` is the inference-only CPU convolution + epilogue (no autograd);
:func:`conv3x3_winograd` the differentiable CPU convolution that training uses.
"""
from fastsr.ops.bias_prelu import bias_prelu, bias_prelu_reference
from fastsr.ops.bias_residual import bias_residual, bias_residual_reference
from fastsr.ops.l1_loss import l1_loss, l1_loss_reference
from fastsr.ops.pixel_shuffle_prelu import pixel_shuffle_prelu, pixel_shuffle_prelu_reference
from fastsr.ops.ssim import ssim, ssim_reference
from fastsr.ops.winograd import (conv3x3_winograd, conv3x3_winograd_supported, winograd_bf16_weight_grad, winograd_conv3x3,
                                 winograd_conv3x3_reference, winograd_supported, winograd_weight)

__all__ = [
    "conv3x3_winograd",
    "conv3x3_winograd_supported",
    "bias_prelu",
    "bias_prelu_reference",
    "bias_residual",
    "bias_residual_reference",
    "l1_loss",
    "l1_loss_reference",
    "pixel_shuffle_prelu",
    "pixel_shuffle_prelu_reference",
    "ssim",
    "ssim_reference",
    "winograd_bf16_weight_grad",
    "winograd_conv3x3",
    "winograd_conv3x3_reference",
    "winograd_supported",
    "winograd_weight",
]
