"""Drop-in modules built on fastsr.ops. Each takes ``fused=True|False`` and has the same
state_dict either way."""
from fastsr.nn.residual import ResidualBlockBN, ResidualBlockNoBN
from fastsr.nn.upsample import Upsampler, UpsampleStage

__all__ = ["ResidualBlockBN", "ResidualBlockNoBN", "Upsampler", "UpsampleStage"]
