"""The sharpness (clarity enhancement) GAN: a same-resolution NonBN residual generator and
its discriminator ("Image sharpness improvement method based on generative adversarial
network", in Chinese; the section and figure numbers below are that paper's)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule, check_input_size, check_scale
from fastsr.models.discriminators import conv_out_size
from fastsr.models.registry import register_model
from fastsr.nn import ResidualBlockNoBN
from fastsr.nn.conv import Conv2d, conv_prelu, conv_residual

__all__ = ["SharpnessGenerator", "SharpnessDiscriminator"]


@register_model()
class SharpnessGenerator(FusedModule):
    """Generator of the sharpness GAN (sec. 2.2-2.3, Fig. 2 / Fig. 3b): same resolution in
    and out, SAME padding, no pooling.

    conv3x3 3 -> 64 + PReLU -> 5 NonBN residual blocks [conv3x3, PReLU, conv3x3, + skip]
    -> conv3x3 64 + skip from the head -> conv3x3 64 -> 3, + the input image
    (``image_skip``). The paper's Fig. 2 (its layer sizes) is not in the extracted text;
    the text fixes 5 BN-free PReLU residual blocks "nested with skip connections" that
    carry image detail to the top, which the feature skip and the image skip implement;
    kernel sizes and widths follow SRResNet's 3x3 / 64.

    Args:
        scale: must be 1 (clarity enhancement keeps the resolution); any other value raises.
        num_blocks: residual blocks (5).
        channels: feature channels (64).
        image_skip: add the input to the output (the network predicts a sharpening residual).
        in_channels: image channels (3).
        fused: fused epilogues (bias_prelu, bias_residual); same state_dict either way.

    Shape:
        blurred (N, C, H, W) -> sharpened (N, C, H, W), float32/bfloat16, values in the
        range of the data ([0, 1] in fastsr); linear output.

    Parameters (defaults): 410,115.

    Raises:
        ValueError: ``scale != 1``.
    """

    def __init__(
        self,
        scale: int = 1,
        num_blocks: int = 5,
        channels: int = 64,
        image_skip: bool = True,
        in_channels: int = 3,
        fused: bool = True,
    ):
        super().__init__()
        check_scale("SharpnessGenerator", scale, (1,))
        self.scale = scale
        self.image_skip = image_skip
        self.conv_first = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.prelu_first = nn.PReLU(channels)
        self.body = nn.Sequential(*[ResidualBlockNoBN(channels, fused=fused) for _ in range(num_blocks)])
        self.conv_body = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, in_channels, 3, padding=1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = conv_prelu(x, self.conv_first, self.prelu_first, self.fused)
        feat = conv_residual(self.body(feat), self.conv_body, feat, 1.0, self.fused)
        if self.image_skip:
            return conv_residual(feat, self.conv_last, x, 1.0, self.fused)
        return self.conv_last(feat)


@register_model()
class SharpnessDiscriminator(FusedModule):
    """Discriminator of the sharpness GAN (sec. 2.2, Fig. 1): 8 conv-LeakyReLU(0.2)-BN
    layers, then two fully connected layers (Dense 1024, LeakyReLU 0.2, Dense 1).

    The paper applies a sigmoid to the last FC output; this module returns the **logits**
    (no sigmoid) and the loss applies it (``BCEWithLogits`` = -log D(G(x)) stably). Channel
    widths and strides are not in the extracted text (Fig. 1 is missing); they follow the
    SRGAN discriminator the paper builds on: 3x3 convs 64, 64 s2, 128, 128 s2, 256, 256 s2,
    512, 512 s2. The layer order is the paper's conv -> activation -> BN.

    Args:
        input_size: H = W of the input (default 24, the paper's training crops); the FC
            layer is sized for it.
        in_channels: image channels (3).
        num_feat: width of the first conv (64).
        fused: convolutions as :class:`fastsr.nn.Conv2d` (im2col + GEMM for the tiny
            late-layer outputs on CPU, where that is faster; same parameters, state_dict and
            values up to float rounding) or plain ``F.conv2d`` (False).

    Shape:
        (N, 3, input_size, input_size) image in [0, 1] -> (N, 1) logits.

    Parameters (input_size 24): 6,788,417 (of which 2,098,176 in the first FC layer).

    Raises:
        ValueError: input not of shape (N, in_channels, input_size, input_size).
    """

    def __init__(self, input_size: int = 24, in_channels: int = 3, num_feat: int = 64, fused: bool = True):
        super().__init__()
        if input_size < 2:
            raise ValueError(f"SharpnessDiscriminator: input_size must be >= 2, got {input_size}")
        self.input_size = input_size
        self.in_channels = in_channels
        widths = [num_feat, num_feat, 2 * num_feat, 2 * num_feat, 4 * num_feat, 4 * num_feat, 8 * num_feat, 8 * num_feat]
        layers = []
        c_in, size = in_channels, input_size
        for i, c in enumerate(widths):
            stride = 2 if i % 2 else 1
            layers += [Conv2d(c_in, c, 3, stride, 1), nn.LeakyReLU(0.2), nn.BatchNorm2d(c)]
            c_in, size = c, conv_out_size(size, 3, stride, 1)
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c_in * size * size, 1024)
        self.fc2 = nn.Linear(1024, 1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("SharpnessDiscriminator", x, self.input_size, self.in_channels)
        feat = self.features(x).flatten(1)
        return self.fc2(F.leaky_relu(self.fc1(feat), 0.2))
