"""One registry kind for every component family (timm-style register / get / names).

A component registry maps a short name to a config class with ``build()`` (``HEADS``, ``FUSIONS``,
``TEXT_BACKBONES``, ``BALANCERS``); ``OBJECTIVES`` maps a name to an objective class whose
``build(loss_cfg, model, table)`` reads its settings from the loss config; ``PRESETS`` maps a name to
a function returning a whole run config. Tests loop over every registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> item, one per family; ``family`` names the kind of item in error messages."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` on the item; a name is registered once."""

        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        """The item registered as ``name``; an unknown name raises ConfigError listing the known ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.family} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, item) pairs in name order."""
        return [(n, self._items[n]) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:  # an unhashable value is no name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
