"""The NonBN residual generator of the EM-distance GAN (Zhang et al. 2019)."""
from __future__ import annotations

import torch

from fastsr.data.imresize import imresize_integer
from fastsr.models.registry import register_model
from fastsr.models.srresnet import SRResNetBase

__all__ = ["NonBNResNet"]


@register_model()
@register_model("nonbn_gan_g")
class NonBNResNet(SRResNetBase):
    """Generator of "GAN image super-resolution reconstruction model with improved residual
    block and adversarial loss" (Zhang et al. 2019): SRResNet
    with every BatchNorm removed (sec. 1.2, Fig. 4b / Fig. 5, Table 1).

    Layers (Table 1, stride 1 everywhere):
      * head: conv 3 -> 64 + PReLU. Table 1 does not list the head conv; it follows the
        SRResNet generator the paper modifies (9x9, ``first_kernel_size``).
      * 16 residual blocks [Conv_G1 3x3 64, PReLU, Conv_G2 3x3 64, + skip]
        (:class:`~fastsr.nn.ResidualBlockNoBN`).
      * Conv_G3 3x3 64 after the blocks, + the global skip from the head (as in SRResNet).
      * two sub-pixel stages [Conv_G4 3x3 256, PixelShuffle(2), PReLU] for x4 (c = 2, twice).
      * Conv_G5 1x1 64 -> 3.

    Args:
        scale: 2, 3, 4 (paper) or 8 (see :class:`SRResNet` for the stage layout).
        num_blocks: residual blocks (16).
        channels: feature channels (64).
        first_kernel_size: head conv size (9, from SRResNet).
        in_channels, out_channels: image channels (3).
        prelu_shared: one PReLU slope per layer instead of per channel.
        fused: fused epilogues (bias_prelu, bias_residual, pixel_shuffle_prelu); the
            state_dict is identical either way.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.
        back_projection: iterations of back-projection after the network (0: the paper's
            model). Each adds the bicubic upsampling of the LR residual,
            ``sr += up(lr - down(sr))`` (iterative back-projection, Irani & Peleg 1991,
            "Improving resolution by image registration"), with ``down`` the MATLAB bicubic
            degradation SR is trained to invert (:func:`fastsr.data.imresize_integer`), so
            that the SR image downscales back to its input: no global colour cast or
            brightness shift. No parameters (same state_dict); differentiable. Integer
            scales only; ONNX export needs a fixed input size.

    Shape:
        LR (N, 3, H, W) -> SR (N, 3, scale*H, scale*W), float32 or bfloat16, any layout;
        linear output in the range of the training targets (fastsr uses [0, 1]).

    Parameters (x4, 16 blocks, 64 channels, per-channel PReLU): 1,531,075.

    Initialise with ``fastsr.models.init_weights(model, "normal", 0.02)`` to follow the
    paper's N(0, 0.02) (sec. 3.1).

    Raises:
        ValueError: unsupported ``scale``.
    """

    def __init__(
        self,
        scale: int = 4,
        num_blocks: int = 16,
        channels: int = 64,
        first_kernel_size: int = 9,
        in_channels: int = 3,
        out_channels: int = 3,
        prelu_shared: bool = False,
        fused: bool = True,
        icnr: bool = False,
        back_projection: int = 0,
    ):
        super().__init__(scale=scale, num_blocks=num_blocks, channels=channels, bn=False,
                         first_kernel_size=first_kernel_size, last_kernel_size=1, in_channels=in_channels,
                         out_channels=out_channels, prelu_shared=prelu_shared, fused=fused, name="NonBNResNet",
                         icnr=icnr)
        if isinstance(back_projection, bool) or not isinstance(back_projection, int) or not 0 <= back_projection <= 8:
            raise ValueError(f"NonBNResNet: back_projection must be an integer 0..8, got {back_projection!r}")
        if back_projection and in_channels != out_channels:
            raise ValueError("NonBNResNet: back_projection needs in_channels == out_channels, got "
                             f"{in_channels} and {out_channels}")
        self.back_projection = back_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        for _ in range(self.back_projection):
            y = y + imresize_integer(x - imresize_integer(y, 1 / self.scale).to(x.dtype), self.scale).to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", back_projection={self.back_projection}" if self.back_projection else "")
