"""Drop-in modules built on fastsr.ops: every module over a fused op (residual blocks, the
sub-pixel upsampler, the L1/Charbonnier and SSIM losses) and the "conv + fused epilogue"
building block the models use (:func:`conv_prelu`, :func:`conv_residual`), and
:class:`Conv2d`, ``nn.Conv2d`` with a faster CPU algorithm for tiny outputs. Each module with
a fused path takes ``fused=True|False`` -- ``False`` runs the plain-PyTorch reference, same
values -- and has the same state_dict either way (``ResidualBlockBN`` has no fused path and
is plain PyTorch)."""
from fastsr.nn.conv import Conv2d, conv2d, conv_prelu, conv_residual
from fastsr.nn.loss import L1Loss
from fastsr.nn.residual import ResidualBlockBN, ResidualBlockNoBN
from fastsr.nn.ssim import SSIMLoss
from fastsr.nn.upsample import Upsampler, UpsampleStage

__all__ = ["Conv2d", "conv2d", "conv_prelu", "conv_residual", "L1Loss", "ResidualBlockBN", "ResidualBlockNoBN", "SSIMLoss",
           "Upsampler", "UpsampleStage"]
