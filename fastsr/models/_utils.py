"""Shared helpers of fastsr.models: the ``fused`` switch, scale / input-size checks, weight
initialisation and strict checkpoint loading."""
from __future__ import annotations

import contextlib
import math
import os
import threading
from typing import Iterable, Mapping

import torch
from torch import nn

__all__ = [
    "FusedModule",
    "check_scale",
    "check_input_size",
    "init_weights",
    "init_icnr",
    "has_subpixel_convs",
    "load_state_dict",
    "extract_state_dict",
    "count_parameters",
    "build_for_weights",
    "check_state_dict",
    "check_tensor_dict",
    "size_multiple",
    "min_input_size",
    "input_channels",
    "interpolate_weights",
]


class FusedModule(nn.Module):
    """Base of the models: a model-level ``fused`` flag that propagates to every submodule
    with a ``fused`` attribute (``ResidualBlockNoBN``, ``Upsampler``, ``Conv2d``, ...).

    Flipping ``fused`` never changes the parameters or the state_dict; it only selects the
    fused kernels (``True``) or the plain PyTorch modules (``False``).
    """

    _fused: bool = True

    @property
    def fused(self) -> bool:
        return self._fused

    @fused.setter
    def fused(self, value: bool) -> None:
        self._fused = bool(value)
        for m in self.modules():
            if m is not self and hasattr(m, "fused"):
                m.fused = self._fused


def check_scale(model: str, scale: int, supported: Iterable[int]) -> int:
    """Return ``scale`` if it is one of ``supported``, else raise a ValueError naming the model."""
    supported = tuple(supported)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in supported:
        raise ValueError(f"{model}: scale must be one of {supported}, got {scale!r}")
    return scale


def check_input_size(model: str, x: torch.Tensor, input_size: int, channels: int) -> None:
    """Raise ValueError unless ``x`` is (N, channels, input_size, input_size)."""
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != input_size or x.shape[3] != input_size:
        raise ValueError(
            f"{model}: expected input of shape (N, {channels}, {input_size}, {input_size}) "
            f"(the fully connected layer is built for input_size={input_size}; construct the "
            f"model with input_size=<H> for other sizes), got {tuple(x.shape)}"
        )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def init_weights(model: nn.Module, method: str = "default", std: float = 0.02) -> nn.Module:
    """Re-initialise the weights of ``model`` in place and return it.

    Args:
        model: any module.
        method: ``"default"`` -- PyTorch's own initialisation (``reset_parameters`` of every
            submodule: Kaiming-uniform convs / linears, PReLU 0.25, BN weight 1 bias 0);
            ``"normal"`` -- the EM-distance GAN paper's N(0, ``std``) for conv and linear
            weights with zero biases (Zhang et al. 2019, sec. 3.1: N(0, 0.02)), BatchNorm
            weight N(1, ``std``) and bias 0 as in DCGAN; PReLU slopes keep 0.25.
        std: standard deviation for ``"normal"``.

    Raises:
        ValueError: unknown ``method`` or ``std`` not positive and finite.
    """
    if method not in ("default", "normal"):
        raise ValueError(f"init_weights: method must be 'default' or 'normal', got {method!r}")
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ValueError(f"init_weights: std must be a positive finite number, got {std!r}")
    for m in model.modules():
        if method == "default":
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return model


def has_subpixel_convs(model: nn.Module) -> bool:
    """Whether ``model`` declares convolutions that feed a PixelShuffle (a
    ``subpixel_convs()`` method that returns at least one)."""
    method = getattr(model, "subpixel_convs", None)
    return callable(method) and bool(method())


@torch.no_grad()
def init_icnr(model: nn.Module) -> nn.Module:
    """ICNR-initialise every convolution that feeds a PixelShuffle in ``model``, in place, and
    return the model (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution";
    :func:`fastsr.nn.icnr_`): at initialisation each sub-pixel upsampler then equals
    nearest-neighbour upsampling + a convolution, with no checkerboard.

    The layers come from ``model.subpixel_convs()`` (``[(conv, r)]``), which every fastsr
    generator with a sub-pixel upsampler has (NonBNResNet, SRResNet, MSRResNet, ESPCN, EDSR,
    RCAN, SRVGGNetCompact, AttentiveGenerator). Call it after any other initialisation
    (:func:`init_weights`): ICNR copies each output channel's first sub-kernel as that
    initialisation left it.

    Raises:
        ValueError: ``model`` has no ``subpixel_convs()`` or it lists no layer.
    """
    if not has_subpixel_convs(model):
        raise ValueError(f"init_icnr: {type(model).__name__} has no sub-pixel convolution (no PixelShuffle "
                         "upsampler) to initialise")
    from fastsr.nn import icnr_

    for conv, r in model.subpixel_convs():
        icnr_(conv, r)
    return model


def extract_state_dict(checkpoint: Mapping, key: str | None = None) -> Mapping[str, torch.Tensor]:
    """The state dict inside a checkpoint: ``checkpoint[key]`` when ``key`` is given, else the
    first of ``params_ema``, ``params`` (BasicSR / Real-ESRGAN), ``state_dict``, ``model``
    present, else the checkpoint itself. A ``module.`` prefix (DataParallel/DDP) is stripped.

    Raises:
        KeyError: ``key`` given but absent (the message lists the keys present).
        TypeError: the checkpoint, or its entry ``key``, is not a mapping.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a mapping (a state dict), got {type(checkpoint).__name__}")
    if key is not None:
        if key not in checkpoint:
            raise KeyError(f"checkpoint has no key {key!r}; top-level keys: {sorted(map(str, checkpoint))[:20]}")
        sd = checkpoint[key]
        if not isinstance(sd, Mapping):
            raise TypeError(f"checkpoint[{key!r}] must be a mapping (a state dict), got {type(sd).__name__}")
    else:
        sd = checkpoint
        for k in ("params_ema", "params", "state_dict", "model"):
            if k in checkpoint and isinstance(checkpoint[k], Mapping):
                sd = checkpoint[k]
                break
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict(
    model: nn.Module,
    checkpoint: Mapping | str | os.PathLike,
    key: str | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load a checkpoint strictly into ``model`` and return the model.

    Args:
        model: the target module.
        checkpoint: a state dict, a checkpoint dict (``{'params_ema': sd}``,
            ``{'params': sd}``, ``{'state_dict': sd}``) or a path to a ``torch.save`` file
            (loaded with ``weights_only=True``).
        key: which entry of the checkpoint holds the state dict; default: see
            :func:`extract_state_dict`.
        map_location: where tensors of a file are loaded.

    Raises:
        ValueError: an unreadable file; keys that are not strings or values that are not
            tensors (:func:`check_tensor_dict`); missing or unexpected keys (all listed) or
            tensors of the wrong shape (each listed with both shapes). Nothing is loaded in
            that case.
        FileNotFoundError: no file at the path ``checkpoint``.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        try:
            checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
        except Exception as e:  # pickle, zip and struct errors of a damaged or non-tensor file
            raise ValueError(f"cannot read {checkpoint} with torch.load(weights_only=True): "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    sd = extract_state_dict(checkpoint, key)
    check_state_dict(model, sd)
    model.load_state_dict(sd, strict=True)
    return model


def check_tensor_dict(sd, what: str = "checkpoint", error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``sd`` is a mapping of string keys (parameter names) to tensors:
    the message names ``what``, the count and the first few keys of other types or with
    values of other types (``None``, lists, nested dicts ...)."""
    if not isinstance(sd, Mapping):
        raise error(f"{what}: expected a state dict (a mapping of parameter names to tensors), got "
                    f"{type(sd).__name__}")
    keys = [k for k in sd if not isinstance(k, str)]
    values = [k for k, v in sd.items() if isinstance(k, str) and not isinstance(v, torch.Tensor)]
    for items, kind in ((keys, "keys that are not strings (parameter names)"),
                        (values, "entries that are not tensors")):
        if items:
            shown = ", ".join(f"{k!r} ({type(k if kind.startswith('keys') else sd[k]).__name__})"
                              for k in items[:3])
            raise error(f"{what}: the state dict has {len(items)} {kind}: {shown}"
                        + (", ..." if len(items) > 3 else ""))


def check_state_dict(model: nn.Module, sd: Mapping) -> None:
    """Raise :func:`load_state_dict`'s ValueError when ``sd`` does not fit ``model`` (its
    entries (:func:`check_tensor_dict`), keys and shapes only; ``model`` may live on the meta
    device)."""
    check_tensor_dict(sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong_shape = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = [f"checkpoint does not match {type(model).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        if wrong_shape:
            parts.append(f"shape mismatches ({len(wrong_shape)}): {wrong_shape}")
        raise ValueError("\n".join(parts))


def _storage_bytes(tensors) -> int:
    """Bytes of data the tensors actually hold: each distinct storage once (an expanded,
    stride-0 tensor of any shape holds only its storage)."""
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            st = t.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
    return total


class _TooManyTensors(Exception):
    """Raised inside a model constructor when it registers more tensors than its budget."""


@contextlib.contextmanager
def _tensor_budget(limit: int):
    """Abort (``_TooManyTensors``) a constructor of this thread that registers more than
    ``limit`` parameters and buffers, so that metadata naming a huge model (a billion
    blocks) fails at once instead of building it even on the meta device."""
    count, thread = [0], threading.get_ident()

    def hook(module, name, value):
        if threading.get_ident() == thread:
            count[0] += 1
            if count[0] > limit:
                raise _TooManyTensors

    handles = [reg(hook) for reg in (torch.nn.modules.module.register_module_parameter_registration_hook,
                                     torch.nn.modules.module.register_module_buffer_registration_hook)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def build_for_weights(factory, state_dict: Mapping, check) -> nn.Module:
    """``factory()`` -- a model -- built only once ``state_dict`` is known to fill it, so that a
    small file whose metadata or shapes describe a huge model never allocates it.

    The model is first built on the meta device (no memory), and abandoned as soon as it
    registers far more tensors than ``state_dict`` holds (4x + 64: a strict load needs one
    each); then ``check(probe, state_dict)`` (the caller's key / shape check, raising its own
    error) runs on it; then every tensor for a floating-point parameter must be floating
    point (int, bool and complex weights are refused, not cast), and the data present in
    ``state_dict`` must be at least half the model's float32 size (fp16 / bf16 files are
    half; zero-size or stride-0 tensors that claim a large model are not).

    Raises:
        ValueError: a model of far more tensors than ``state_dict`` holds, or of tensors
            too large to describe; non-floating weights, or far less data than the model
            needs; the errors of ``check``.
    """
    limit = 4 * len(state_dict) + 64
    try:
        with torch.device("meta"), _tensor_budget(limit):
            probe = factory()
    except _TooManyTensors:
        raise ValueError(f"the model described has more than {limit:,} parameter and buffer tensors but the "
                         f"file holds {len(state_dict):,}: refusing to build it") from None
    except RuntimeError as e:  # torch's own refusal, e.g. a tensor size that overflows
        raise ValueError(f"the model described cannot be built: {str(e).strip().splitlines()[0]}") from None
    check(probe, state_dict)
    own = probe.state_dict()
    bad = [f"{k} ({state_dict[k].dtype})" for k, v in own.items()
           if v.is_floating_point() and k in state_dict and not state_dict[k].is_floating_point()]
    if bad:
        raise ValueError(f"weights that are not floating point: {', '.join(bad[:3])}"
                         + (f", ... ({len(bad)} in all)" if len(bad) > 3 else ""))
    need = sum(v.numel() * 4 for v in own.values() if v.is_floating_point())
    have = _storage_bytes(state_dict.values())
    if need > 2 * have + (1 << 20):
        raise ValueError(f"the file holds {have:,} bytes of weights but describes a model of {need:,} bytes "
                         "(zero-size or expanded tensors?): refusing to allocate it")
    return factory()


def size_multiple(model: nn.Module) -> int:
    """LR height and width must be multiples of this (RRDBNet x2 / x1 pixel-unshuffle their
    input by 2 / 4); 1 for every other model."""
    return int(getattr(model, "unshuffle", 1) or 1)


def min_input_size(model: nn.Module) -> int:
    """The smallest LR height and width ``model`` runs on (Real-CUGAN's reflect padding,
    Omni-SR's and SAFMN's pooling need more than one pixel); 1 for most models."""
    return int(getattr(model, "min_input_size", 1) or 1)


def input_channels(model: nn.Module) -> int:
    """The image channels ``model`` takes: its first convolution's input channels, less the
    pixel-unshuffle factor.

    Raises:
        ValueError: ``model`` has no ``nn.Conv2d``.
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d to read the input channels from")
    return first.in_channels // size_multiple(model) ** 2


def interpolate_weights(model: nn.Module, other: nn.Module, weight: float) -> nn.Module:
    """Deep network interpolation ("Deep Network Interpolation for Continuous Imagery Effect
    Transition", Wang et al., CVPR 2019): every floating-point parameter and buffer of
    ``model`` becomes ``weight * model + (1 - weight) * other``, key by key, in place (as
    Real-ESRGAN's ``RealESRGANer.dni`` blends realesr-general-x4v3 with its denoising
    companion realesr-general-wdn-x4v3). Integer buffers keep ``model``'s values.

    Args:
        model: the network the result is written into (returned).
        other: a network of the same class with the same keys and shapes.
        weight: the share of ``model``, usually in [0, 1] (1: ``model`` unchanged).

    Raises:
        ValueError: another class, other keys or other shapes (named).
    """
    if type(model) is not type(other):
        raise ValueError(f"cannot interpolate a {type(model).__name__} with a {type(other).__name__}")
    own, theirs = model.state_dict(), other.state_dict()
    if own.keys() != theirs.keys():
        diff = sorted(set(own) ^ set(theirs))
        raise ValueError(f"the two {type(model).__name__} networks have different keys, e.g. {diff[:3]}")
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(theirs[k].shape)}" for k, v in own.items()
              if v.shape != theirs[k].shape]
    if shapes:
        raise ValueError(f"the two {type(model).__name__} networks differ in shape ({len(shapes)} tensors, e.g. "
                         f"{shapes[0]})")
    with torch.no_grad():
        for k, v in own.items():
            if v.is_floating_point():
                v.copy_(weight * v + (1 - weight) * theirs[k].to(v.device, v.dtype))
    return model
