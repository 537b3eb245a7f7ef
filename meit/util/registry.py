"""A tiny name -> factory registry shared by encoders, fusions, noise kinds and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names fail loudly with the list of choices.

    Args:
        kind: what the registry holds, used in error messages ("encoder", "fusion", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering `factory` under `name` (a class or a function)."""

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return wrap

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as `name`."""
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind}: {name}; choose from {', '.join(sorted(self._factories))}")
        return self._factories[name]

    def build(self, name: str, **kwargs: Any) -> T:
        """Calls the factory registered as `name` with `kwargs`."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories
