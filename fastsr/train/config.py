"""Training configuration: YAML recipes shipped in ``fastsr/configs``, defaults, overrides.

A config is a nested dict. :func:`load_config` reads a recipe by name (``nonbn_wgan_x4``) or
path, deep-merges it over ``_defaults.yaml`` and applies ``key.sub=value`` overrides, whose
values are parsed as YAML (``train.lr_g=2e-4``, ``train.lr_steps=[1000,2000]``,
``model.discriminator=null``). Unknown keys are errors, except inside the free-form
sections listed in ``FREE_SECTIONS`` (model constructor kwargs, loss options).

:func:`check_config` holds every check of the config's values (the trainer calls it before
building anything; the builders call the part of it for their section). Errors in the
arguments of a constructor named by a free-form section are reported by the builders,
which pass them on unchanged.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Iterable

import yaml

from fastsr.errors import ConfigError

__all__ = ["ConfigError", "CONFIG_DIR", "list_configs", "load_config", "apply_overrides", "merge",
           "dump_config", "check_config", "check_model", "check_data", "check_losses", "check_train", "check_int",
           "check_float", "check_choice", "compile_kwargs", "PIXEL_LOSSES",
           "OPTIMIZERS", "COMPILE_MODES"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
FREE_SECTIONS = ("model.generator", "model.discriminator", "loss.pixel", "loss.perceptual", "loss.texture",
                 "loss.gan", "loss.lr_consistency")

#: ``loss.pixel.type`` values
PIXEL_LOSSES = ("l1", "mse", "charbonnier", "ssim")
#: ``train.optimizer`` values
OPTIMIZERS = ("adam", "adamw", "rmsprop")
#: ``train.compile`` mode strings: torch.compile's ``mode`` values
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def list_configs() -> list[str]:
    """Names of the recipes shipped with fastsr."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def merge(base: dict, update: dict, _prefix: str = "", strict: bool = True) -> dict:
    """Deep-merge ``update`` into a copy of ``base``; unknown keys raise unless free-form."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = f"{_prefix}{k}"
        free = any(key == s or key.startswith(s + ".") for s in FREE_SECTIONS)
        if strict and k not in out and not free and _prefix.rstrip(".") not in FREE_SECTIONS:
            raise ConfigError(f"unknown config key {key!r}")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not free:
            out[k] = merge(out[k], v, key + ".", strict)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a copy of ``cfg``.

    Raises:
        ConfigError: malformed override or unknown key.
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        parts = key.split(".")
        node = cfg
        for i, p in enumerate(parts[:-1]):
            sub = ".".join(parts[: i + 1])
            if not isinstance(node.get(p), dict):
                if p in node and node[p] is None and sub in FREE_SECTIONS:
                    node[p] = {}
                else:
                    raise ConfigError(f"unknown config key {key!r} ({sub!r} is not a section)")
            node = node[p]
        parent = ".".join(parts[:-1])
        if parts[-1] not in node and parent not in FREE_SECTIONS:
            raise ConfigError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return cfg


def load_config(name_or_path: str, overrides: Iterable[str] = ()) -> dict:
    """Load a recipe by name (see :func:`list_configs`) or YAML path, with defaults and
    overrides, and check every value (:func:`check_config`).

    Raises:
        ConfigError: unknown recipe (the message lists the shipped ones), bad YAML, bad key,
            bad value (the message names the key, the value and what is allowed).
    """
    path = Path(name_or_path)
    if not path.is_file():
        cand = CONFIG_DIR / f"{name_or_path}.yaml"
        if not cand.is_file():
            raise ConfigError(f"config {name_or_path!r} is neither a file nor a shipped recipe "
                              f"({', '.join(list_configs())})")
        path = cand
    cfg = apply_overrides(merge(_read_yaml(CONFIG_DIR / "_defaults.yaml"), _read_yaml(path)), overrides)
    check_config(cfg)
    return cfg


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


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


def check_model(cfg: dict) -> None:
    """``model``: a generator name; a discriminator name when there is one; ``init``.

    Raises:
        ConfigError: the first bad value, naming its key.
    """
    m = cfg["model"]
    if not isinstance(m.get("generator"), dict) or "name" not in m["generator"]:
        raise ConfigError("model.generator.name is required")
    if m.get("discriminator") and "name" not in m["discriminator"]:
        raise ConfigError("model.discriminator.name is required")
    if m.get("init", "default") not in ("default", "normal"):
        raise ConfigError(f"model.init must be 'default' or 'normal', got {m.get('init')!r}")
    if m.get("fused") is not None:
        check_choice(cfg, "model.fused", (True, False))


def check_losses(cfg: dict) -> None:
    """``loss``: the pixel and GAN loss types, at least one loss, a GAN loss exactly
    when there is a discriminator, and ``lr_consistency`` only as ``{weight: w >= 0}`` with
    the bicubic degradation at a scale >= 2.

    Raises:
        ConfigError: the first bad value, naming its key.
    """
    loss, has_d = cfg["loss"], bool(cfg["model"].get("discriminator"))
    pixel, gan = loss.get("pixel"), loss.get("gan")
    if pixel and pixel.get("type", "l1") not in PIXEL_LOSSES:
        raise ConfigError(f"loss.pixel.type must be one of {sorted(PIXEL_LOSSES)}, got {pixel.get('type')!r}")
    if gan:
        gan_loss_key(gan.get("type"))
    if gan and not has_d:
        raise ConfigError("loss.gan is set but model.discriminator is null")
    if has_d and not gan:
        raise ConfigError("model.discriminator is set but loss.gan is null")
    if not pixel and not loss.get("perceptual") and not loss.get("texture") and not gan:
        raise ConfigError("no loss configured (loss.pixel, loss.perceptual, loss.texture, loss.gan all null)")
    cons = loss.get("lr_consistency")
    if cons:
        if not isinstance(cons, dict) or set(cons) - {"weight"}:
            raise ConfigError(f"loss.lr_consistency must be null or {{weight: w}}, got {cons!r}")
        w = cons.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ConfigError(f"loss.lr_consistency.weight must be a number >= 0, got {w!r}")
        if cfg["data"].get("degradation", "bicubic") != "bicubic" or int(cfg["scale"]) < 2:
            raise ConfigError("loss.lr_consistency needs data.degradation: bicubic and scale >= 2 (it compares "
                              f"the bicubic-downsampled SR with the LR), got {cfg['data'].get('degradation')!r} "
                              f"at scale {cfg['scale']}")


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


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _put(cfg: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def _value_and_number(cfg: dict, key: str):
    """The raw value at dotted ``key`` and its numeric reading (None when not a number)."""
    value = _get(cfg, key)
    return value, _number(value)


def check_int(cfg: dict, key: str, minimum: int = 1, optional: bool = False) -> int | None:
    """The integer at dotted ``key`` of ``cfg``, at least ``minimum``; stored back as an
    ``int`` (``1e5`` and ``100000.0`` are accepted, ``2.5`` is not). ``optional`` allows null.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    value, num = _value_and_number(cfg, key)
    if value is None and optional:
        return None
    if num is None or not math.isfinite(num) or num != int(num) or num < minimum:
        allowed = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum,
                                                                            f"an integer >= {minimum}")
        raise ConfigError(f"{key} must be {allowed}{' or null' if optional else ''}, got {value!r}")
    _put(cfg, key, int(num))
    return int(num)


def check_float(cfg: dict, key: str, low: float = 0.0, high: float = math.inf, low_open: bool = False,
                high_open: bool = True, optional: bool = False) -> float | None:
    """The finite number at dotted ``key`` of ``cfg`` in the interval from ``low`` to ``high``
    (open or closed at each end); stored back as a ``float``. ``optional`` allows null.

    Raises:
        ConfigError: naming the key, the value and the allowed interval.
    """
    value, num = _value_and_number(cfg, key)
    if value is None and optional:
        return None
    ok = num is not None and math.isfinite(num) and (num > low if low_open else num >= low) and \
        (num < high if high_open else num <= high)
    if not ok:
        if math.isinf(high):
            interval = f"{'>' if low_open else '>='} {low:g}"
        else:
            interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{key} must be a finite number {interval}{' or null' if optional else ''}, "
                          f"got {value!r}")
    _put(cfg, key, float(num))
    return float(num)


def check_choice(cfg: dict, key: str, choices: tuple) -> None:
    """The value at dotted ``key`` is one of ``choices``.

    Raises:
        ConfigError: naming the key, the value and the choices.
    """
    value = _get(cfg, key)
    ok = any(value is c if isinstance(c, bool) else (not isinstance(value, bool) and value == c) for c in choices)
    if not ok:
        shown = ", ".join("true" if c is True else "false" if c is False else str(c) for c in choices)
        raise ConfigError(f"{key} must be one of {shown}, got {value!r}")


def check_data(cfg: dict) -> None:
    """``scale`` and ``data``: positive integer scale, crop size (a multiple of the scale),
    batch size and blur factor; non-negative worker count; the degradation, the small-image
    policy and the flags.

    Raises:
        ConfigError: the first bad value, naming its key.
    """
    scale = check_int(cfg, "scale")
    crop = check_int(cfg, "data.crop_size")
    if crop % scale:
        raise ConfigError(f"data.crop_size must be a multiple of scale={scale}, got {crop}")
    check_int(cfg, "data.batch_size")
    check_int(cfg, "data.num_workers", minimum=0)
    check_int(cfg, "data.blur_factor")
    check_int(cfg, "data.val_max_images", optional=True)
    check_int(cfg, "data.val_max_side", optional=True)
    check_choice(cfg, "data.degradation", ("bicubic", "bicubic_blur"))
    check_choice(cfg, "data.small_images", ("pad", "skip", "error"))
    for key in ("data.augment", "data.cache"):
        check_choice(cfg, key, (True, False))


def check_train(cfg: dict) -> None:
    """``train``: iteration counts, the discriminator schedule, the optimiser (finite
    positive learning rates, betas in [0, 1), milestones), ``ema_decay`` in [0, 1), the speed
    options (``bf16``, ``compile``, ``cuda_graph`` and the combinations of them that cannot
    work; the device-dependent part of ``cuda_graph`` is checked by
    :func:`fastsr.train.builders.resolve_cuda_graph`, ...) and the ``log`` intervals (positive integers).

    Raises:
        ConfigError: the first bad value, naming its key.
    """
    t = cfg["train"]
    check_int(cfg, "train.iters")
    check_int(cfg, "train.pretrain_iters", minimum=0)
    check_int(cfg, "train.d_steps")
    check_int(cfg, "train.seed", minimum=0)
    if t.get("d_joint_batch", "auto") not in ("auto", True, False):
        raise ConfigError(f"train.d_joint_batch must be auto, true or false, got {t.get('d_joint_batch')!r}")
    if not isinstance(t.get("bf16", "auto"), bool) and t.get("bf16", "auto") != "auto":
        raise ConfigError(f"train.bf16 must be true, false or auto, got {t.get('bf16')!r}")
    if t.get("optimizer", "adam") not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer must be adam, adamw or rmsprop, got {t.get('optimizer')!r}")
    check_float(cfg, "train.lr_g", low_open=True)
    check_float(cfg, "train.lr_d", low_open=True)
    check_float(cfg, "train.weight_decay")
    check_float(cfg, "train.lr_gamma", low_open=True)
    check_float(cfg, "train.ema_decay", high=1.0, optional=True)
    check_float(cfg, "train.grad_clip", optional=True)
    betas = t.get("betas")
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ConfigError(f"train.betas must be a list of two numbers in [0, 1), got {betas!r}")
    t["betas"] = list(betas)
    for i in range(2):
        b = _number(betas[i])
        if b is None or not 0 <= b < 1:
            raise ConfigError(f"train.betas must be a list of two numbers in [0, 1), got {betas!r}")
        t["betas"][i] = b
    steps = t.get("lr_steps") or []
    if not isinstance(steps, (list, tuple)) or any(
            _number(s) is None or _number(s) != int(_number(s)) or _number(s) < 0 for s in steps):
        raise ConfigError(f"train.lr_steps must be a list of non-negative integers (iterations), got {steps!r}")
    t["lr_steps"] = [int(_number(s)) for s in steps]
    for key in ("train.fused_optimizer", "train.tune_allocator", "train.deterministic"):
        if _get(cfg, key) is not None:
            check_choice(cfg, key, (True, False))
    if _get(cfg, "train.channels_last") is not None:
        check_choice(cfg, "train.channels_last", (True, False, "auto"))
    ckw = compile_kwargs(t.get("compile"))
    graph = t.get("cuda_graph", "auto")
    if not (isinstance(graph, bool) or graph == "auto"):
        raise ConfigError(f"train.cuda_graph must be auto, true or false, got {graph!r}")
    if graph is True and ckw is not None:
        raise ConfigError("train.cuda_graph is true but train.compile is on: a replayed CUDA graph skips "
                          "torch.compile's guards; set one of them to false (or cuda_graph to auto)")
    if graph is True and t.get("optimizer", "adam") not in ("adam", "adamw"):
        raise ConfigError(f"train.cuda_graph is true but train.optimizer is {t.get('optimizer')!r}: only adam and "
                          "adamw are built capturable; use auto or false")
    for key in ("log.every", "log.val_every", "log.save_every"):
        check_int(cfg, key)
    check_choice(cfg, "log.keep_weights", (True, False))


def compile_kwargs(value) -> dict | None:
    """The torch.compile keyword arguments a ``train.compile`` value stands for: ``None``
    (no compile) for ``false``, unset or an empty dict (every false value is off, as the
    trainer's ``bool(train.compile)`` reads it), ``{}`` (torch.compile's defaults) for
    ``true``, ``{"mode": value}`` for a mode string of :data:`COMPILE_MODES`, a copy of a
    non-empty dict of torch.compile arguments.

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
        return dict(value)  # checked by torch.compile itself (fastsr.train.builders.compile_models)
    raise ConfigError(
        f"train.compile must be true, false, a mode ({', '.join(COMPILE_MODES)}) "
        f"or a dict of torch.compile arguments, got {value!r}"
    )


def check_config(cfg: dict) -> None:
    """Every value check of a config (:func:`check_model`, :func:`check_data`,
    :func:`check_losses`, :func:`check_train`); numbers are stored back normalised (``int``
    for counts and sizes, ``float`` for rates), so ``load_config``'s result is safe to use.

    Raises:
        ConfigError: the first bad value, naming its key.
    """
    check_model(cfg)
    check_data(cfg)
    check_losses(cfg)
    check_train(cfg)
