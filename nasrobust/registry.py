"""Name -> component registries (spaces, searchers, suites, datasets, ...).

Follows timm's registry: one place that maps a name to a factory, ``create(name, **kw)``
drops ``None`` keyword arguments so CLI defaults never override a component's own, and
``names(pattern)`` lists what is there. Core code finds concrete components only through a
registry; the plugin package named by ``plugins`` is imported on first use so that the
``spaces`` and ``searchers`` folders register themselves without core importing them by name.
Third-party packages register through the entry-point group ``nasrobust.<kind>s``.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nasrobust.errors import UnknownNameError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories for one kind of component."""

    def __init__(self, kind: str, plugins: str | None = None):
        self.kind = kind
        self._plugins = plugins
        self._loaded = plugins is None
        self._factories: dict[str, Callable[..., T]] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@REG.register("name")`` on a class or factory function."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            self._docs[name] = doc or _first_line(factory.__doc__)
            return factory

        return add

    def _load(self) -> None:
        if self._loaded or self._plugins is None:
            return
        from importlib.metadata import entry_points  # ~50 ms: only when a registry is first asked

        self._loaded = True
        importlib.import_module(self._plugins)  # the package imports its own modules
        for ep in entry_points(group=f"nasrobust.{self.kind}s"):
            try:
                ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the toolkit
                log.warning("could not load %s plugin %s: %s", self.kind, ep.name, exc)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``; an unknown name lists the valid ones."""
        self._load()
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._factories) from None

    def get_class(self, name: str) -> type[T]:
        """The class registered under ``name``, for registries of classes whose class attributes are
        declarations (a suite's metrics and options, a searcher's options)."""
        factory = self.get(name)
        if not isinstance(factory, type):
            raise TypeError(f"{self.kind} {name!r} is registered as a function, not a class")
        return factory

    def create(self, name: str, **kwargs: object) -> T:
        """Build the component, passing only the keyword arguments that are not ``None``."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        self._load()
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def doc(self, name: str) -> str:
        self.get(name)
        return self._docs[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0]


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import every public module of a plugin package so that each registers itself.

    Modules whose names start with ``_`` are skipped: they hold heavy code (torch modules)
    that the public module imports lazily, keeping ``nasrobust sample`` free of torch.
    """
    import pkgutil

    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
