"""Training configuration files: YAML recipes shipped in ``fastsr/configs``, defaults,
overrides.

A config is a nested dict. :func:`load_config` reads a recipe by name (``nonbn_wgan_x4``) or
path, deep-merges it over ``_defaults.yaml`` and applies ``key.sub=value`` overrides, whose
values are parsed as YAML (``train.lr_g=2e-4``, ``train.lr_steps=[1000,2000]``,
``model.discriminator=null``). Unknown keys are errors, except inside the free-form
sections listed in ``FREE_SECTIONS`` (model constructor kwargs, loss options).

The values are checked by :mod:`fastsr.train.schema` (:func:`check_config` here is its
entry point for dicts). Errors in the arguments of a constructor named by a free-form
section are reported by the builders, which pass them on unchanged.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable

import yaml

from fastsr.errors import ConfigError
from fastsr.train import schema
from fastsr.train.schema import COMPILE_MODES, CONFIG_DIR, OPTIMIZERS, PIXEL_LOSSES, compile_kwargs, parse

__all__ = ["ConfigError", "CONFIG_DIR", "list_configs", "load_config", "load_run_config", "apply_overrides", "merge",
           "dump_config", "check_config", "check_model", "check_data", "check_losses", "check_train", "check_int",
           "check_float", "check_choice", "compile_kwargs", "PIXEL_LOSSES", "OPTIMIZERS", "COMPILE_MODES"]

FREE_SECTIONS = ("model.generator", "model.discriminator", "loss.pixel", "loss.perceptual", "loss.texture",
                 "loss.gan", "loss.lr_consistency", "loss.checkerboard")

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
    overrides, and check every value (:func:`check_config`). A run folder's ``config.yaml``
    loads too, also one written by an earlier release (keys added since come from the
    defaults).

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


def load_run_config(run_dir, recipe: str, overrides: Iterable[str] = ()) -> dict | None:
    """The config a training run folder recorded (its ``config.yaml``: the recipe with the
    overrides the run was started or resumed with), with ``overrides`` on top; None when the
    folder holds no ``config.yaml``.

    Raises:
        ConfigError: the run was trained with another recipe than ``recipe`` (the message
            names both), or the file is not a valid config.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    cfg = load_config(str(path), overrides)
    if cfg["name"] != recipe:
        raise ConfigError(f"run folder {run_dir} was trained with config {cfg['name']!r}, not {recipe!r}")
    return cfg


def dump_config(cfg: dict) -> str:
    """``cfg`` as the YAML text of a run folder's ``config.yaml``."""
    return yaml.safe_dump(cfg, sort_keys=False)


def check_config(cfg: dict) -> None:
    """Every value check of a config (:func:`fastsr.train.schema.parse`); the numbers are
    stored back normalised (``int`` for counts and sizes, ``float`` for rates) and keys
    missing from ``cfg`` filled in from the defaults, so ``load_config``'s result is safe
    to use.

    Raises:
        ConfigError: an unknown key, or the first bad value, naming its key.
    """
    cfg.update(parse(cfg).raw)


# The per-section checks of earlier releases: the sections' values depend on each other
# (crop and scale, discriminator and GAN loss), so each is the whole check now.
check_model = check_data = check_losses = check_train = check_config


# The generic value checks of earlier releases, for code that checks keys of its own: the
# schema's rules applied to the value at a dotted key of a dict, stored back normalised.
def _at(cfg: dict, key: str):
    *parents, last = key.split(".")
    for part in parents:
        cfg = cfg[part]
    return cfg, last


def check_int(cfg: dict, key: str, minimum: int = 1, optional: bool = False) -> int | None:
    """The integer at dotted ``key``, at least ``minimum`` (``optional``: or null), stored back as an ``int``."""
    node, last = _at(cfg, key)
    if node[last] is None and optional:
        return None
    node[last] = schema._int(key, node[last], minimum, optional)
    return node[last]


def check_float(cfg: dict, key: str, low: float = 0.0, high: float = float("inf"), low_open: bool = False,
                high_open: bool = True, optional: bool = False) -> float | None:
    """The finite number at dotted ``key`` in the interval, stored back as a ``float``."""
    node, last = _at(cfg, key)
    if node[last] is None and optional:
        return None
    meta = {"low": low, "high": high, "low_open": low_open, "high_open": high_open}
    node[last] = schema._float(key, node[last], meta, optional)
    return node[last]


def check_choice(cfg: dict, key: str, choices: tuple) -> None:
    """The value at dotted ``key`` is one of ``choices``."""
    node, last = _at(cfg, key)
    schema._choice(key, node[last], tuple(choices))
