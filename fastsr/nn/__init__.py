"""Drop-in modules built on fastsr.ops. Each module with a fused path takes
``fused=True|False`` and has the same state_dict either way (``ResidualBlockBN`` has no
fused path and is plain PyTorch)."""
from fastsr.nn.loss import L1Loss
from fastsr.nn.residual import ResidualBlockBN, ResidualBlockNoBN
from fastsr.nn.ssim import SSIMLoss
from fastsr.nn.upsample import Upsampler, UpsampleStage

__all__ = ["L1Loss", "ResidualBlockBN", "ResidualBlockNoBN", "SSIMLoss", "Upsampler", "UpsampleStage"]
