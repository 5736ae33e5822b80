"""Convolution and its epilogue as one oneDNN primitive, with the weight prepacked: the CPU
inference form of the models' convolutions.

:class:`PackedConv2d` is ``nn.Conv2d`` (same arguments, the same ``weight`` / ``bias``
Parameters, the same state_dict) whose CPU forward without autograd is one call of oneDNN's
fused convolution (``torch.ops.mkldnn._convolution_pointwise``, the primitive Inductor's CPU
backend uses after freezing):

* the weight is reordered once into oneDNN's blocked layout for the dtype it runs in and kept
  (re-packed only when the weight or bias tensor changes in place, e.g. ``load_state_dict``);
* the bias is added inside the convolution;
* a 3x3 stride-1 convolution with 16k input and output channels runs as Winograd
  (:func:`fastsr.ops.winograd_conv3x3`: F(4x4, 3x3) in fp32, 4x fewer multiplications than
  the direct convolution; F(2x2, 3x3) in bf16, 2.25x fewer; every epilogue including the
  per-channel PReLU in the same pass) on CPUs that have the kernel (AVX2 or AVX-512 for
  fp32, AVX512-BF16 for bf16; bf16 on AMX CPUs stays with
  oneDNN's tile kernels, :func:`fastsr.ops.winograd.winograd_preferred`); ``use_winograd =
  False`` keeps oneDNN's direct convolution;
* the epilogue runs as a oneDNN post-op on the accumulator before the single rounding to
  the output dtype: ReLU, LeakyReLU (also a PReLU with one shared slope), or the residual add
  ``residual + scale * (conv(x) + bias)``, with ``scale`` folded into the packed weight and bias.

On the oneDNN path a PReLU with one slope per channel has no post-op in the primitive torch
exposes; there the bias-free packed convolution is followed by fastsr's fused
:func:`fastsr.ops.bias_prelu`.
With autograd recording, on other devices, in float64, under ``torch.compile`` tracing or
where oneDNN is unavailable the module is exactly ``nn.Conv2d`` (and the epilogue plain
PyTorch), so it is a drop-in anywhere. :func:`fastsr.optimize_for_inference` swaps it in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsr.ops import bias_prelu
from fastsr.ops.winograd import winograd_conv3x3, winograd_eligible, winograd_preferred, winograd_weight

__all__ = ["PackedConv2d", "ACTIVATIONS", "pack_convolutions"]

#: the element-wise activations :meth:`PackedConv2d.conv_act` runs as post-ops
ACTIVATIONS = ("none", "relu", "leaky_relu")

_DTYPES = (torch.float32, torch.bfloat16)


def _mkldnn_ok(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused convolution runs ``dtype`` here: bf16 weights can only be
    reordered where oneDNN has a bf16 path (AVX512-BW/VL/DQ or AVX-NE-CONVERT); on other
    CPUs (AVX2 only) the plain convolution runs bf16."""
    return _MKLDNN and (dtype != torch.bfloat16 or _MKLDNN_BF16)


_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
_MKLDNN_BF16 = _MKLDNN and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose CPU inference forward is one prepacked oneDNN primitive with its
    epilogue (see the module docstring).

    Args:
        *args, **kwargs: ``nn.Conv2d``'s. Build one from an existing convolution, sharing its
            Parameters, with :meth:`from_conv`.

    Shape:
        (N, C_in, H, W) float32 or bfloat16 (the weight's dtype), any memory format ->
        (N, C_out, H_out, W_out) of the same dtype; the packed path returns channels_last
        (oneDNN's layout), the plain path ``nn.Conv2d``'s.
    """

    _pack_cache: dict
    #: run eligible 3x3 convolutions as Winograd where the CPU has the kernel
    use_winograd: bool = True

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "PackedConv2d":
        """A PackedConv2d over ``conv``'s own ``weight`` and ``bias`` Parameters (not copies)."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def winograd(self, x: torch.Tensor) -> bool:
        """Whether the packed path for ``x`` is the Winograd kernel (else oneDNN's)."""
        return self.use_winograd and winograd_eligible(self) and winograd_preferred(x.dtype)

    def packable(self, x: torch.Tensor) -> bool:
        """Whether ``x`` takes the packed oneDNN path (else the plain ``nn.Conv2d`` one)."""
        w = self.weight
        if (x.device.type != "cpu" or w.device.type != "cpu" or x.dtype not in _DTYPES or w.dtype != x.dtype
                or x.dim() != 4 or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                        or (self.bias is not None and self.bias.requires_grad)):
            return False
        if torch.compiler.is_compiling():
            return False
        return _mkldnn_ok(x.dtype)

    def _packed(self, x: torch.Tensor, scale: float, with_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(packed weight, bias) for x's dtype with ``scale`` folded in, re-packed when the
        weight or bias changed in place since the last call."""
        cache = self.__dict__.setdefault("_pack_cache", {})
        b = self.bias if with_bias else None
        version = (self.weight._version, None if b is None else b._version, self.weight.data_ptr())
        winograd = self.winograd(x)
        key = (x.dtype, scale, with_bias, winograd)
        hit = cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1], hit[2]
        with torch.no_grad():
            if winograd:  # transformed in float64 from the weight, rounded once; bias stays fp32
                packed = winograd_weight(self.weight if scale == 1.0 else self.weight.float() * scale, x.dtype)
            else:
                w = self.weight if scale == 1.0 else self.weight * scale
                packed = torch.ops.mkldnn._reorder_convolution_weight(
                    w.contiguous(), list(self.padding), list(self.stride), list(self.dilation), self.groups,
                    list(x.shape))
            bias = None if b is None else (b if scale == 1.0 else b * scale).to(
                torch.float32 if winograd else x.dtype)
        cache[key] = (version, packed, bias)
        return packed, bias

    def _args(self):
        return list(self.padding), list(self.stride), list(self.dilation), self.groups

    def conv_act(self, x: torch.Tensor, act: str = "none", slope: float = 0.0, bias: bool = True) -> torch.Tensor:
        """``act(conv(x))`` with ``act`` one of :data:`ACTIVATIONS` (``leaky_relu`` with
        negative ``slope``); ``bias=False`` leaves the bias out (for a separate epilogue).

        Raises:
            ValueError: ``act`` not in :data:`ACTIVATIONS`.
        """
        if act not in ACTIVATIONS:
            raise ValueError(f"PackedConv2d.conv_act: act must be one of {ACTIVATIONS}, got {act!r}")
        if not self.packable(x):
            y = super().forward(x) if bias else self._conv_forward(x, self.weight, None)
            if act == "relu":
                return F.relu(y)
            return F.leaky_relu(y, slope) if act == "leaky_relu" else y
        w, b = self._packed(x, 1.0, bias)
        if self.winograd(x):
            return winograd_conv3x3(x, w, b, act, slope)
        scalars = [float(slope)] if act == "leaky_relu" else []
        return torch.ops.mkldnn._convolution_pointwise(x, w, b, *self._args(), act, scalars, "")

    def conv_prelu(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``PReLU(conv(x))`` with (C_out,) or (1,) slopes ``weight``: one Winograd pass, one
        oneDNN primitive with a LeakyReLU post-op for a shared slope, else the bias-free packed
        convolution + :func:`fastsr.ops.bias_prelu`."""
        if not self.packable(x) or self.bias is None:
            return F.prelu(super().forward(x), weight.to(x.dtype))
        if self.winograd(x):
            w, b = self._packed(x, 1.0, True)
            return winograd_conv3x3(x, w, b, "prelu", prelu_weight=weight.float().expand(self.out_channels))
        if weight.numel() == 1:
            return self.conv_act(x, "leaky_relu", float(weight))
        return bias_prelu(self.conv_act(x, bias=False), self.bias, weight)

    def conv_add(self, x: torch.Tensor, residual: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``residual + scale * conv(x)``: the residual add as a post-op, ``scale`` folded into
        the packed weight and bias.

        Args:
            x: (N, C_in, H, W) input.
            residual: (N, C_out, H_out, W_out) tensor; cast to the convolution's dtype.
            scale: finite residual scaling.

        Raises:
            ValueError: ``residual`` has another shape than the convolution's output.
        """
        if not self.packable(x):
            return residual + scale * self(x)
        w, b = self._packed(x, float(scale), True)
        if residual.dtype != x.dtype:
            residual = residual.to(x.dtype)
        out_shape = _output_shape(x, self)
        if tuple(residual.shape) != out_shape:
            raise ValueError(f"PackedConv2d.conv_add: residual must have the output shape {out_shape}, "
                             f"got {tuple(residual.shape)}")
        if self.winograd(x):
            return winograd_conv3x3(x, w, b, residual=residual)
        return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, w, b, *self._args(), "add", None, None,
                                                              [], None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_act(x)


def _output_shape(x: torch.Tensor, conv: nn.Conv2d) -> tuple[int, int, int, int]:
    size = [x.shape[0], conv.out_channels]
    for i in range(2):
        k = conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        size.append((x.shape[2 + i] + 2 * conv.padding[i] - k) // conv.stride[i] + 1)
    return tuple(size)


def pack_convolutions(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Conv2d`` of ``model`` (exactly that class, or
    :class:`fastsr.nn.Conv2d`) with a :class:`PackedConv2d` over the same Parameters; returns
    ``model``. The state_dict, and every result up to float rounding, stay the same."""
    from fastsr.nn.conv import Conv2d

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in (nn.Conv2d, Conv2d):
                setattr(module, name, PackedConv2d.from_conv(child))
    return model
