"""ESRGAN (Wang et al. 2018): the RRDBNet generator and the VGG-style discriminator, with
BasicSR's parameter names so BasicSR / Real-ESRGAN checkpoints load unchanged."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.models._utils import FusedModule, check_input_size, check_scale
from fastsr.models.registry import register_model
from fastsr.nn.conv import Conv2d, conv_act, conv_residual

__all__ = ["ResidualDenseBlock5C", "RRDB", "RRDBNet", "VGGStyleDiscriminator"]


class ResidualDenseBlock5C(nn.Module):
    """ESRGAN's residual dense block: five 3x3 convs with dense connections (growth
    ``num_grow_ch``), LeakyReLU(0.2) after the first four, output ``x + 0.2 * conv5(...)``.

    With ``fused=True`` conv5 runs without bias and ``x + 0.2 * (conv + bias)`` is one
    :func:`fastsr.ops.bias_residual` kernel. Keys ``conv1`` ... ``conv5`` as in BasicSR.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fused
        x1 = conv_act(x, self.conv1, "leaky_relu", 0.2, f)
        x2 = conv_act(torch.cat((x, x1), 1), self.conv2, "leaky_relu", 0.2, f)
        x3 = conv_act(torch.cat((x, x1, x2), 1), self.conv3, "leaky_relu", 0.2, f)
        x4 = conv_act(torch.cat((x, x1, x2, x3), 1), self.conv4, "leaky_relu", 0.2, f)
        return conv_residual(torch.cat((x, x1, x2, x3, x4), 1), self.conv5, x, 0.2, self.fused)


class RRDB(nn.Module):
    """Residual-in-residual dense block: ``x + 0.2 * RDB3(RDB2(RDB1(x)))`` (ESRGAN Fig. 4).
    Keys ``rdb1``, ``rdb2``, ``rdb3`` as in BasicSR."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, fused: bool = True):
        super().__init__()
        self.rdb1 = ResidualDenseBlock5C(num_feat, num_grow_ch, fused)
        self.rdb2 = ResidualDenseBlock5C(num_feat, num_grow_ch, fused)
        self.rdb3 = ResidualDenseBlock5C(num_feat, num_grow_ch, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


@register_model()
@register_model("esrgan")
class RRDBNet(FusedModule):
    """The ESRGAN generator (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution GANs",
    sec. 3.1, Fig. 3-4), layer for layer and key for key BasicSR's ``RRDBNet``.

    conv_first 3x3 -> ``num_block`` RRDBs (3 residual dense blocks of 5 convs, growth 32,
    LeakyReLU 0.2, residual scaling 0.2, no BN) -> conv_body + global skip -> two
    [nearest x2, conv3x3, LeakyReLU 0.2] (conv_up1, conv_up2) -> conv_hr + LeakyReLU ->
    conv_last. As in BasicSR/Real-ESRGAN, ``scale=2`` / ``scale=1`` pixel-unshuffle the input
    by 2 / 4 first (``conv_first`` then has 4x / 16x input channels), so the x4 body serves
    all three scales and Real-ESRGAN x2 checkpoints load.

    Args:
        scale: 1, 2 or 4. Other scales raise (the x4 tail has two fixed x2 stages).
        num_in_ch, num_out_ch: image channels (3).
        num_feat: feature channels (64).
        num_block: RRDBs (23 in ESRGAN).
        num_grow_ch: growth channels (32).
        fused: each RDB's ``x + 0.2 * conv5(...)`` as one fused
            :func:`fastsr.ops.bias_residual`; the state_dict is identical either way.

    Shape:
        LR (N, 3, H, W) in [0, 1] -> SR (N, 3, scale*H, scale*W) in about [0, 1] (linear
        output, clamp for display). For scale 2 (1), H and W must be even (multiples of 4).

    Parameters (x4, 23 blocks): 16,697,987.

    Loading published weights: ``fastsr.models.load_state_dict(model, "RealESRGAN_x4plus.pth")``
    takes ``params_ema`` (else ``params``) and raises, listing keys, on any mismatch.

    Raises:
        ValueError: unsupported ``scale``; H or W not divisible by the unshuffle factor.
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        fused: bool = True,
    ):
        super().__init__()
        check_scale("RRDBNet", scale, (1, 2, 4))
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle ** 2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch, fused) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            r = self.unshuffle
            if x.shape[-1] % r or x.shape[-2] % r:
                raise ValueError(f"RRDBNet: scale={self.scale} needs H and W divisible by {r}, "
                                 f"got {tuple(x.shape[-2:])}")
            x = F.pixel_unshuffle(x, r)
        feat = self.conv_first(x)
        feat = conv_residual(self.body(feat), self.conv_body, feat, 1.0, self.fused)
        f = self.fused
        feat = conv_act(F.interpolate(feat, scale_factor=2, mode="nearest"), self.conv_up1, "leaky_relu", 0.2, f)
        feat = conv_act(F.interpolate(feat, scale_factor=2, mode="nearest"), self.conv_up2, "leaky_relu", 0.2, f)
        return self.conv_last(conv_act(feat, self.conv_hr, "leaky_relu", 0.2, f))


@register_model()
@register_model("esrgan_d")
class VGGStyleDiscriminator(FusedModule):
    """ESRGAN's VGG-style discriminator (BasicSR ``VGGStyleDiscriminator``, same keys).

    conv0_0 3x3 + LReLU; conv0_1 4x4 s2 + BN + LReLU; then for i = 1..4: conv{i}_0 3x3 and
    conv{i}_1 4x4 s2, each + BN + LReLU(0.2), widths 128, 256, 512, 512 (x num_feat/64);
    for ``input_size=256`` one more such pair (conv5_*); linear1 (512*4*4 -> 100) + LReLU,
    linear2 (100 -> 1). Outputs the raw score C(x): the relativistic average loss
    D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)]) (ESRGAN eq. 1) applies the sigmoid.

    Args:
        input_size: 128 (ESRGAN's HR crops) or 256.
        num_in_ch: image channels (3).
        num_feat: base width (64).
        fused: convolutions as :class:`fastsr.nn.Conv2d` (im2col + GEMM for the tiny
            late-layer outputs on CPU, where that is faster; same parameters, state_dict and
            values up to float rounding) or plain ``F.conv2d`` (False).

    Shape:
        (N, 3, input_size, input_size) in [0, 1] -> (N, 1) scores (logits).

    Parameters (128, 64): 14,499,401.

    Raises:
        ValueError: ``input_size`` not 128 or 256, or an input of another shape.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128, fused: bool = True):
        super().__init__()
        if input_size not in (128, 256):
            raise ValueError(f"VGGStyleDiscriminator: input_size must be 128 or 256, got {input_size!r}")
        self.input_size = input_size
        self.num_in_ch = num_in_ch
        nf = num_feat
        self.conv0_0 = Conv2d(num_in_ch, nf, 3, 1, 1, bias=True)
        self.conv0_1 = Conv2d(nf, nf, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(nf, affine=True)
        widths = [(nf, 2 * nf), (2 * nf, 4 * nf), (4 * nf, 8 * nf), (8 * nf, 8 * nf)]
        if input_size == 256:
            widths.append((8 * nf, 8 * nf))
        self.num_stages = len(widths)
        for i, (cin, cout) in enumerate(widths, start=1):
            setattr(self, f"conv{i}_0", Conv2d(cin, cout, 3, 1, 1, bias=False))
            setattr(self, f"bn{i}_0", nn.BatchNorm2d(cout, affine=True))
            setattr(self, f"conv{i}_1", Conv2d(cout, cout, 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(cout, affine=True))
        self.linear1 = nn.Linear(8 * nf * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("VGGStyleDiscriminator", x, self.input_size, self.num_in_ch)
        feat = F.leaky_relu(self.conv0_0(x), 0.2)
        feat = F.leaky_relu(self.bn0_1(self.conv0_1(feat)), 0.2)
        for i in range(1, self.num_stages + 1):
            feat = F.leaky_relu(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feat)), 0.2)
            feat = F.leaky_relu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)), 0.2)
        feat = F.leaky_relu(self.linear1(feat.flatten(1)), 0.2)
        return self.linear2(feat)
