"""Image discriminators / critics with a fully connected head: SRGAN's and the EM-distance
GAN's WGAN critic. They return logits (SRGAN) or unbounded critic scores (WGAN), never
probabilities: the sigmoid of the papers belongs to the loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule, check_input_size
from fastsr.models.registry import register_model
from fastsr.nn.conv import Conv2d

__all__ = ["SRGANDiscriminator", "WGANCritic", "conv_out_size"]


def conv_out_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Spatial output size of a convolution (floor mode)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def _check_size(name: str, input_size: int, minimum: int) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < minimum:
        raise ValueError(f"{name}: input_size must be an int >= {minimum}, got {input_size!r}")


@register_model()
@register_model("srgan_d")
class SRGANDiscriminator(FusedModule):
    """The SRGAN discriminator (Ledig et al. 2017, Fig. 4 / sec. 2.2).

    conv3x3 64 + LeakyReLU(0.2); seven conv3x3-BN-LeakyReLU(0.2) with 64 s2, 128, 128 s2,
    256, 256 s2, 512, 512 s2; Dense(1024), LeakyReLU(0.2), Dense(1). The paper ends with a
    sigmoid; this module returns the **logit** (use ``BCEWithLogits`` / fastsr's adversarial
    loss, which applies the sigmoid stably). Convs followed by BN have no bias (BN's shift
    makes it redundant).

    Args:
        input_size: H = W of the input (96, the paper's HR crops); the first Dense layer has
            512 * ceil(input_size / 16)^2 inputs.
        in_channels: image channels (3).
        num_feat: width of the first conv (64).
        fused: convolutions as :class:`fastsr.nn.Conv2d` (im2col + GEMM for the tiny
            late-layer outputs on CPU, where that is faster; same parameters, state_dict and
            values up to float rounding) or plain ``F.conv2d`` (False).

    Shape:
        HR or SR image (N, 3, input_size, input_size), values in [0, 1] (or the range used
        in training) -> (N, 1) logits.

    Parameters (input_size 96): 23,563,649.

    Raises:
        ValueError: an input of another shape (the message names ``input_size``).
    """

    def __init__(self, input_size: int = 96, in_channels: int = 3, num_feat: int = 64, fused: bool = True):
        super().__init__()
        _check_size("SRGANDiscriminator", input_size, 2)
        self.input_size = input_size
        self.in_channels = in_channels
        self.conv_first = Conv2d(in_channels, num_feat, 3, 1, 1)
        spec = [(num_feat, 2), (2 * num_feat, 1), (2 * num_feat, 2), (4 * num_feat, 1),
                (4 * num_feat, 2), (8 * num_feat, 1), (8 * num_feat, 2)]
        layers, c_in, size = [], num_feat, input_size
        for c, s in spec:
            layers += [Conv2d(c_in, c, 3, s, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            c_in, size = c, conv_out_size(size, 3, s, 1)
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c_in * size * size, 1024)
        self.fc2 = nn.Linear(1024, 1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("SRGANDiscriminator", x, self.input_size, self.in_channels)
        feat = self.features(F.leaky_relu(self.conv_first(x), 0.2)).flatten(1)
        return self.fc2(F.leaky_relu(self.fc1(feat), 0.2))


# (kernel, out channels, stride) of Conv_D1 ... Conv_D11, Zhang et al. 2019, Table 2.
WGAN_CRITIC_TABLE = (
    (4, 64, 2), (4, 128, 2), (4, 256, 2), (4, 512, 2), (4, 1024, 2), (4, 2048, 2),
    (1, 1024, 1), (1, 512, 1), (1, 128, 1), (3, 128, 1), (3, 512, 1),
)


@register_model()
@register_model("nonbn_gan_d")
class WGANCritic(FusedModule):
    """The critic of the EM-distance GAN (Zhang et al. 2019, sec. 1.3, Fig. 6, Table 2).

    Eleven convolutions Conv_D1 ... Conv_D11 (Table 2: 4x4 64/128/256/512/1024/2048 with
    stride 2, then 1x1 1024, 1x1 512, 1x1 128, 3x3 128, 3x3 512 with stride 1; "same"
    padding: 1 for 4x4 and 3x3, 0 for 1x1), LeakyReLU(0.2) after every conv, BatchNorm after
    every conv except the first, then one fully connected layer to a scalar. No sigmoid: the
    output is the critic value C(x) of the Wasserstein loss (eq. 8 l_Gen = -E[C(G(LR))],
    eq. 9 l_D = E[C(G(LR))] - E[C(HR)]); a Lipschitz constraint (weight clipping or a
    gradient penalty) is the training loop's job. Note that a per-sample gradient penalty
    (WGAN-GP) is ill-defined with batch-statistics BN; pass ``bn=False`` for WGAN-GP.

    The layer widths match the SRGAN discriminator of TensorLayer's SRGAN code, which
    also adds the output of Conv_D8 to that of Conv_D11 (a residual branch); the paper's
    text does not mention it, so it is off by default (``skip=True`` turns it on).

    Args:
        input_size: H = W of the input (96); after six stride-2 convs the FC layer sees
            512 * s^2 features, s = 1 for 96, 2 for 128.
        in_channels: image channels (3).
        bn: BatchNorm after Conv_D2 ... Conv_D11 (paper: True). Convs followed by BN have
            no bias.
        skip: add Conv_D8's output to Conv_D11's (see above).
        num_feat: width of Conv_D1 (64 in Table 2); every width scales with it
            (``c * num_feat / 64``, exact since every Table 2 width is a multiple of 64), e.g. for small test models.
        fused: convolutions as :class:`fastsr.nn.Conv2d` (im2col + GEMM for the tiny
            late-layer outputs on CPU, where that is faster; same parameters, state_dict and
            values up to float rounding) or plain ``F.conv2d`` (False).

    Shape:
        (N, 3, input_size, input_size) in [0, 1] -> (N, 1) unbounded critic scores.

    Parameters (input_size 96, bn=True): 48,136,001.

    Raises:
        ValueError: an input of another shape; input_size < 64.
    """

    def __init__(self, input_size: int = 96, in_channels: int = 3, bn: bool = True, skip: bool = False,
                 num_feat: int = 64, fused: bool = True):
        super().__init__()
        _check_size("WGANCritic", input_size, 64)
        if num_feat < 1:
            raise ValueError(f"WGANCritic: num_feat must be >= 1, got {num_feat}")
        self.input_size = input_size
        self.in_channels = in_channels
        self.skip = skip
        convs, norms = [], []
        c_in, size = in_channels, input_size
        for i, (k, c, s) in enumerate(WGAN_CRITIC_TABLE):
            c = c * num_feat // 64
            use_bn = bn and i > 0
            pad = 0 if k == 1 else 1
            convs.append(Conv2d(c_in, c, k, s, pad, bias=not use_bn))
            norms.append(nn.BatchNorm2d(c) if use_bn else nn.Identity())
            c_in, size = c, conv_out_size(size, k, s, pad)
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.fc = nn.Linear(c_in * size * size, 1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("WGANCritic", x, self.input_size, self.in_channels)
        h = x
        d8 = None
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = F.leaky_relu(norm(conv(h)), 0.2)
            if i == 7:
                d8 = h
        if self.skip:
            h = h + d8
        return self.fc(h.flatten(1))
