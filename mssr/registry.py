"""Name -> class registries, and loading user components by import path.

SAMPLERS = Registry("sampler")

@SAMPLERS.register("uniform")
class UniformSampler: ...

SAMPLERS.get("uniform")                    # our class
SAMPLERS.get("my_pkg.samplers:MySampler")  # a user's class, no edit of ours needed
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from mssr.errors import ConfigError, did_you_mean


def load_by_path(path: str) -> Any:
    """Import ``package.module:attribute`` and return the attribute."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{path!r}: expected an import path like 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{path!r}: cannot import module {module_name!r}: {e}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{path!r}: module {module_name!r} has no attribute {attr!r}") from None


def import_modules(modules: list[str], what: str) -> None:
    """Import each module (a user's plugins register their components when imported); a
    ``ConfigError`` naming ``what`` for one that cannot be."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"{what}: cannot import {module!r}: {e}") from None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        return list(self._items)

    def get(self, name: str) -> Any:
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return load_by_path(name)
        hint = did_you_mean(name, self.names())
        raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")
