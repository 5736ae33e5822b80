"""The training config as typed records, and every check of its values.

A config (a nested dict, :mod:`fastsr.train.config`) becomes a :class:`Config` through
:func:`parse`: each value is checked once, by its field's type here -- counts are integers
with a minimum, rates finite numbers in an interval, choices ``Literal`` types, loss
sections :class:`LossTerm` records -- and a bad one is a :class:`ConfigError` naming its
dotted key, the value and what is allowed. The defaults live in ``configs/_defaults.yaml``
alone: :func:`parse` merges the config over them, so no default is restated in code.

:func:`resolve` then turns the ``auto`` settings into decisions for one device and the
built models, each computed once into a :class:`Resolved` record: ``bf16``,
``channels_last``, ``cuda_graph`` (with the reason when off) and ``d_joint_batch``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from fastsr.errors import ConfigError
from fastsr.perf import native_bf16

__all__ = ["Config", "ModelConfig", "DataConfig", "LossConfig", "LossTerm", "TrainConfig", "LogConfig", "Resolved",
           "parse", "resolve", "check_key", "check_value", "spec", "defaults", "compile_kwargs", "gan_loss_key", "native_bf16",
           "resolve_bf16", "resolve_channels_last", "resolve_cuda_graph", "cuda_graph_blockers", "PIXEL_LOSSES",
           "OPTIMIZERS", "COMPILE_MODES", "CONFIG_DIR"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

#: ``loss.pixel.type`` values
PIXEL_LOSSES = ("l1", "mse", "charbonnier", "ssim")
#: ``train.optimizer`` values
OPTIMIZERS = ("adam", "adamw", "rmsprop")
#: ``train.compile`` mode strings: torch.compile's ``mode`` values
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: optimisers fastsr builds ``capturable`` (what a CUDA graph of an iteration needs)
CAPTURABLE_OPTIMIZERS = ("adam", "adamw")

Auto = Literal["auto", True, False]


def spec(*, low: float | None = None, high: float = math.inf, low_open: bool = False, high_open: bool = True,
         check=None, store: bool = True):
    """A field's constraints: ``low`` (an int field's minimum, a float field's lower end),
    ``high``, the open ends, or a ``check(key, value)`` of its own; ``store``: write the
    normalised value back into the config dict."""
    return field(metadata={"low": low, "high": high, "low_open": low_open, "high_open": high_open,
                           "check": check, "store": store})


# ---------------------------------------------------------------------------- value checks
def _number(value):
    """``value`` as a float when it is a number or a string of one (YAML 1.1 reads ``1e-4``
    as a string), else None; booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _int(key: str, value, minimum: int, optional: bool) -> int:
    num = _number(value)
    if num is None or not math.isfinite(num) or num != int(num) or num < minimum:
        allowed = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ConfigError(f"{key} must be {allowed}{' or null' if optional else ''}, got {value!r}")
    return int(num)


def _seed(key: str, value) -> int:
    """``train.seed``: an integer in [0, 2**63) (torch.manual_seed takes a signed 64-bit seed),
    kept exact (not through a float)."""
    v = value if isinstance(value, int) and not isinstance(value, bool) else _int(key, value, 0, False)
    if not 0 <= v < 2**63:
        raise ConfigError(f"{key} must be an integer in [0, 2**63) (torch's seed is a signed 64-bit integer), "
                          f"got {value!r}")
    return v


def _float(key: str, value, meta: dict, optional: bool) -> float:
    low, high, low_open, high_open = meta["low"] or 0.0, meta["high"], meta["low_open"], meta["high_open"]
    num = _number(value)
    ok = num is not None and math.isfinite(num) and (num > low if low_open else num >= low) and \
        (num < high if high_open else num <= high)
    if not ok:
        if math.isinf(high):
            interval = f"{'>' if low_open else '>='} {low:g}"
        else:
            interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{key} must be a finite number {interval}{' or null' if optional else ''}, got {value!r}")
    return float(num)


def _choice(key: str, value, choices: tuple):
    ok = any(value is c if isinstance(c, bool) else (not isinstance(value, bool) and value == c) for c in choices)
    if not ok:
        shown = ", ".join("true" if c is True else "false" if c is False else str(c) for c in choices)
        raise ConfigError(f"{key} must be one of {shown}, got {value!r}")
    return value


def _split_optional(hint):
    """``(base type, optional)`` of a field's type hint (``int | None`` -> ``(int, True)``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), len(args) < len(typing.get_args(hint))
    return hint, False


def check_value(key: str, value, hint, meta: dict):
    """``value`` of the config field ``key`` (type ``hint``, constraints ``meta`` of
    :func:`spec`), checked and normalised: the one check every config value goes through.

    Raises:
        ConfigError: naming ``key``, the value and what is allowed.
    """
    base, optional = _split_optional(hint)
    if meta.get("check") is not None:
        return meta["check"](key, value)
    if value is None and optional:
        return None
    if base is bool:
        return _choice(key, value, (True, False))
    if typing.get_origin(base) is Literal:
        return _choice(key, value, typing.get_args(base))
    if base is int:
        return _int(key, value, 1 if meta.get("low") is None else int(meta["low"]), optional)
    if base is float:
        return _float(key, value, meta, optional)
    if base is str and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _read(cls, raw: dict, prefix: str = ""):
    """A ``cls`` record of the section ``raw``: every field checked (:func:`check_value`), the
    number fields written back normalised (``int`` counts, ``float`` rates)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'a config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}{f.name}"
        if f.name not in raw:
            raise ConfigError(f"{key} is required")
        if is_dataclass(hints[f.name]):
            values[f.name] = _read(hints[f.name], raw[f.name], key + ".")
            continue
        values[f.name] = check_value(key, raw[f.name], hints[f.name], dict(f.metadata))
        if f.metadata.get("store", True) and isinstance(values[f.name], (int, float, tuple, list)) \
                and not isinstance(values[f.name], bool):
            raw[f.name] = list(values[f.name]) if isinstance(values[f.name], tuple) else values[f.name]
    return cls(**values)


# ---------------------------------------------------------------------------- special fields
def _model_spec(key: str, value, required: bool = True):
    if not value and not required:
        return None
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{key}.name is required")
    return dict(value)


def _betas(key: str, value):
    bad = ConfigError(f"{key} must be a list of two numbers in [0, 1), got {value!r}")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise bad
    nums = [_number(b) for b in value]
    if any(b is None or not 0 <= b < 1 for b in nums):
        raise bad
    return tuple(nums)


def _milestones(key: str, value):
    steps = value or []
    if not isinstance(steps, (list, tuple)) or any(
            _number(s) is None or _number(s) != int(_number(s)) or _number(s) < 0 for s in steps):
        raise ConfigError(f"{key} must be a list of non-negative integers (iterations), got {value!r}")
    return [int(_number(s)) for s in steps]


def compile_kwargs(value) -> dict | None:
    """The torch.compile keyword arguments a ``train.compile`` value stands for: ``None``
    (no compile) for ``false``, unset or an empty dict, ``{}`` (torch.compile's defaults)
    for ``true``, ``{"mode": value}`` for a mode string of :data:`COMPILE_MODES`, a copy of
    a non-empty dict of torch.compile arguments (checked by torch.compile itself).

    Raises:
        ConfigError: any other value, naming ``train.compile`` and the accepted values.
    """
    if value is None or value is False or (isinstance(value, dict) and not value):
        return None
    if value is True:
        return {}
    if isinstance(value, str) and value in COMPILE_MODES:
        return {"mode": value}
    if isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"train.compile must be true, false, a mode ({', '.join(COMPILE_MODES)}) "
                      f"or a dict of torch.compile arguments, got {value!r}")


def gan_loss_key(kind) -> str:
    """``loss.gan.type`` -> the key of ``fastsr.losses.GAN_LOSSES`` (case and ``_``/``-``
    insensitive).

    Raises:
        ConfigError: an unknown kind (the message lists the known ones).
    """
    from fastsr.losses import GAN_LOSSES

    key = kind.lower().replace("_", "-") if isinstance(kind, str) else kind
    if key not in GAN_LOSSES:
        raise ConfigError(f"loss.gan.type must be one of {sorted(GAN_LOSSES)}, got {kind!r}")
    return key


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class LossTerm:
    """One loss section: ``weight`` (the factor the step applies), ``type`` (pixel: one of
    :data:`PIXEL_LOSSES`, GAN: a key of ``fastsr.losses.GAN_LOSSES``; None for the others)
    and ``kwargs``, the constructor arguments of its class (checked by the constructor)."""

    weight: float
    kwargs: dict
    type: str | None = None

    #: a section's weight when it names none (``loss.gan``: SRGAN's 1e-3)
    DEFAULT_WEIGHTS: typing.ClassVar[dict] = {"pixel": 1.0, "perceptual": 1.0, "texture": 1.0,
                                             "lr_consistency": 1.0, "checkerboard": 1.0, "gan": 1e-3}


def _term(kind: str):
    """The check of the loss section ``kind`` (null or false: no such term)."""
    def check(key: str, value):
        if not value:
            return None
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be null or a mapping {{weight: w, ...}}, got {value!r}")
        kw = dict(value)
        if kind == "lr_consistency" and set(kw) - {"weight"}:
            raise ConfigError(f"{key} must be null or {{weight: w}}, got {value!r}")
        if kind == "checkerboard" and set(kw) - {"weight", "block", "max_gradient"}:
            raise ConfigError(f"{key} must be null or {{weight: w, block: b, max_gradient: g}}, got {value!r}")
        weight = kw.pop("weight", LossTerm.DEFAULT_WEIGHTS[kind])
        if _number(weight) is None or not math.isfinite(_number(weight)) or _number(weight) < 0:
            raise ConfigError(f"{key}.weight must be a number >= 0, got {weight!r}")
        kind_key = None
        if kind == "pixel":
            kind_key = _choice(f"{key}.type", kw.pop("type", "l1"), PIXEL_LOSSES)
        elif kind == "gan":
            kind_key = gan_loss_key(kw.pop("type", None))
        return LossTerm(float(_number(weight)), kw, kind_key)
    return check


@dataclass(frozen=True)
class ModelConfig:
    generator: dict = spec(check=_model_spec)
    discriminator: dict | None = spec(check=lambda key, v: _model_spec(key, v, required=False))
    init: Literal["default", "normal"] = spec()
    icnr: bool = spec()
    fused: bool = spec()


@dataclass(frozen=True)
class DataConfig:
    crop_size: int = spec()
    batch_size: int = spec()
    num_workers: int = spec(low=0)
    degradation: Literal["bicubic", "bicubic_blur"] = spec()
    blur_factor: int = spec()
    augment: bool = spec()
    small_images: Literal["pad", "skip", "error"] = spec()
    cache: bool = spec()
    val_max_images: int | None = spec()
    val_max_side: int | None = spec()


@dataclass(frozen=True)
class LossConfig:
    pixel: LossTerm | None = spec(check=_term("pixel"), store=False)
    perceptual: LossTerm | None = spec(check=_term("perceptual"), store=False)
    texture: LossTerm | None = spec(check=_term("texture"), store=False)
    lr_consistency: LossTerm | None = spec(check=_term("lr_consistency"), store=False)
    checkerboard: LossTerm | None = spec(check=_term("checkerboard"), store=False)
    gan: LossTerm | None = spec(check=_term("gan"), store=False)


@dataclass(frozen=True)
class TrainConfig:
    iters: int = spec()
    pretrain_iters: int = spec(low=0)
    d_steps: int = spec()
    d_joint_batch: Auto = spec()
    d_shift: int = spec(low=0)
    optimizer: Literal["adam", "adamw", "rmsprop"] = spec()
    lr_g: float = spec(low_open=True)
    lr_d: float = spec(low_open=True)
    betas: tuple = spec(check=_betas)
    weight_decay: float = spec()
    lr_steps: list = spec(check=_milestones)
    lr_gamma: float = spec(low_open=True)
    ema_decay: float | None = spec(high=1.0)
    grad_clip: float | None = spec()
    bf16: Auto = spec()
    channels_last: Auto = spec()
    fused_optimizer: bool | None = spec()
    tune_allocator: bool | None = spec()
    winograd: bool | None = spec()
    compile: dict | None = spec(check=lambda key, v: compile_kwargs(v), store=False)
    cuda_graph: Auto = spec()
    seed: int = spec(check=_seed)
    deterministic: bool | None = spec()


@dataclass(frozen=True)
class LogConfig:
    every: int = spec()
    val_every: int = spec()
    save_every: int = spec()
    keep_weights: bool = spec()


def _run_name(key: str, value) -> str:
    """A recipe's ``name``: the default run folder ``runs/<name>``, so one plain folder name
    (no path separator, not ``.`` / ``..``, no leading ``.``): an absolute or ``../`` name
    would train, and ``--overwrite`` delete, outside ``runs/``."""
    if (not isinstance(value, str) or not value or "/" in value or "\\" in value or "\0" in value
            or value.startswith(".")):
        raise ConfigError(f"{key} must be a plain folder name (the default run folder runs/<name>: no '/', "
                          f"'\\' or leading '.'), got {value!r}")
    return value


@dataclass(frozen=True)
class Config:
    """A checked config (:func:`parse`); ``raw`` is its normalised dict (what
    ``config.yaml`` of a run holds, and the free-form sections' source)."""

    name: str = spec(check=_run_name)
    scale: int = spec()
    model: ModelConfig = spec()
    data: DataConfig = spec()
    loss: LossConfig = spec()
    train: TrainConfig = spec()
    log: LogConfig = spec()
    raw: dict = field(default_factory=dict, repr=False, compare=False, metadata={"internal": True})


# ---------------------------------------------------------------------------- parse
@functools.lru_cache(maxsize=1)
def _defaults_text() -> str:
    return (CONFIG_DIR / "_defaults.yaml").read_text()


def defaults() -> dict:
    """A fresh copy of ``configs/_defaults.yaml``, the one home of every default."""
    return yaml.safe_load(_defaults_text())


def _cross_check(c: Config) -> None:
    """The checks between values: the crop a multiple of the scale and larger than
    ``train.d_shift``, a GAN loss exactly when
    there is a discriminator, some loss, lr_consistency's degradation, and
    ``cuda_graph: true`` only with settings it works with (:func:`cuda_graph_blockers`)."""
    if c.data.crop_size % c.scale:
        raise ConfigError(f"data.crop_size must be a multiple of scale={c.scale}, got {c.data.crop_size}")
    if c.train.d_shift >= c.data.crop_size:
        raise ConfigError(f"train.d_shift must be below data.crop_size={c.data.crop_size} (the offsets it draws "
                          f"are 0 .. d_shift-1 px), got {c.train.d_shift}")
    loss, has_d = c.loss, c.model.discriminator is not None
    if loss.gan and not has_d:
        raise ConfigError("loss.gan is set but model.discriminator is null")
    if has_d and not loss.gan:
        raise ConfigError("model.discriminator is set but loss.gan is null")
    if not (loss.pixel or loss.perceptual or loss.texture or loss.gan):
        raise ConfigError("no loss configured (loss.pixel, loss.perceptual, loss.texture, loss.gan all null)")
    if loss.checkerboard and c.scale < 2:
        raise ConfigError(f"loss.checkerboard needs scale >= 2 (the period of the pattern), got {c.scale}")
    if loss.lr_consistency and (c.data.degradation != "bicubic" or c.scale < 2):
        raise ConfigError("loss.lr_consistency needs data.degradation: bicubic and scale >= 2 (it compares "
                          f"the bicubic-downsampled SR with the LR), got {c.data.degradation!r} at scale {c.scale}")
    if c.train.cuda_graph is True:
        blockers = cuda_graph_blockers(None, compiled=c.train.compile is not None, optimizer=c.train.optimizer)
        if blockers:
            raise ConfigError(f"train.cuda_graph is true but {'; '.join(blockers)}: use auto or false")


def parse(cfg: dict | Config) -> Config:
    """The typed, checked :class:`Config` of a config dict (merged over the defaults; a
    :class:`Config` is returned as is). ``cfg`` itself is left unchanged.

    Raises:
        ConfigError: an unknown key, or the first bad value, naming its key.
    """
    if isinstance(cfg, Config):
        return cfg
    from fastsr.train.config import merge

    raw = merge(defaults(), cfg)
    config = dataclasses.replace(_read(Config, raw), raw=raw)
    _cross_check(config)
    return config


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "train": TrainConfig, "log": LogConfig}


def check_key(key: str, value) -> Any:
    """``value`` checked (and normalised) as the dotted config ``key``, by the same field
    check :func:`parse` applies to it (e.g. ``check_key("train.bf16", "yes")`` raises).

    Raises:
        ConfigError: a bad value, naming ``key``; KeyError: not a key of the schema.
    """
    section, _, name = key.rpartition(".")
    cls = _SECTIONS[section] if section else Config
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(key)
    return check_value(key, copy.deepcopy(value), typing.get_type_hints(cls)[name], dict(f.metadata))


# ---------------------------------------------------------------------------- resolve
def resolve_bf16(setting, device) -> bool:
    """``train.bf16`` -> on/off: ``true``/``false`` force it, ``"auto"`` = :func:`native_bf16`.

    Raises:
        ConfigError: any other value.
    """
    return _bf16(check_key("train.bf16", setting), device)


def _bf16(setting, device) -> bool:
    return native_bf16(device) if setting == "auto" else setting


def resolve_channels_last(setting, device, bf16: bool) -> bool:
    """``train.channels_last`` -> on/off: ``true``/``false`` force it; ``"auto"`` = on for CUDA
    (cuDNN's NHWC convolutions) and, on a CPU, only together with bf16 autocast. Measured on
    the 2-core CPUs of this project (one GAN iteration, batch 16, 96 px): fused fp32 NCHW 2.349
    s vs channels_last 2.394 s on an AMD EPYC with AVX512-BF16 (fp32 NHWC 2 % slower; with bf16
    NHWC is the fast layout, 1.58 s), and NHWC 9 % slower in fp32 on an Intel Xeon without bf16.

    Raises:
        ConfigError: any value other than true, false, auto.
    """
    return _channels_last(check_key("train.channels_last", setting), device, bf16)


def _channels_last(setting, device, bf16: bool) -> bool:
    if setting == "auto":
        return torch.device(device).type == "cuda" or bool(bf16)
    return setting


def cuda_graph_blockers(device, *, distributed: bool = False, compiled: bool = False, optimizer: str = "adam",
                        models=()) -> list[str]:
    """Why a training iteration cannot be captured as a CUDA graph (empty: it can).

    * ``device`` is not CUDA (graphs are a CUDA feature; None: not known yet, not checked);
    * several processes: DDP all-reduces gradients from autograd hooks with host-side
      bucket bookkeeping, which a captured backward does not replay;
    * ``train.compile`` on: torch.compile's guards run Python on every call, outside
      anything a replay repeats (its ``mode="reduce-overhead"`` brings its own graphs);
    * ``train.optimizer`` not adam or adamw, which fastsr builds ``capturable`` (their step
      counters and bias corrections live on the device); rmsprop is torch's plain RMSprop,
      whose capturable mode fastsr does not set up or test;
    * a module of ``models`` sets ``data_dependent_control_flow = True`` (a forward that
      branches on tensor values records only the branch taken at capture; none of
      fastsr's models does).
    """
    reasons = []
    if device is not None and torch.device(device).type != "cuda":
        reasons.append(f"the device is {torch.device(device).type}, CUDA graphs need a CUDA device")
    if distributed:
        reasons.append("training runs in several processes (DDP)")
    if compiled:
        reasons.append("train.compile is on")
    if optimizer not in CAPTURABLE_OPTIMIZERS:
        reasons.append(f"train.optimizer is {optimizer} (only adam and adamw are built capturable)")
    dynamic = [type(m).__name__ for root in models if root is not None for m in root.modules()
               if getattr(m, "data_dependent_control_flow", False)]
    if dynamic:
        reasons.append(f"{dynamic[0]} has data-dependent control flow")
    return reasons


def resolve_cuda_graph(setting, device, *, distributed: bool = False, compiled: bool = False,
                       optimizer: str = "adam", models=()) -> bool:
    """``train.cuda_graph`` -> on/off: whether each training phase's iteration is captured
    and replayed as a CUDA graph (:class:`fastsr.graphs.GraphedStep`). ``"auto"`` = on
    when nothing blocks it (:func:`cuda_graph_blockers`), ``True`` forces it on and
    ``False`` off.

    Raises:
        ConfigError: ``True`` where it cannot work, naming ``train.cuda_graph`` and the
            reasons; any value other than true, false, auto.
    """
    return _cuda_graph(check_key("train.cuda_graph", setting), device, distributed=distributed, compiled=compiled,
                       optimizer=optimizer, models=models)


def _cuda_graph(setting, device, **blockers) -> bool:
    if setting is False:
        return False
    reasons = cuda_graph_blockers(device, **blockers)
    if setting is True and reasons:
        raise ConfigError(f"train.cuda_graph is true but {'; '.join(reasons)}: use auto or false")
    return not reasons


@dataclass(frozen=True)
class Resolved:
    """The ``auto`` settings of a :class:`Config` decided for one device and the built
    models (:func:`resolve`): ``bf16`` autocast, ``channels_last``, ``cuda_graph`` (and
    ``cuda_graph_off``: why not, empty when on or forced off), ``d_joint_batch`` (real and
    fake through the discriminator in one batch: by default when it has BatchNorm)."""

    device: torch.device
    bf16: bool
    channels_last: bool
    cuda_graph: bool
    d_joint_batch: bool
    distributed: bool = False
    cuda_graph_off: tuple = ()

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def resolve(config: Config | dict, device, *, distributed: bool = False, models=()) -> Resolved:
    """Each ``auto`` of ``config`` decided once for ``device``: ``models`` are the built
    ``(G, D)`` (D None without a discriminator), whose BatchNorm layers decide
    ``d_joint_batch: auto`` and whose control flow enters ``cuda_graph: auto``.

    Raises:
        ConfigError: ``train.cuda_graph: true`` where it cannot work.
    """
    c, dev = parse(config), torch.device(device)
    bf16 = _bf16(c.train.bf16, dev)
    D = models[1] if len(models) > 1 else None
    has_bn = D is not None and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())
    blockers = dict(distributed=distributed, compiled=c.train.compile is not None, optimizer=c.train.optimizer,
                    models=models)
    graph = _cuda_graph(c.train.cuda_graph, dev, **blockers)
    off = () if graph or c.train.cuda_graph is False else tuple(cuda_graph_blockers(dev, **blockers))
    joint = has_bn if c.train.d_joint_batch == "auto" else c.train.d_joint_batch
    return Resolved(dev, bf16, _channels_last(c.train.channels_last, dev, bf16), graph, bool(joint), distributed,
                    off)
