"""ONNX export of super-resolution models, with dynamic batch, height and width.

fastsr's fused epilogues are custom ops (``torch.ops.fastsr.*``) that no ONNX runtime
knows. :func:`export_onnx` captures the model with :func:`torch.export.export` (the ops
have fake implementations, so they are traced as single nodes), replaces every fastsr op
by its plain-PyTorch reference with
:meth:`torch.export.ExportedProgram.run_decompositions` (:data:`REFERENCE_DECOMPOSITIONS`),
and hands the resulting graph of standard aten ops to torch's ONNX exporter
(``torch.onnx.export(..., dynamo=True)``, which needs the ``onnx`` and ``onnxscript``
packages). The model object itself is not modified and keeps its fused layers.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from fastsr.models._utils import input_channels
from fastsr.models._utils import size_multiple as model_size_multiple
from fastsr.ops import bias_prelu_reference, bias_residual_reference, pixel_shuffle_prelu_reference

__all__ = ["export_onnx", "REFERENCE_DECOMPOSITIONS", "reference_program"]

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


def reference_program(model: nn.Module, in_channels: int | None = None, size_multiple: int | None = None,
                      example_size: int = 16) -> torch.export.ExportedProgram:
    """``model`` captured by :func:`torch.export.export` with dynamic batch, height and width,
    every fastsr op decomposed into its reference (plain aten ops).

    Args:
        model: an image-to-image module, (N, C, H, W) -> (N, C', sH, sW).
        in_channels: C (default: the first Conv2d's input channels, divided by the
            pixel-unshuffle factor of a fastsr RRDBNet).
        size_multiple: H and W are multiples of this (default: the model's pixel-unshuffle
            factor, else 1).
        example_size: side of the example input used for tracing (any value the model
            accepts; the exported graph does not depend on it).

    Raises:
        ValueError: a fastsr op without a reference decomposition remains in the graph.
    """
    mult = size_multiple or model_size_multiple(model)
    c = in_channels or _in_channels(model)
    side = max(example_size // mult, 2) * mult
    x = torch.rand(2, c, side, side + mult)  # batch 2 and H != W: neither may be specialised
    batch = torch.export.Dim("batch")
    if mult > 1:
        h = mult * torch.export.Dim("height_div", min=1)
        w = mult * torch.export.Dim("width_div", min=1)
    else:
        h, w = torch.export.Dim("height"), torch.export.Dim("width")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch, 2: h, 3: w},))
    finally:
        model.train(was_training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
        ep = ep.run_decompositions(REFERENCE_DECOMPOSITIONS)
    left = sorted({str(n.target) for n in ep.graph.nodes
                   if n.op == "call_function" and str(n.target).startswith("fastsr.")})
    if left:
        raise ValueError(f"export_onnx: no reference decomposition for {left}; add them to "
                         "fastsr.export.REFERENCE_DECOMPOSITIONS")
    return ep


def export_onnx(model_or_path: nn.Module | str | os.PathLike, out_path: str | os.PathLike, opset: int = 18, *,
                in_channels: int | None = None, size_multiple: int | None = None) -> Path:
    """Export a super-resolution model to ONNX with dynamic batch, height and width.

    Args:
        model_or_path: a module, or a checkpoint file that :func:`fastsr.models.load`
            reads (community ``.pth`` / ``.safetensors`` or a fastsr generator file).
        out_path: the ``.onnx`` file to write (its folder is created).
        opset: ONNX opset version (18 by default; torch's exporter supports 18 and later).
        in_channels, size_multiple: see :func:`reference_program` (read from the model by
            default).

    Returns:
        ``out_path``. The graph has one float32 input ``"lr"`` of shape
        (batch, C, height, width) in [0, 1] and one output ``"sr"`` of shape
        (batch, C', s*height, s*width) -- the model's linear output, not clamped. fastsr's
        fused ops appear as their reference decomposition (Conv, Add, PRelu, ...).

    Raises:
        ImportError: ``onnx`` or ``onnxscript`` is not installed.
        ValueError: ``opset`` below 18 or above the installed onnx's newest, an
            unreadable or unknown checkpoint (see
            :func:`fastsr.models.load`), or a fastsr op without a reference decomposition.
        FileNotFoundError: ``model_or_path`` is a path that does not exist.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 18:
        raise ValueError(f"export_onnx: opset must be an int >= 18 (torch's ONNX exporter), got {opset!r}")
    for pkg in ("onnx", "onnxscript"):
        try:
            __import__(pkg)
        except ImportError:
            raise ImportError(f"export_onnx needs the {pkg!r} package: pip install onnx onnxscript") from None
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:  # torch would write an older opset than asked, with a logged traceback
        raise ValueError(f"export_onnx: opset must be an int in [18, {newest}] (the newest the installed onnx "
                         f"knows), got {opset}")
    if isinstance(model_or_path, (str, os.PathLike)):
        from fastsr.models import load

        model, _ = load(model_or_path)
    elif isinstance(model_or_path, nn.Module):
        model = model_or_path
    else:
        raise TypeError(f"export_onnx: model_or_path must be an nn.Module or a path, got "
                        f"{type(model_or_path).__name__}")
    ep = reference_program(model, in_channels, size_multiple)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
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
    return out_path
