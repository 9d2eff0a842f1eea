"""Helpers for tests of a package's public surface."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def own_exceptions(package: ModuleType) -> list[type]:
    """Exception classes defined in ``package``'s modules (not the ones they import)."""
    out = []
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        mod = importlib.import_module(info.name)
        out += [o for o in vars(mod).values()
                if isinstance(o, type) and issubclass(o, BaseException) and o.__module__ == mod.__name__]
    return out
