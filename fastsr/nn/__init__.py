"""Drop-in modules built on fastsr.ops: every module over a fused op (residual blocks, the
sub-pixel upsampler, the L1/Charbonnier and SSIM losses) and the "conv + fused epilogue"
building block the models use (:func:`conv_prelu`, :func:`conv_residual`), and
:class:`Conv2d`, ``nn.Conv2d`` with a faster CPU algorithm for tiny outputs, and
:class:`PackedConv2d`, the CPU inference form of a convolution (prepacked weight, epilogue as
oneDNN post-op) that :func:`fastsr.optimize_for_inference` swaps in. Each module with
a fused path takes ``fused=True|False`` -- ``False`` runs the plain-PyTorch reference, same
values -- and has the same state_dict either way (``ResidualBlockBN`` has no fused path and
is plain PyTorch)."""
from fastsr.nn.conv import Conv2d, conv2d, conv_act, conv_prelu, conv_residual, use_winograd
from fastsr.nn.loss import L1Loss
from fastsr.nn.packed import PackedConv2d, pack_convolutions
from fastsr.nn.residual import ResidualBlockBN, ResidualBlockNoBN
from fastsr.nn.ssim import SSIMLoss
from fastsr.nn.upsample import Upsampler, UpsampleStage, icnr_

__all__ = ["Conv2d", "conv2d", "conv_act", "conv_prelu", "conv_residual", "L1Loss", "PackedConv2d",
           "pack_convolutions", "ResidualBlockBN", "ResidualBlockNoBN", "SSIMLoss",
           "Upsampler", "UpsampleStage", "icnr_", "use_winograd"]
