"""Model registry: ``create(name, **kwargs)``, ``list_models()``, ``register_model``, and
``check_kwargs`` for constructor arguments read from files and configs."""
from __future__ import annotations

import inspect
import numbers
from typing import Callable, Dict, List, Mapping

from torch import nn

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None):
    """Class/function decorator registering a model constructor under ``name`` (default: the
    class name). Raises ValueError if the name is taken."""

    def deco(obj):
        key = name or obj.__name__
        if key in _REGISTRY and _REGISTRY[key] is not obj:
            raise ValueError(f"register_model: a model named {key!r} is already registered")
        _REGISTRY[key] = obj
        return obj

    return deco


def list_models() -> List[str]:
    """Sorted names accepted by :func:`create`."""
    return sorted(_REGISTRY)


def create(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with constructor keyword arguments ``kwargs``.

    Names are case-sensitive class names (``"SRResNet"``, ``"RRDBNet"``, ...) or aliases
    (``"srgan_g"``, ``"esrgan"``); see :func:`list_models`.

    Raises:
        ValueError: unknown name (the message lists the available ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"create: unknown model {name!r}; available: {list_models()}")
    return _REGISTRY[name](**kwargs)


def _kind(default) -> tuple[str, Callable[[object], bool]] | None:
    """What a keyword whose default is ``default`` accepts: (description, test), or None
    (anything) for a default of another type or None."""
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, numbers.Integral):
        return "an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)
    if isinstance(default, numbers.Real):
        return "a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)
    if isinstance(default, str):
        return "a string", lambda v: isinstance(v, str)
    if isinstance(default, (tuple, list)):
        return "a list", lambda v: isinstance(v, (tuple, list))
    return None


#: integer keywords that count repeated blocks or layers: 0 is a valid (empty) body; every
#: other integer keyword with a positive default is a size (channels, features, kernel,
#: squeeze factor) and must be >= 1
_COUNTS = frozenset({"num_block", "num_blocks", "num_group", "num_conv", "num_rdb", "rdb_layers", "num_layers"})


def check_kwargs(name, kwargs: Mapping) -> None:
    """Check the constructor arguments of model ``name`` against its signature without
    building it -- for arguments read from a weight file's metadata or a config, whose
    mistakes should be named as such rather than surface from inside the constructor.

    Each value must have the type of the keyword's default: an integer (not a bool or a
    float) where the default is an int, a number where a float, a bool where a bool, a
    string where a string, a list where a tuple; keywords whose default is None take any
    value. An integer keyword with a positive default must be >= 1 (a size: channels,
    features, kernel) or, for the counts of repeated blocks (``num_block(s)``,
    ``num_group``, ``num_conv``, ...), >= 0. The constructor still checks the other values
    (scales, choices).

    Raises:
        ValueError: ``name`` is not a registered model (the message lists them); a size
            below 1 or a count below 0.
        TypeError: a keyword the constructor does not take (the message lists those it
            takes), or a value of another type.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    try:
        params = inspect.signature(_REGISTRY[name]).parameters
    except (TypeError, ValueError):  # a constructor without a readable signature: nothing to check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    taken = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key, value in kwargs.items():
        if key not in taken:
            raise TypeError(f"{name} takes no argument {key!r}; it takes: {', '.join(taken)}")
        default = params[key].default
        kind = _kind(default)
        if kind is not None and not kind[1](value):
            raise TypeError(f"{name}: {key} must be {kind[0]} (default {default!r}), got {value!r}")
        if kind is not None and kind[0] == "an integer" and default >= 1 and key != "scale":
            least = 0 if key in _COUNTS else 1
            if value < least:
                raise ValueError(f"{name}: {key} must be >= {least}, got {value}")
