"""Drop-in modules built on fastsr.ops. Each takes ``fused=True|False`` and has the same
state_dict either way."""
from fastsr.nn.loss import L1Loss
from fastsr.nn.residual import ResidualBlockNoBN
from fastsr.nn.upsample import Upsampler, UpsampleStage

__all__ = ["L1Loss", "ResidualBlockNoBN", "Upsampler", "UpsampleStage"]
