"""The attentive GAN for SR (Ding et al., "Image super-resolution reconstruction method based
on attentive generative adversarial network", in Chinese; "the attentive GAN paper" below,
with its section, figure and equation numbers): an attention recurrent generator
with residual dense blocks and a ConvGRU, and a BEGAN auto-encoder discriminator."""
from __future__ import annotations

from typing import List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule, check_input_size, check_scale, init_icnr
from fastsr.models.registry import register_model
from fastsr.nn.conv import Conv2d

__all__ = ["ResidualDenseBlock", "ConvGRUCell", "AttentiveGenerator", "BEGANDiscriminator"]


class ResidualDenseBlock(nn.Module):
    """Residual dense block (RDB, Zhang et al. 2018 RDN; the attentive GAN paper sec. 2.2, Fig. 5b), no BN:
    ``num_layers`` conv3x3 + ReLU layers each seeing the concatenation of the block input
    and all previous outputs (``growth`` channels each), a 1x1 local feature fusion back to
    ``channels``, and the local residual ``x + fusion(...)``.

    Shape: (N, channels, H, W) -> same.
    """

    def __init__(self, channels: int = 64, growth: int = 32, num_layers: int = 4):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth, 3, padding=1) for i in range(num_layers)
        )
        self.fusion = nn.Conv2d(channels + num_layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.relu(conv(torch.cat(feats, 1))))
        return x + self.fusion(torch.cat(feats, 1))


class ConvGRUCell(nn.Module):
    """Convolutional GRU (the attentive GAN paper, eqs. 3-6), ``*`` a 3x3 convolution:
    z = sigma(W_z * [h, x]), r = sigma(W_r * [h, x]), h~ = tanh(W * [r . h, x]),
    h' = (1 - z) . h + z . h~.

    Shape: x (N, C_in, H, W), h (N, C_h, H, W) -> h' (N, C_h, H, W).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.conv_gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel_size, padding=pad)
        self.conv_cand = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.conv_gates(torch.cat([h, x], 1))).chunk(2, 1)
        cand = torch.tanh(self.conv_cand(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * cand


@register_model()
class AttentiveGenerator(FusedModule):
    """Attention recurrent generator (the attentive GAN paper, sec. 2.1, Figs. 3-4, eqs. 1-9).

    * Shallow features (eqs. 1-2): F_-1 = conv3x3(I_LR), F_0 = conv3x3(F_-1).
    * Attention recurrent network (eq. 7), ``num_steps`` steps with shared weights. Step t
      takes F_{t-1} concatenated with the attention map A_{t-1} (A_0 = 0.5 everywhere, as in
      the attentive-recurrent network of Qian et al. 2018 the paper builds on), merges them
      with a conv3x3 (C+1 -> C), runs 3 RDBs, then a ConvGRU whose state is F_{t-1}
      (F_t = h_t), and a conv3x3 C -> 1 + sigmoid gives A_t in [0, 1].
    * Non-linear mapping (eq. 8): 8 x [conv3x3 + ReLU] on [F_n, A_n] (C+1 channels in),
      plus a skip from F_n.
    * Upsampling (eq. 9): "one conv layer": conv3x3 C -> out*scale^2 then PixelShuffle(scale)
      (ESPCN's sub-pixel output layer).

    The paper gives no widths; C = 64 and RDBs of 4 layers with growth 32 are choices.

    Args:
        scale: 2, 3 or 4 (paper: 4).
        channels: C (64).
        num_steps: recurrent steps n (4).
        num_rdb: RDBs per step (3, paper).
        rdb_layers, growth: RDB depth and growth rate.
        num_mapping: conv+ReLU layers of the mapping network (8, paper).
        in_channels, out_channels: image channels (3).
        fused: accepted for the uniform generator interface and propagated to submodules.
        icnr: ICNR-initialise the sub-pixel convolutions (:func:`fastsr.models.init_icnr`;
            Aitken et al. 2017): no checkerboard at initialisation. Same state_dict.
            This architecture uses only ReLU / sigmoid / tanh and no fastsr fused layer
            applies, so it currently changes nothing.

    Shape:
        LR (N, 3, H, W) in [0, 1] -> SR (N, 3, scale*H, scale*W), linear output; with
        ``return_attention=True`` also the list of the n attention maps (N, 1, H, W) in [0, 1].

    Parameters (defaults, x4): 1,046,385.

    Raises:
        ValueError: unsupported ``scale``, ``num_steps < 1``.
    """

    def __init__(
        self,
        scale: int = 4,
        channels: int = 64,
        num_steps: int = 4,
        num_rdb: int = 3,
        rdb_layers: int = 4,
        growth: int = 32,
        num_mapping: int = 8,
        in_channels: int = 3,
        out_channels: int = 3,
        fused: bool = True,
        icnr: bool = False,
    ):
        super().__init__()
        check_scale("AttentiveGenerator", scale, (2, 3, 4))
        if num_steps < 1:
            raise ValueError(f"AttentiveGenerator: num_steps must be >= 1, got {num_steps}")
        if num_mapping < 1:
            raise ValueError(f"AttentiveGenerator: num_mapping must be >= 1, got {num_mapping}")
        self.scale = scale
        self.num_steps = num_steps
        self.sfe1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.sfe2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.att_merge = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.att_rdbs = nn.Sequential(*[ResidualDenseBlock(channels, growth, rdb_layers) for _ in range(num_rdb)])
        self.att_gru = ConvGRUCell(channels, channels)
        self.att_conv = nn.Conv2d(channels, 1, 3, padding=1)
        mapping = [nn.Conv2d(channels + 1, channels, 3, padding=1), nn.ReLU()]
        for _ in range(num_mapping - 1):
            mapping += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.mapping = nn.Sequential(*mapping)
        self.conv_up = nn.Conv2d(channels, out_channels * scale * scale, 3, padding=1)
        self.fused = fused
        if icnr:
            init_icnr(self)

    def subpixel_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``[(conv_up, scale)]`` (for :func:`fastsr.models.init_icnr`)."""
        return [(self.conv_up, self.scale)]

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        feat = self.sfe2(self.sfe1(x))
        att = feat.new_full((feat.shape[0], 1, feat.shape[2], feat.shape[3]), 0.5)
        maps = []
        for _ in range(self.num_steps):
            inp = self.att_rdbs(self.att_merge(torch.cat([feat, att], 1)))
            feat = self.att_gru(inp, feat)
            att = torch.sigmoid(self.att_conv(feat))
            maps.append(att)
        feat = feat + self.mapping(torch.cat([feat, att], 1))
        out = F.pixel_shuffle(self.conv_up(feat), self.scale)
        return (out, maps) if return_attention else out


@register_model()
class BEGANDiscriminator(FusedModule):
    """BEGAN auto-encoder discriminator (Berthelot et al. 2017; the attentive GAN paper sec. 2.3, eqs. 10-15).

    The paper describes "7 conv layers, flatten, FC, sigmoid" but trains it with the BEGAN
    balance, whose L(v) = |v - D(v)| needs D(v) to be an image; following the cited BEGAN,
    this is the encoder of 7 convs + flatten + FC to an embedding, and a mirrored decoder
    (FC, convs, nearest x2 upsampling) back to an image. No sigmoid: the output is the
    reconstruction, and the loss is its L1 error.

    Encoder: conv3x3 3 -> n + ELU; 3 x [conv3x3 k*n -> k*n + ELU, conv3x3 s2 k*n -> (k+1)*n
    + ELU] (k = 1, 2, 3): 7 convs, spatial size / 8; FC -> ``hidden``.
    Decoder: FC ``hidden`` -> n * (s/8)^2; 3 x [conv3x3 n + ELU, conv3x3 n + ELU, nearest
    x2]; conv3x3 n -> 3.

    Args:
        input_size: H = W of the input (96), divisible by 8.
        in_channels: image channels (3).
        num_feat: n (64).
        hidden: embedding size (64, BEGAN's h).
        fused: convolutions as :class:`fastsr.nn.Conv2d` (im2col + GEMM for the tiny
            late-layer outputs on CPU, where that is faster; same parameters, state_dict and
            values up to float rounding) or plain ``F.conv2d`` (False).

    Shape:
        (N, 3, input_size, input_size) in [0, 1] -> reconstruction of the same shape (linear).

    Parameters (defaults): 4,437,827.

    Raises:
        ValueError: input_size not a multiple of 8, or an input of another shape.
    """

    def __init__(self, input_size: int = 96, in_channels: int = 3, num_feat: int = 64, hidden: int = 64,
                 fused: bool = True):
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8 or input_size % 8:
            raise ValueError(f"BEGANDiscriminator: input_size must be a multiple of 8, got {input_size!r}")
        self.input_size = input_size
        self.in_channels = in_channels
        self.num_feat = num_feat
        self.base = input_size // 8
        n = num_feat
        enc = [Conv2d(in_channels, n, 3, padding=1), nn.ELU()]
        for k in (1, 2, 3):
            enc += [Conv2d(k * n, k * n, 3, padding=1), nn.ELU(),
                    Conv2d(k * n, (k + 1) * n, 3, stride=2, padding=1), nn.ELU()]
        self.encoder = nn.Sequential(*enc)
        self.fc_enc = nn.Linear(4 * n * self.base ** 2, hidden)
        self.fc_dec = nn.Linear(hidden, n * self.base ** 2)
        dec = []
        for _ in range(3):
            dec += [Conv2d(n, n, 3, padding=1), nn.ELU(), Conv2d(n, n, 3, padding=1), nn.ELU(),
                    nn.Upsample(scale_factor=2, mode="nearest")]
        dec.append(Conv2d(n, in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("BEGANDiscriminator", x, self.input_size, self.in_channels)
        h = self.fc_enc(self.encoder(x).flatten(1))
        d = self.fc_dec(h).view(x.shape[0], self.num_feat, self.base, self.base)
        return self.decoder(d)
