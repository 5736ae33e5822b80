"""Drop-in modules built on fastsr.ops. Each takes ``fused=True|False`` and has the same
state_dict either way."""
from fastsr.nn.residual import ResidualBlockNoBN
from fastsr.nn.ssim import SSIMLoss
from fastsr.nn.upsample import Upsampler, UpsampleStage

__all__ = ["ResidualBlockNoBN", "SSIMLoss", "Upsampler", "UpsampleStage"]
