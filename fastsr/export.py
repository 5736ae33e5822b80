"""ONNX export of super-resolution models: dynamic batch, height and width (or a fixed
shape), float32 or float16, any opset from 9.

fastsr's fused epilogues are custom ops (``torch.ops.fastsr.*``) that no ONNX runtime
knows. :func:`export_onnx` exports :func:`plain_copy` of the model -- a copy with every
``fused`` switch off, the same weights and function in plain PyTorch modules -- so the
exporters see only standard ops; the model object itself is not modified and keeps its
fused layers. Opsets 9 to 20: the TorchScript exporter (``torch.onnx.export(...,
dynamo=False)``) traces the copy -- for RRDBNet (23 blocks) with dynamic height and width
about 4x faster than the dynamo exporter, whose symbolic-shape tracing runs twice
(:func:`torch.export.export`, then the exporter's own decomposition pass). Opsets 21 and
later (and, from opset 18, a module whose fastsr ops the tracer cannot see past): the copy
is captured by :func:`torch.export.export` and handed to ``torch.onnx.export(...,
dynamo=True)`` (needs ``onnx`` and ``onnxscript``); a fastsr op still in the graph (a
module without a ``fused`` switch) is replaced by its plain-PyTorch reference with
:meth:`torch.export.ExportedProgram.run_decompositions` (:data:`REFERENCE_DECOMPOSITIONS`)
-- only then, as that re-trace of the whole graph costs as much as the export itself.
"""
from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from fastsr.models._utils import input_channels
from fastsr.models._utils import min_input_size
from fastsr.models._utils import size_multiple as model_size_multiple
from fastsr.ops import bias_prelu_reference, bias_residual_reference, pixel_shuffle_prelu_reference

__all__ = ["export_onnx", "REFERENCE_DECOMPOSITIONS", "reference_program", "exporter_for", "plain_copy"]

#: fastsr op overload -> the plain-PyTorch reference it is exported as (the forward ops of
#: the generators; the loss ops never appear in an inference graph).
REFERENCE_DECOMPOSITIONS = {
    torch.ops.fastsr.bias_prelu.default: bias_prelu_reference,
    torch.ops.fastsr.bias_residual.default: bias_residual_reference,
    torch.ops.fastsr.pixel_shuffle_prelu.default: pixel_shuffle_prelu_reference,
}

INPUT_NAME, OUTPUT_NAME = "lr", "sr"


def _in_channels(model: nn.Module) -> int:
    try:
        return input_channels(model)
    except ValueError as e:
        raise ValueError(f"export_onnx: {e}; pass in_channels=") from None


#: the lowest opset the TorchScript exporter writes fastsr's models in (Upsample / DepthToSpace / PRelu)
TORCHSCRIPT_MIN_OPSET = 9
#: the newest opset torch's TorchScript exporter writes; later ones go through the dynamo exporter
TORCHSCRIPT_MAX_OPSET = 20
#: the lowest opset the dynamo exporter (torch.onnx.export(dynamo=True)) writes
DYNAMO_MIN_OPSET = 18


def exporter_for(opset: int) -> str:
    """The torch ONNX exporter :func:`export_onnx` uses for ``opset``: ``"torchscript"``
    (``torch.onnx.export(..., dynamo=False)``, which traces the model; opsets 9 to 20) or
    ``"dynamo"`` (``torch.onnx.export(..., dynamo=True)`` on a :func:`torch.export.export`
    graph; opsets 21 and later).

    Raises:
        ValueError: ``opset`` not an int >= 9.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < TORCHSCRIPT_MIN_OPSET:
        raise ValueError(f"export_onnx: opset must be an int >= {TORCHSCRIPT_MIN_OPSET}, got {opset!r}")
    return "torchscript" if opset <= TORCHSCRIPT_MAX_OPSET else "dynamo"


def plain_copy(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A copy of ``model`` in eval mode, in ``dtype``, with every ``fused`` switch off: the
    same weights and function in plain PyTorch modules (conv, PReLU, PixelShuffle, ...),
    which both ONNX exporters translate directly. ``model`` itself is not modified."""
    import copy

    plain = copy.deepcopy(model).eval().to(dtype)
    for m in plain.modules():
        if hasattr(m, "fused"):
            m.fused = False
    return plain


def _check_fixed_shape(fixed_shape, mult: int) -> tuple[int, int] | None:
    if fixed_shape is None:
        return None
    ok = isinstance(fixed_shape, (tuple, list)) and len(fixed_shape) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in fixed_shape)
    if not ok or any(v % mult for v in fixed_shape):
        raise ValueError(f"export_onnx: fixed_shape must be (height, width), positive integers that are multiples "
                         f"of {mult} for this model, got {fixed_shape!r}")
    return int(fixed_shape[0]), int(fixed_shape[1])


def _example(c: int, mult: int, fixed, dtype, min_size: int = 1) -> tuple[torch.Tensor, dict | None]:
    """The traced input (at least ``min_size`` a side) and, without ``fixed``, torch.export's
    dynamic shapes of it."""
    if fixed is not None:
        return torch.rand(1, c, *fixed).to(dtype), None
    side = max(16 // mult, 2, -(-min_size // mult)) * mult
    x = torch.rand(2, c, side, side + mult).to(dtype)  # batch 2 and H != W: neither may be specialised
    if mult > 1:
        h, w = mult * torch.export.Dim("height_div", min=1), mult * torch.export.Dim("width_div", min=1)
    else:
        h, w = torch.export.Dim("height"), torch.export.Dim("width")
    return x, {0: torch.export.Dim("batch"), 2: h, 3: w}


def _decomposed(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``ep`` with every fastsr op replaced by its reference; ``ep`` itself when it holds none
    (the re-trace of :meth:`~torch.export.ExportedProgram.run_decompositions` costs as much
    as the export)."""
    def fastsr_ops(program):
        return sorted({str(n.target) for n in program.graph.nodes
                       if n.op == "call_function" and str(n.target).startswith("fastsr.")})

    if not fastsr_ops(ep):
        return ep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
        ep = ep.run_decompositions(REFERENCE_DECOMPOSITIONS)
    left = fastsr_ops(ep)
    if left:
        raise ValueError(f"export_onnx: no reference decomposition for {left}; add them to "
                         "fastsr.export.REFERENCE_DECOMPOSITIONS")
    return ep


def reference_program(model: nn.Module, in_channels: int | None = None, size_multiple: int | None = None,
                      fixed_shape: tuple[int, int] | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.export.ExportedProgram:
    """``model`` captured by :func:`torch.export.export` with dynamic batch, height and width
    (or the static shape (1, C, *fixed_shape*)), as plain aten ops: the capture runs
    :func:`plain_copy` (fused switches off), and any fastsr op left in the graph (a module
    without a ``fused`` switch) is decomposed into its reference
    (:data:`REFERENCE_DECOMPOSITIONS`).

    Args:
        model: an image-to-image module, (N, C, H, W) -> (N, C', sH, sW).
        in_channels: C (default: the first Conv2d's input channels, divided by the
            pixel-unshuffle factor of a fastsr RRDBNet).
        size_multiple: H and W are multiples of this (default: the model's pixel-unshuffle
            factor, else 1).
        fixed_shape: (H, W) of a graph without dynamic axes (batch 1); None: dynamic.
        dtype: of the weights and the input (float32 or float16).

    Raises:
        ValueError: a fastsr op without a reference decomposition remains in the graph, a
            bad ``fixed_shape``.
    """
    mult = size_multiple or model_size_multiple(model)
    c = in_channels or _in_channels(model)
    fixed = _check_fixed_shape(fixed_shape, mult)
    plain = plain_copy(model, dtype)
    x, dims = _example(c, mult, fixed, dtype, min_input_size(model))
    with torch.no_grad():
        ep = torch.export.export(plain, (x,), dynamic_shapes=None if dims is None else (dims,))
    return _decomposed(ep)


class _LROnly(nn.Module):
    """``model(x)`` alone: the TorchScript exporter would make a forward's optional
    arguments graph inputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _export_torchscript(plain: nn.Module, x: torch.Tensor, out_path: Path, opset: int, dynamic: bool) -> None:
    """``torch.onnx.export(..., dynamo=False)``: traces ``plain`` (fused switches off).

    Raises:
        ValueError: an operator the exporter cannot write (a fastsr op the model calls
            without a ``fused`` switch, or one the opset lacks).
    """
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAME: {0: "batch", 2: "sr_height", 3: "sr_width"}} if dynamic else None
    if len(inspect.signature(plain.forward).parameters) > 1:  # e.g. Real-CUGAN's forward(x, alpha=1.0)
        plain = _LROnly(plain)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
            torch.onnx.export(plain, (x,), str(out_path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)
    except torch.onnx.errors.UnsupportedOperatorError as e:
        raise ValueError(f"export_onnx: opset {opset}: {str(e).splitlines()[0]}; use opset "
                         f"{DYNAMO_MIN_OPSET} or later (the dynamo exporter decomposes fastsr's ops)") from None
    except torch.onnx.errors.OnnxExporterError as e:  # e.g. SAFMN's pooling to a size computed from the input's
        raise _TraceError(str(e).splitlines()[0][:160]) from None


class _TraceError(ValueError):
    """The TorchScript exporter could not write the traced graph (the dynamo one may)."""


def export_onnx(model_or_path: nn.Module | str | os.PathLike, out_path: str | os.PathLike, opset: int = 18, *,
                in_channels: int | None = None, size_multiple: int | None = None, fp16: bool = False,
                fixed_shape: tuple[int, int] | None = None) -> Path:
    """Export a super-resolution model to ONNX, with dynamic batch, height and width or a
    fixed shape.

    Args:
        model_or_path: a module, or a checkpoint file that :func:`fastsr.models.load`
            reads (community ``.pth`` / ``.safetensors`` or a fastsr generator file).
        out_path: the ``.onnx`` file to write (its folder is created).
        opset: ONNX opset version, 9 or later (default 18). Opsets 9 to 20 are written by
            the TorchScript exporter (``dynamo=False``), which traces the model; 21 and later
            by ``torch.onnx.export(dynamo=True)`` from a :func:`torch.export.export` graph
            (:func:`exporter_for`). From opset 18, a model the tracer cannot export (fastsr
            ops called without a ``fused`` switch) goes through the dynamo exporter.
        in_channels, size_multiple: see :func:`reference_program` (read from the model by
            default).
        fp16: weights, input and output in float16 (half the file; for runtimes with
            float16 kernels, e.g. GPUs); default float32.
        fixed_shape: ``(height, width)`` of the LR input for a graph without dynamic axes
            (batch 1), e.g. for runtimes that need static shapes; default dynamic.

    Returns:
        ``out_path``. The graph has one input ``"lr"`` of shape (batch, C, height, width) in
        [0, 1] and one output ``"sr"`` of shape (batch, C', s*height, s*width) -- the
        model's linear output, not clamped -- both float32 (float16 with ``fp16``). fastsr's
        fused layers appear as their plain equivalents (Conv, Add, PRelu, DepthToSpace, ...).

    Raises:
        ImportError: ``onnx`` (or, for the dynamo exporter, ``onnxscript``) is not installed.
        ValueError: ``opset`` below 9 or above the installed onnx's newest, an operator the chosen opset lacks, a bad
            ``fixed_shape``, an unreadable or unknown checkpoint (see
            :func:`fastsr.models.load`), a fastsr op without a reference decomposition, or a model with
            ``back_projection`` and no ``fixed_shape``.
        TypeError: ``model_or_path`` is neither a module nor a path.
        FileNotFoundError: ``model_or_path`` is a path that does not exist.
    """
    exporter = exporter_for(opset)
    _require("onnx", *(("onnxscript",) if exporter == "dynamo" else ()))
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:  # torch would write an older opset than asked, with a logged traceback
        raise ValueError(f"export_onnx: opset must be an int in [{TORCHSCRIPT_MIN_OPSET}, {newest}] (the newest "
                         f"the installed onnx knows), got {opset}")
    if isinstance(model_or_path, (str, os.PathLike)):
        from fastsr.models import load

        model, _ = load(model_or_path)
    elif isinstance(model_or_path, nn.Module):
        model = model_or_path
    else:
        raise TypeError(f"export_onnx: model_or_path must be an nn.Module or a path, got "
                        f"{type(model_or_path).__name__}")
    dtype = torch.float16 if fp16 else torch.float32
    out_path = Path(out_path)
    if getattr(model, "back_projection", 0) and fixed_shape is None:
        # its bicubic resampling indexes by the input size, which a trace records as constants
        raise ValueError(f"export_onnx: {type(model).__name__} with back_projection exports only with a fixed input "
                         "size (fixed_shape, fastsr export --fixed-shape HxW)")
    if exporter == "torchscript":
        mult = size_multiple or model_size_multiple(model)
        fixed = _check_fixed_shape(fixed_shape, mult)
        plain = plain_copy(model, dtype)
        x, _ = _example(in_channels or _in_channels(model), mult, fixed, dtype, min_input_size(model))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # the TorchScript exporter's trace is wrong for some models (Real-CUGAN's crops by
        # negative padding come out 3 pixels short even at the traced size): such models say
        # so, and torch.export takes them
        traceable = getattr(model, "onnx_by_trace", True)
        try:
            if traceable:
                _export_torchscript(plain, x, out_path, opset, fixed is None)
                return out_path
        except ValueError as e:
            if ("fastsr::" not in str(e) and not isinstance(e, _TraceError)) or opset < DYNAMO_MIN_OPSET:
                raise
        _require("onnx", "onnxscript")
    try:
        ep = reference_program(model, in_channels, size_multiple, fixed_shape, dtype)
    except Exception as e:  # torch.export cannot keep a size symbolic (constraint violations, Dim bounds)
        if fixed_shape is not None:
            raise
        raise ValueError(f"export_onnx: {type(model).__name__} does not export with a dynamic height and width "
                         f"({str(e).strip().splitlines()[0][:160]}); export a fixed size (fixed_shape, "
                         "fastsr export --fixed-shape HxW)") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _export_dynamo(ep, out_path, opset)
    except Exception as e:  # an operator with no ONNX form (e.g. adaptive max pooling with uneven bins)
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ValueError(f"export_onnx: {type(model).__name__} has no ONNX form at opset {opset} "
                         f"({str(cause).strip().splitlines()[0][:200]})") from None
    return out_path


def _require(*packages: str) -> None:
    for pkg in packages:
        try:
            __import__(pkg)
        except ImportError:
            raise ImportError(f"export_onnx needs the {pkg!r} package: pip install onnx onnxscript") from None


def _export_dynamo(ep: torch.export.ExportedProgram, out_path: Path, opset: int) -> None:
    """``torch.onnx.export(ep, dynamo=True)``, quietly."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" etc.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
            onnx_program = torch.onnx.export(ep, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                             output_names=[OUTPUT_NAME], verbose=False)
    finally:
        onnx_log.setLevel(level)
    onnx_program.save(str(out_path))
