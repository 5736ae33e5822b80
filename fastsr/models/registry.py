"""Model registry: ``create(name, **kwargs)``, ``list_models()``, ``register_model``."""
from __future__ import annotations

from typing import Callable, Dict, List

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
