"""Community checkpoints: the architecture and its size read from the state-dict keys.

:func:`load` takes a ``.pth`` / ``.pt`` file (read with ``torch.load(weights_only=True)``
only, so a file can never run code), a ``.safetensors`` file, or a state dict, and returns
the fastsr model with the weights loaded (fused layers by default) plus a :class:`Detected`
record. Recognised, by the key patterns below and the tensor shapes:

==================  ===========  =====================================================
architecture        layout       keys (``.weight`` / ``.bias``)
==================  ===========  =====================================================
RRDBNet             esrgan-old   ``model.0``, ``model.1.sub.N.RDBk.convj.0``,
                                 ``model.1.sub.<num_block>`` (trunk), ``model.3/6/8/10``
RRDBNet             esrgan       ``conv_first``, ``RRDB_trunk.N.RDBk.convj``,
                                 ``trunk_conv``, ``upconv1/2``, ``HRconv``, ``conv_last``
RRDBNet             basicsr      ``conv_first``, ``body.N.rdbk.convj``, ``conv_body``,
                                 ``conv_up1/2``, ``conv_hr``, ``conv_last`` (ESRGAN and
                                 Real-ESRGAN x4 / x2 / x1: ``conv_first`` has 3, 12 or 48
                                 input channels, the pixel-unshuffled input)
SRVGGNetCompact     basicsr      ``body.N`` only (convs at even N, PReLU at odd N)
MSRResNet           basicsr      ``conv_first``, ``body.N.conv1/2``, ``upconv1/2``,
                                 ``conv_hr``, ``conv_last``
EDSR                basicsr      ``conv_first``, ``body.N.conv1/2``, ``conv_after_body``,
                                 ``upsample.N``, ``conv_last``
RCAN                basicsr      ``conv_first``, ``body.N.residual_group.M.rcab.K...``,
                                 ``body.N.conv``, ``conv_after_body``, ``upsample.N``,
                                 ``conv_last``
any fastsr model    fastsr       a fastsr generator file (safetensors, ``params.`` /
                                 ``params_ema.`` groups, metadata ``format=fastsr``)
==================  ===========  =====================================================

Checkpoint wrappers are removed first: ``params_ema`` (preferred), ``params``,
``state_dict``, ``model`` (when it holds a dict) and a ``module.`` prefix (DataParallel);
when the keys match no layout, a first name shared by every key (``netG.``,
``generator.``) is removed and the keys matched again.
The old and ESRGAN-repository layouts are renamed to BasicSR's key names, which are
fastsr's, so :meth:`torch.nn.Module.state_dict` of the loaded model loads back into the
BasicSR / Real-ESRGAN classes unchanged.

What the keys do not record is assumed as the upstream defaults and listed in
:attr:`Detected.notes`: the SRVGGNetCompact activation when it has no parameters (ReLU or
LeakyReLU), EDSR's residual scaling (0.1 for 256 features, the paper's large EDSR, else
1.0), EDSR / RCAN ``img_range`` 255 and the DIV2K RGB mean. Pass them to :func:`load` as
keyword overrides when a file differs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from fastsr.errors import CheckpointError
from fastsr.models._utils import build_for_weights, check_state_dict, check_tensor_dict, load_state_dict
from fastsr.models.checkpoint import decode_metadata, generator_from_metadata, model_scale
from fastsr.models.registry import create

__all__ = ["load", "detect", "read_checkpoint", "Detected", "UnknownCheckpointError", "KEY_PATTERNS"]

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)

#: (architecture, layout) -> the key patterns of that layout, without ``.weight``/``.bias``
#: (full matches). A file is of an architecture when every key matches one of its patterns
#: and every pattern matches some key; otherwise the closest one is named in the error.
KEY_PATTERNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("RRDBNet", "esrgan-old"): (r"model\.0", r"model\.1\.sub\.\d+\.RDB[123]\.conv[1-5]\.0",
                                r"model\.1\.sub\.\d+", r"model\.([2-9]|\d\d+)"),
    ("RRDBNet", "esrgan"): (r"conv_first", r"RRDB_trunk\.\d+\.RDB[123]\.conv[1-5]", r"trunk_conv",
                            r"upconv[12]", r"HRconv", r"conv_last"),
    ("RRDBNet", "basicsr"): (r"conv_first", r"body\.\d+\.rdb[123]\.conv[1-5]", r"conv_body", r"conv_up[12]",
                             r"conv_hr", r"conv_last"),
    ("SRVGGNetCompact", "basicsr"): (r"body\.\d+",),
    ("MSRResNet", "basicsr"): (r"conv_first", r"body\.\d+\.conv[12]", r"upconv1", r"conv_hr", r"conv_last",
                               r"upconv2"),
    ("EDSR", "basicsr"): (r"conv_first", r"body\.\d+\.conv[12]", r"conv_after_body", r"upsample\.\d+",
                          r"conv_last"),
    ("RCAN", "basicsr"): (r"conv_first", r"body\.\d+\.residual_group\.\d+\.rcab\.\d+(\.attention\.\d+)?",
                          r"body\.\d+\.conv", r"conv_after_body", r"upsample\.\d+", r"conv_last"),
}
# Patterns a file may lack and still be of the architecture (MSRResNet x2 / x3 has no upconv2).
_OPTIONAL = {("MSRResNet", "basicsr"): {r"upconv2"}}


class UnknownCheckpointError(CheckpointError):
    """A state dict that no supported architecture explains, or whose shapes do not fit the
    detected one. The message names the closest architecture and the keys that did not match."""


@dataclass(frozen=True)
class Detected:
    """What :func:`load` / :func:`detect` read from a checkpoint.

    Attributes:
        architecture: fastsr model name (``fastsr.models.create`` accepts it).
        scale: upscaling factor of the model.
        params: constructor keyword arguments (without ``fused``), e.g. ``num_block``,
            ``num_feat``, ``num_grow_ch`` for RRDBNet, ``num_conv`` / ``act_type`` for
            SRVGGNetCompact.
        layout: the key layout: ``"esrgan-old"``, ``"esrgan"``, ``"basicsr"`` or ``"fastsr"``.
        wrapper: where the state dict sat in the file (``"params_ema"``, ``"params"``,
            ``"state_dict"``, ``"model"`` or ``""`` for a bare state dict), plus
            ``"+module."`` when a DataParallel prefix was removed.
        source: the file name, or ``"<state dict>"``.
        notes: assumptions about what the keys do not record.
    """

    architecture: str
    scale: int
    params: dict
    layout: str
    wrapper: str = ""
    source: str = "<state dict>"
    notes: tuple = field(default_factory=tuple)

    def __str__(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "scale")
        s = f"{self.architecture} x{self.scale} ({p}; {self.layout} keys"
        s += f" in {self.wrapper})" if self.wrapper else ")"
        return s + "".join(f"; {n}" for n in self.notes)


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """The raw contents of a checkpoint file: ``(mapping, metadata)``.

    ``.safetensors`` files give their flat tensor dict and string metadata; ``.pth`` /
    ``.pt`` / ``.ckpt`` / ``.bin`` files give what ``torch.load(weights_only=True)`` returns
    (a state dict or a checkpoint dict around one) and empty metadata.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another suffix, or a file that cannot be read (a ``.pth`` that pickles
            objects other than tensors and containers is refused, not executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path} as safetensors: {_first_line(e)}") from None
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for non-tensor objects, RuntimeError for corrupt zips
            raise CheckpointError(f"cannot read {path} with torch.load(weights_only=True) (fastsr never unpickles "
                             f"arbitrary objects): {_first_line(e)}") from None
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
        return dict(obj), {}
    raise CheckpointError(f"checkpoint {path}: unsupported suffix {path.suffix!r}; expected one of "
                     f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}")


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _unwrap(obj: Mapping) -> tuple[dict, str]:
    """The tensors of a checkpoint and where they were: fastsr's flat ``params_ema.`` /
    ``params.`` groups, BasicSR's ``{'params_ema': sd}``, ``state_dict``, ``model``,
    and the ``module.`` prefix removed."""
    keys = list(obj)
    if keys and all(isinstance(k, str) and "." in k and k.split(".", 1)[0] in ("params", "params_ema")
                    for k in keys):
        group = "params_ema" if any(k.startswith("params_ema.") for k in keys) else "params"
        sd = {k[len(group) + 1:]: v for k, v in obj.items() if k.startswith(group + ".")}
        path = [group]
    else:
        sd, path = obj, []
        for _ in range(2):  # also {'state_dict': {'params_ema': sd}}
            for k in ("params_ema", "params", "state_dict", "model"):
                if isinstance(sd.get(k), Mapping):
                    sd = sd[k]
                    path.append(k)
                    break
            else:
                break
    wrapper = ".".join(path)
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        wrapper += "+module." if wrapper else "module."
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return tensors, wrapper


# ---------------------------------------------------------------------------- matching
def _strip(key: str) -> str | None:
    for suffix in (".weight", ".bias"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return None


def _match(keys, arch_layout) -> tuple[list[str], list[str]]:
    """(file keys no pattern explains, patterns no key matches)."""
    patterns = KEY_PATTERNS[arch_layout]
    compiled = [re.compile(p) for p in patterns]
    unmatched, used = [], set()
    for k in keys:
        stem = _strip(k)
        hit = [i for i, c in enumerate(compiled) if stem is not None and c.fullmatch(stem)]
        if hit:
            used.update(hit)
        else:
            unmatched.append(k)
    optional = _OPTIONAL.get(arch_layout, set())
    missing = [p for i, p in enumerate(patterns) if i not in used and p not in optional]
    return unmatched, missing


def _readable(pattern: str) -> str:
    return pattern.replace(r"\d+", "N").replace("\\", "") + ".*"


def _classify(sd: Mapping) -> tuple[str, str]:
    keys = sorted(sd)
    scores = []
    for arch_layout in KEY_PATTERNS:
        unmatched, missing = _match(keys, arch_layout)
        if not unmatched and not missing:
            return arch_layout
        explained = 1 - len(unmatched) / max(len(keys), 1)
        covered = 1 - len(missing) / len(KEY_PATTERNS[arch_layout])
        scores.append((explained + covered, arch_layout, unmatched, missing))
    _, (arch, layout), unmatched, missing = max(scores, key=lambda s: s[0])
    show = ", ".join(unmatched[:8]) + (f" and {len(unmatched) - 8} more" if len(unmatched) > 8 else "")
    parts = [f"unknown architecture ({len(keys)} tensors); closest: {arch} ({layout} keys)"]
    if unmatched:
        parts.append(f"keys that do not match it ({len(unmatched)}): {show}")
    if missing:
        parts.append(f"expected keys not found: {', '.join(_readable(p) for p in missing)}")
    raise UnknownCheckpointError("; ".join(parts))


# ---------------------------------------------------------------------------- architectures
def _w(sd, name) -> torch.Tensor:
    return sd[f"{name}.weight"]


def _count(sd, pattern: str) -> int:
    """Number of distinct indices N in keys matching ``pattern`` (a regex with one group)."""
    c = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [c.match(k)] if m})


def _bad(arch: str, msg: str):
    raise UnknownCheckpointError(f"{arch}: {msg}")


def _rrdb_from_esrgan_old(sd: Mapping) -> dict:
    out, top, trunk = {}, {}, {}
    for k, v in sd.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)", k)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            continue
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.(weight|bias)", k)
        if m:
            trunk.setdefault(int(m[1]), {})[m[2]] = v
            continue
        m = re.fullmatch(r"model\.(\d+)\.(weight|bias)", k)
        top.setdefault(int(m[1]), {})[m[2]] = v
    num_block = _count(out, r"body\.(\d+)\.")
    if list(trunk) != [num_block]:
        _bad("RRDBNet (esrgan-old keys)", f"the trunk conv must be model.1.sub.{num_block} after {num_block} "
             f"blocks, found model.1.sub.{sorted(trunk)}")
    convs = sorted(top)
    ups = convs[1:-2]
    if len(ups) != 2:
        _bad("RRDBNet (esrgan-old keys)", f"{len(ups)} upsampling stage(s) (x{2 ** len(ups)} tail); fastsr's "
             "RRDBNet has the x4 tail of two nearest-x2 stages (x2 / x1 models load when they use "
             "pixel-unshuffle, as Real-ESRGAN's do)")
    names = {convs[0]: "conv_first", ups[0]: "conv_up1", ups[1]: "conv_up2", convs[-2]: "conv_hr",
             convs[-1]: "conv_last"}
    for idx, name in names.items():
        for kind, v in top[idx].items():
            out[f"{name}.{kind}"] = v
    for kind, v in trunk[num_block].items():
        out[f"conv_body.{kind}"] = v
    return out


_ESRGAN_RENAMES = (
    (r"RRDB_trunk\.(\d+)\.RDB([123])\.", r"body.\1.rdb\2."),
    (r"trunk_conv\.", "conv_body."),
    (r"upconv([12])\.", r"conv_up\1."),
    (r"HRconv\.", "conv_hr."),
)


def _rrdb_from_esrgan(sd: Mapping) -> dict:
    out = {}
    for k, v in sd.items():
        for pat, rep in _ESRGAN_RENAMES:
            k = re.sub("^" + pat, rep, k)
        out[k] = v
    return out


def _rrdbnet(sd: Mapping, notes: list) -> dict:
    first, last = _w(sd, "conv_first"), _w(sd, "conv_last")
    num_out_ch, cin = last.shape[0], first.shape[1]
    ratio = cin // num_out_ch if cin % num_out_ch == 0 else 0
    scale = {1: 4, 4: 2, 16: 1}.get(ratio)
    if scale is None:
        _bad("RRDBNet", f"conv_first has {cin} input channels for {num_out_ch} output channels; expected "
             "1x (x4), 4x (x2, pixel-unshuffle 2) or 16x (x1, pixel-unshuffle 4)")
    if scale != 4:
        notes.append(f"pixel-unshuffle {4 // scale} on the input (Real-ESRGAN x{scale})")
    return dict(scale=scale, num_in_ch=num_out_ch, num_out_ch=num_out_ch, num_feat=first.shape[0],
                num_block=_count(sd, r"body\.(\d+)\."), num_grow_ch=_w(sd, "body.0.rdb1.conv1").shape[0])


def _srvgg(sd: Mapping, notes: list) -> dict:
    idx = {}
    for k, v in sd.items():
        i, kind = k.split(".")[1:]
        idx.setdefault(int(i), {})[kind] = v
    convs = sorted(i for i, d in idx.items() if d.get("weight") is not None and d["weight"].dim() == 4)
    acts = sorted(i for i in idx if i not in convs)
    n = len(convs)
    if n < 2 or convs != list(range(0, 2 * n, 2)):
        _bad("SRVGGNetCompact", f"convolutions expected at body.0, body.2, ..., found at body.{convs}")
    if acts and acts != list(range(1, 2 * n - 2, 2)):
        _bad("SRVGGNetCompact", f"PReLU slopes expected at body.1, body.3, ..., body.{2 * n - 3}, found at "
             f"body.{acts}")
    first, last = idx[0]["weight"], idx[convs[-1]]["weight"]
    num_in_ch, num_feat = first.shape[1], first.shape[0]
    scale = math.isqrt(last.shape[0] // num_in_ch)
    if scale * scale * num_in_ch != last.shape[0]:
        _bad("SRVGGNetCompact", f"the last conv has {last.shape[0]} outputs, not {num_in_ch} * scale^2")
    if acts:
        act_type = "prelu"
    else:
        act_type = "relu"
        notes.append("activation not stored in the file: ReLU assumed (pass act_type='leakyrelu' if the "
                     "model was trained with LeakyReLU(0.1))")
    return dict(scale=scale, num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat, num_conv=n - 2,
                act_type=act_type)


def _msrresnet(sd: Mapping, notes: list) -> dict:
    num_feat = _w(sd, "conv_first").shape[0]
    r2 = _w(sd, "upconv1").shape[0] // num_feat
    if "upconv2.weight" in sd:
        scale = 4 if r2 == 4 else 0
    else:
        scale = {4: 2, 9: 3}.get(r2, 0)
    if not scale:
        _bad("MSRResNet", f"upconv1 has {_w(sd, 'upconv1').shape[0]} outputs for {num_feat} features "
             f"({'with' if 'upconv2.weight' in sd else 'without'} upconv2): not a x2, x3 or x4 model")
    return dict(scale=scale, num_in_ch=_w(sd, "conv_first").shape[1], num_out_ch=_w(sd, "conv_last").shape[0],
                num_feat=num_feat, num_block=_count(sd, r"body\.(\d+)\."))


def _pixel_shuffle_scale(arch: str, sd: Mapping, num_feat: int) -> int:
    stages = sorted(int(k.split(".")[1]) for k in sd if re.fullmatch(r"upsample\.\d+\.weight", k))
    ratios = [_w(sd, f"upsample.{i}").shape[0] // num_feat for i in stages]
    if ratios == [9]:
        return 3
    if ratios and all(r == 4 for r in ratios):
        return 2 ** len(ratios)
    _bad(arch, f"upsample convs have {[r * num_feat for r in ratios]} outputs for {num_feat} features: "
         "expected [4C] * n (x2^n) or [9C] (x3)")


def _edsr(sd: Mapping, notes: list) -> dict:
    num_feat = _w(sd, "conv_first").shape[0]
    res_scale = 0.1 if num_feat == 256 else 1.0
    notes.append(f"res_scale={res_scale} assumed ({'EDSR large' if num_feat == 256 else 'EDSR baseline'})")
    notes.append("img_range 255 and the DIV2K mean assumed (BasicSR defaults)")
    return dict(scale=_pixel_shuffle_scale("EDSR", sd, num_feat), num_feat=num_feat,
                num_block=_count(sd, r"body\.(\d+)\."), res_scale=res_scale,
                in_channels=_w(sd, "conv_first").shape[1], out_channels=_w(sd, "conv_last").shape[0])


def _rcan(sd: Mapping, notes: list) -> dict:
    num_feat = _w(sd, "conv_first").shape[0]
    squeeze = _w(sd, "body.0.residual_group.0.rcab.3.attention.1").shape[0]
    notes.append("res_scale=1.0 assumed")
    notes.append("img_range 255 and the DIV2K mean assumed (BasicSR defaults)")
    return dict(scale=_pixel_shuffle_scale("RCAN", sd, num_feat), num_feat=num_feat,
                num_group=_count(sd, r"body\.(\d+)\."),
                num_block=_count(sd, r"body\.0\.residual_group\.(\d+)\."),
                squeeze_factor=num_feat // squeeze, in_channels=_w(sd, "conv_first").shape[1],
                out_channels=_w(sd, "conv_last").shape[0])


_CONVERT = {"esrgan-old": _rrdb_from_esrgan_old, "esrgan": _rrdb_from_esrgan}
_PARSE = {"RRDBNet": _rrdbnet, "SRVGGNetCompact": _srvgg, "MSRResNet": _msrresnet, "EDSR": _edsr,
          "RCAN": _rcan}


def _fastsr_generator(metadata: Mapping, source: str) -> tuple[str, dict, int] | None:
    """``(name, kwargs, scale)`` of a fastsr generator file's metadata, None for other files
    (``scale`` 0 when the metadata gives none: the model's own is read after building it).

    Raises:
        CheckpointError: a fastsr file whose metadata builds no model
            (:func:`fastsr.models.checkpoint.generator_from_metadata`).
    """
    if metadata.get("format") != "fastsr" or "generator" not in metadata:
        return None
    name, kwargs, scale = generator_from_metadata(decode_metadata(dict(metadata)), source)
    kwargs.pop("fused", None)
    if scale is None:
        scale = kwargs.get("scale", 0)
    return name, kwargs, scale


def _check_tensors(sd: Mapping, source: str) -> None:
    """Parameter names as keys, no zero-size tensor (a damaged or placeholder file)."""
    check_tensor_dict(sd, source, UnknownCheckpointError)
    empty = [f"{k} {tuple(v.shape)}" for k, v in sd.items() if v.numel() == 0]
    if empty:
        raise UnknownCheckpointError(f"{source}: {len(empty)} zero-size tensor(s) ({', '.join(empty[:3])}"
                                     f"{', ...' if len(empty) > 3 else ''}): a damaged or placeholder checkpoint")


def detect(checkpoint: Mapping, metadata: Mapping | None = None, source: str = "<state dict>") -> tuple[Detected, dict]:
    """Recognise the architecture of a checkpoint's contents.

    Args:
        checkpoint: a state dict or a checkpoint dict around one (see :func:`read_checkpoint`).
        metadata: safetensors metadata (a fastsr generator file names its model there).
        source: name used in :attr:`Detected.source` and in error messages.

    Returns:
        ``(detected, state_dict)``: the record and the state dict with fastsr's (= BasicSR's)
        key names, ready for ``create(detected.architecture, **detected.params)``.

    Raises:
        UnknownCheckpointError: no supported architecture explains the keys (the message names
            the closest one, the keys that do not match it and the expected keys not found),
            the shapes do not fit the one detected, keys that are not strings, or
            zero-size tensors.
        CheckpointError: fastsr metadata that builds no model
            (:func:`fastsr.models.checkpoint.generator_from_metadata`).
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"detect: checkpoint must be a mapping (a state dict), got {type(checkpoint).__name__}")
    sd, wrapper = _unwrap(checkpoint)
    if not sd:
        raise UnknownCheckpointError(f"{source}: no tensors found (top-level keys: {sorted(map(str, checkpoint))[:10]})")
    _check_tensors(sd, source)
    spec = _fastsr_generator(metadata or {}, source)
    notes: list[str] = []
    if spec is not None:
        name, params, scale = spec
        return Detected(name, scale, params, "fastsr", wrapper, source, ()), sd
    try:
        arch, layout = _classify(sd)
    except UnknownCheckpointError as e:
        # a wrapper's attribute name in front of every key (``netG.``, ``generator.``, ...)
        prefix = {k.split(".", 1)[0] for k in sd}
        stripped = {k.split(".", 1)[1]: v for k, v in sd.items()} if len(prefix) == 1 and all(
            "." in k for k in sd) else None
        try:
            if stripped is None:
                raise e
            arch, layout = _classify(stripped)
        except UnknownCheckpointError:
            raise UnknownCheckpointError(f"{source}: {e}") from None
        sd, wrapper = stripped, f"{wrapper}+{prefix.pop()}." if wrapper else f"{prefix.pop()}."
    if layout in _CONVERT:
        sd = _CONVERT[layout](sd)
    try:
        params = _PARSE[arch](sd, notes)
    except UnknownCheckpointError as e:
        raise UnknownCheckpointError(f"{source}: {e}") from None
    except KeyError as e:
        raise UnknownCheckpointError(f"{source}: looks like {arch} ({layout} keys) but lacks {e}") from None
    except IndexError:
        raise UnknownCheckpointError(f"{source}: looks like {arch} ({layout} keys) but its tensors have too few "
                                     "dimensions for it") from None
    return Detected(arch, int(params["scale"]), params, layout, wrapper, source, tuple(notes)), sd


def load(checkpoint: str | os.PathLike | Mapping, fused: bool = True, device: str | torch.device = "cpu",
         **overrides) -> tuple[nn.Module, Detected]:
    """Build the fastsr model of a community (or fastsr) checkpoint and load its weights.

    Args:
        checkpoint: path of a ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` (read with
            ``torch.load(weights_only=True)``) or ``.safetensors`` file, or an in-memory
            state dict / checkpoint dict. See the module docstring for the architectures.
        fused: run fastsr's fused epilogues (same weights and outputs either way, up to
            float rounding).
        device: where the model goes.
        **overrides: constructor arguments replacing detected / assumed ones (e.g.
            ``act_type="leakyrelu"`` for a compact model, ``res_scale=0.1`` for EDSR).

    Returns:
        ``(model, detected)``: the model in eval mode with float32 parameters (float16 /
        bfloat16 files are upcast), mapping LR (N, C, H, W) in [0, 1] to SR
        (N, C, scale*H, scale*W) in about [0, 1]; and the :class:`Detected` record.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable file or bad suffix; an ``overrides`` name the model does not
            take.
        UnknownCheckpointError (a ValueError): unknown architecture (closest one and the
            unmatched keys named), keys that are not strings or zero-size tensors, or
            weights that do not fit the detected model.
        CheckpointError (a ValueError): a fastsr file whose metadata builds no model or
            whose ``scale`` metadata is not its model's.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        source = Path(checkpoint).name
        obj, metadata = read_checkpoint(checkpoint)
    elif isinstance(checkpoint, Mapping):
        source, obj, metadata = "<state dict>", checkpoint, {}
    else:
        raise TypeError(f"load: checkpoint must be a path or a state dict, got {type(checkpoint).__name__}")
    detected, sd = detect(obj, metadata, source)
    params = {**detected.params, **overrides}
    if overrides:
        detected = Detected(detected.architecture, int(params.get("scale", detected.scale)), params,
                            detected.layout, detected.wrapper, detected.source,
                            tuple(n for n in detected.notes if not any(k in n for k in overrides)))
    try:
        model = build_for_weights(lambda: create(detected.architecture, **params, fused=fused), sd, check_state_dict)
    except TypeError as e:
        raise ValueError(f"load: {detected.architecture} does not take these arguments: {e}") from None
    except ValueError as e:
        detail = "; ".join(str(e).splitlines())
        raise UnknownCheckpointError(f"{source}: detected {detected} but the weights do not fit: {detail}") from None
    try:
        load_state_dict(model, sd)
    except ValueError as e:
        detail = "; ".join(str(e).splitlines())
        raise UnknownCheckpointError(f"{source}: detected {detected} but the weights do not fit: {detail}") from None
    scale = model_scale(model, detected.scale or None, source)
    if scale != detected.scale:
        detected = dataclasses.replace(detected, scale=scale)
    return model.to(device).eval(), detected
