"""Real-CUGAN (bilibili's "Real Cascade U-Nets for Anime Image Super Resolution", the
``UpCunet2x`` / ``UpCunet3x`` / ``UpCunet4x`` / ``UpCunet2x_fast`` of its ``upcunet_v3.py``, and
the "pro" releases), key for key the upstream classes so the released ``.pth`` files load unchanged
and fastsr's state_dict loads back into them.

Two U-Nets in cascade on a reflect-padded input: ``unet1`` (one down / up level, ending in
a transposed convolution that upsamples x2, or x3 for the 3x model) and ``unet2`` (two
levels, squeeze-and-excitation after its U-Net blocks) whose output is added to the centre
crop of ``unet1``'s. The 4x model runs both at 64 features and ends with conv3x3 ->
PixelShuffle(2) plus the nearest-upsampled input; the fast x2 model is that x4 design on the
pixel-unshuffled (x1/2) input. Every convolution is "valid" (no
padding); the reflect padding of the input supplies the border. LeakyReLU(0.1)
throughout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.errors import DataError
from fastsr.models._utils import FusedModule, check_scale
from fastsr.models.registry import register_model
from fastsr.nn.conv import conv_act, conv_residual

__all__ = ["RealCUGAN"]

_SLOPE = 0.1
#: scale (or "fast") -> (reflect padding of the input, the padded size is a multiple of
#: this, unet1's final transposed convolution (kernel, stride, padding))
_GEOMETRY = {2: (18, 2, (4, 2, 3)), 3: (14, 4, (5, 3, 2)), 4: (19, 2, (4, 2, 3)), "fast": (38, 4, (4, 2, 3))}


def _crop(x: torch.Tensor, n: int) -> torch.Tensor:
    """``F.pad(x, (-n, -n, -n, -n))``: ``n`` pixels off every side."""
    return x[:, :, n:-n, n:-n]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(conv2(relu(conv1(mean_hw(x)))))`` with 1x1
    convolutions C -> C/8 -> C; the spatial mean is taken in float32."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1, 1, 0)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True, dtype=torch.float32).to(x.dtype)
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(s))))


class UNetConv(nn.Module):
    """Two valid conv3x3 + LeakyReLU(0.1) (``conv.0``, ``conv.2``), optionally then an
    :class:`SEBlock` (``seblock``); each conv + activation is one oneDNN primitive after
    :func:`fastsr.optimize_for_inference` when ``fused``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, se: bool, fused: bool = True):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, 1, 0), nn.LeakyReLU(_SLOPE),
                                  nn.Conv2d(mid_channels, out_channels, 3, 1, 0), nn.LeakyReLU(_SLOPE))
        self.seblock = SEBlock(out_channels) if se else None
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = conv_act(x, self.conv[0], "leaky_relu", _SLOPE, self.fused)
        z = conv_act(z, self.conv[2], "leaky_relu", _SLOPE, self.fused)
        return z if self.seblock is None else self.seblock(z)


class UNet1(nn.Module):
    """The first U-Net: one x2 down / up level, then a transposed convolution that
    upsamples by its stride (``deconv`` = (kernel, stride, padding))."""

    def __init__(self, in_channels: int, out_channels: int, deconv: tuple[int, int, int], fused: bool = True):
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2, 0)
        self.conv2 = UNetConv(64, 128, 64, se=True)
        self.conv2_up = nn.ConvTranspose2d(64, 64, 2, 2, 0)
        self.conv3 = nn.Conv2d(64, 64, 3, 1, 0)
        self.conv_bottom = nn.ConvTranspose2d(64, out_channels, *deconv)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fused
        x1 = self.conv1(x)
        x2 = self.conv2(conv_act(x1, self.conv1_down, "leaky_relu", _SLOPE, f))
        x2 = _lrelu(self.conv2_up(x2))
        x3 = conv_act(_crop(x1, 4) + x2, self.conv3, "leaky_relu", _SLOPE, f)
        return self.conv_bottom(x3)


class UNet2(nn.Module):
    """The second U-Net: two x2 levels with squeeze-and-excitation, same size out as in
    less 40 pixels; ``residual`` (when given) is added to the last convolution's output in
    its epilogue."""

    def __init__(self, in_channels: int, out_channels: int, fused: bool = True):
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2, 0)
        self.conv2 = UNetConv(64, 64, 128, se=True)
        self.conv2_down = nn.Conv2d(128, 128, 2, 2, 0)
        self.conv3 = UNetConv(128, 256, 128, se=True)
        self.conv3_up = nn.ConvTranspose2d(128, 128, 2, 2, 0)
        self.conv4 = UNetConv(128, 64, 64, se=True)
        self.conv4_up = nn.ConvTranspose2d(64, 64, 2, 2, 0)
        self.conv5 = nn.Conv2d(64, 64, 3, 1, 0)
        self.conv_bottom = nn.Conv2d(64, out_channels, 3, 1, 0)
        self.fused = fused

    def forward(self, x: torch.Tensor, alpha: float = 1.0, residual: torch.Tensor | None = None) -> torch.Tensor:
        f = self.fused
        x1 = self.conv1(x)
        x2 = self.conv2(conv_act(x1, self.conv1_down, "leaky_relu", _SLOPE, f))
        x3 = self.conv3(conv_act(x2, self.conv2_down, "leaky_relu", _SLOPE, f))
        x3 = _lrelu(self.conv3_up(x3))
        x4 = self.conv4(_crop(x2, 4) + x3) * alpha
        x4 = _lrelu(self.conv4_up(x4))
        x5 = conv_act(_crop(x1, 16) + x4, self.conv5, "leaky_relu", _SLOPE, f)
        if residual is None:
            return self.conv_bottom(x5)
        return conv_residual(x5, self.conv_bottom, residual, 1.0, f)


@register_model()
@register_model("realcugan")
class RealCUGAN(FusedModule):
    """Real-CUGAN ``UpCunet{2,3,4}x`` and ``UpCunet2x_fast`` (bilibili, "Real Cascade U-Nets
    for Anime Image Super Resolution", 2022; the ``upcunet_v3.py`` of its repository), for
    anime / illustration upscaling. The released models have fixed widths (32 to 256
    features); only the scale, the image channels and the "pro" / "fast" flags vary: RGB
    models have 1,284,598 (x2), 1,286,326 (x3), 1,406,812 (x4) and 1,409,404 (fast x2)
    parameters.

    ``forward``: the input (pro models: mapped to [0.15, 0.85] first) is reflect-padded by
    18 (x2), 14 (x3) or 19 (x4) pixels and up to a multiple of 2 (4 for x3); ``unet1``
    upsamples it x2 (x3) with its transposed convolution; ``unet2`` refines that and its
    output plus the 20-pixel centre crop of ``unet1``'s is the result (x2, x3). The x4 model
    adds conv3x3 64 -> 4C, a 1-pixel crop, PixelShuffle(2) and the nearest-upsampled input.
    ``fast`` (x2 only): padding 38 and up to a multiple of 4 (upstream pads to a multiple of 2
    and fails on the sizes that leaves odd after the unshuffle; the others give the same
    result), then pixel-unshuffle(2), then the x4 design. The output is cropped to ``scale``
    times the input size (pro: mapped back).

    With ``fused=True`` the ``unet1 + unet2`` sum is the bias + residual epilogue of
    ``unet2``'s last convolution (:func:`fastsr.ops.bias_residual`), and so is the x4 / fast
    model's "+ nearest-upsampled input" (PixelShuffle commutes with it: the input upsampled
    scale/2 times and repeated 4 times per channel is added before the shuffle); each
    conv + LeakyReLU(0.1) is one oneDNN primitive after :func:`fastsr.optimize_for_inference`.
    The state_dict is the same either way.

    Args:
        scale: 2, 3 or 4.
        in_channels, out_channels: image channels (3; equal, since the input is added to
            the output).
        pro: the "pro" release (a ``pro`` buffer in the state dict, as upstream; input
            mapped to [0.15, 0.85] and the output back).
        fast: ``UpCunet2x_fast`` (``scale`` 2, not pro).
        fused: see above.

    Shape:
        LR (N, C, H, W), float32 / bfloat16 (float16 on CUDA), in [0, 1] ->
        SR (N, C, scale*H, scale*W) in about [0, 1]. ``forward(x, alpha=1.0)``: ``alpha``
        scales ``unet2``'s deepest features as upstream (1 = as trained).

    Raises:
        ValueError: ``scale`` not 2, 3 or 4, ``in_channels != out_channels`` or not
            positive, ``fast`` with a scale other than 2 or with ``pro``; in ``forward``, an
            input that is not (N, C, H, W) with C = ``in_channels``.
        fastsr.errors.DataError (a ValueError): in ``forward``, an input too small for the
            reflect padding (at least 20 x 20 pixels for x2 / x4, 18 x 18 for x3, 42 x 42
            for fast x2, always suffice).
    """

    def __init__(self, scale: int = 2, in_channels: int = 3, out_channels: int = 3, pro: bool = False,
                 fast: bool = False, fused: bool = True):
        super().__init__()
        self.scale = check_scale("RealCUGAN", scale, (2, 3, 4))
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1 \
                or in_channels != out_channels:
            raise ValueError(f"RealCUGAN: in_channels and out_channels must be the same positive int (the input "
                             f"is added to the output), got {in_channels!r} and {out_channels!r}")
        if fast and (scale != 2 or pro):
            raise ValueError(f"RealCUGAN: fast is a x2 model without a pro release, got scale={scale}, pro={pro}")
        self.in_channels, self.fast = in_channels, bool(fast)
        if pro:
            self.register_buffer("pro", torch.zeros(1))  # upstream's marker of the pro models
        else:
            self.pro = None
        pad, multiple, deconv = _GEOMETRY["fast" if fast else scale]
        self.pad, self.multiple = pad, multiple
        self.has_tail = scale == 4 or self.fast  # conv_final + PixelShuffle(2) + the input skip
        inner = 64 if self.has_tail else out_channels
        self.unet1 = UNet1(in_channels * (4 if fast else 1), inner, deconv)
        self.unet2 = UNet2(64 if self.has_tail else in_channels, inner)
        if self.has_tail:
            self.conv_final = nn.Conv2d(64, 4 * out_channels, 3, 1, 0)
        self.fused = fused

    #: ONNX export by the TorchScript tracer gives wrong crops (3 pixels short in measurement),
    #: so fastsr.export_onnx uses torch.export for it
    onnx_by_trace = False

    @property
    def min_input_size(self) -> int:
        """The smallest LR side the reflect padding fits for every size from it up."""
        return self.pad + self.multiple

    @property
    def is_pro(self) -> bool:
        return self.pro is not None

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"RealCUGAN: expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        for size in x.shape[2:]:
            padded = -(-size // self.multiple) * self.multiple
            if self.pad + padded - size >= size:
                raise DataError(f"RealCUGAN x{self.scale}: input {x.shape[2]}x{x.shape[3]} is too small for the "
                                f"reflect padding of {self.pad} pixels (sizes from {self.pad + self.multiple} up "
                                "always fit)")

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        self._check_input(x)
        h0, w0 = x.shape[2:]
        s, m = self.scale, self.multiple
        if self.is_pro:
            x = x * 0.7 + 0.15
        ph, pw = -(-h0 // m) * m, -(-w0 // m) * m
        feat = F.pad(x, (self.pad, self.pad + pw - w0, self.pad, self.pad + ph - h0), "reflect")
        feat = self.unet1(F.pixel_unshuffle(feat, 2) if self.fast else feat)
        out = self.unet2(feat, alpha, residual=_crop(feat, 20))
        if self.has_tail:
            out = self._tail(out, x)
        out = out[:, :, : h0 * s, : w0 * s]
        return (out - 0.15) / 0.7 if self.is_pro else out

    def _tail(self, feat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x4 / fast: conv_final, 1-pixel crop, PixelShuffle(2), + nearest-upsampled ``x``
        (the shuffled output is larger than ``scale`` x ``x`` by the padding: cropped by the
        caller)."""
        h0, w0 = x.shape[2:]
        s, half = self.scale, self.scale // 2
        if not self.fused:
            y = F.pixel_shuffle(_crop(self.conv_final(feat), 1), 2)[:, :, : s * h0, : s * w0]
            return y + F.interpolate(x, scale_factor=s, mode="nearest").to(y.dtype)
        # a valid conv then a 1-pixel crop == the conv of the 1-pixel crop; the skip is added
        # before the shuffle: nearest x s then pixel-unshuffle(2) == nearest x s/2 repeated 4
        # times per channel (zero-padded to the conv's size; the padding is cropped away)
        feat = _crop(feat, 1)
        hc, wc = feat.shape[2] - 2, feat.shape[3] - 2
        skip = x if half == 1 else F.interpolate(x, scale_factor=half, mode="nearest")
        skip = F.pad(skip.to(feat.dtype), (0, wc - half * w0, 0, hc - half * h0)).repeat_interleave(4, dim=1)
        return F.pixel_shuffle(conv_residual(feat, self.conv_final, skip, 1.0, True), 2)

    def extra_repr(self) -> str:
        return (f"scale={self.scale}, channels={self.in_channels}, pro={self.is_pro}, fast={self.fast}, "
                f"fused={self.fused}")
