"""Old import paths of names that moved: they keep working for one release and warn."""
from __future__ import annotations

import importlib
import warnings


def moved_names(old_module: str, moved: dict[str, str], instead: dict[str, str] | None = None):
    """A module ``__getattr__`` serving ``moved`` (old name -> ``"new.module:attr"``): each
    access returns that object and emits a DeprecationWarning that names its replacement
    (``instead[name]`` when given, else the new path).

    Raises:
        AttributeError: any other name (the normal message of a missing attribute).
    """
    instead = instead or {}

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, attr = moved[name].partition(":")
        use = instead.get(name, f"{module}.{attr}")
        warnings.warn(f"{old_module}.{name} is deprecated and will be removed in the next release; use {use}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)

    return __getattr__
