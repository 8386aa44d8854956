"""The architecture value shared by every part of the toolkit, and the registry of spaces that give it meaning.

An :class:`Arch` names its space; its encoding is written by that space. The registry of
spaces therefore lives here, beside the value, so that ``Arch`` finds its space without
importing :mod:`nasrobust.space` (which defines what a space is, and imports this module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Hashable

from nasrobust.errors import NasRobustError
from nasrobust.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.space import SearchSpace

#: Registered search spaces. ``SPACES.create(name)`` builds a fresh instance;
#: :func:`get_space` returns a shared one.
SPACES: Registry[SearchSpace] = Registry("space", plugins="nasrobust.spaces")

_instances: dict[str, SearchSpace] = {}


@dataclass(frozen=True)
class Arch:
    """One architecture of one registered search space.

    ``genome`` is the space's own typed, hashable description (a frozen dataclass or a
    tuple), always in the space's canonical form, so equal networks compare and hash equal.
    The canonical string form, ``encoding`` (``"<space>:<body>"``), is the primary key in the
    result store, the CLI and plots; ``space.decode(arch.encoding) == arch``.
    """

    space: str
    genome: Hashable

    @cached_property
    def encoding(self) -> str:
        return get_space(self.space).encode(self)

    def __str__(self) -> str:
        return self.encoding

    def __repr__(self) -> str:
        return f"Arch({self.encoding!r})"


def register_space(name: str, doc: str = "") -> Callable:
    """Register a :class:`~nasrobust.space.SearchSpace` subclass (or a factory of one) under ``name``."""
    return SPACES.register(name, doc)


def get_space(name: str) -> SearchSpace:
    """The shared instance of a registered space; an unknown name lists the valid ones."""
    if name not in _instances:
        space = SPACES.create(name)
        if space.name != name:
            raise RuntimeError(f"space registered as {name!r} calls itself {space.name!r}")
        _instances[name] = space
    return _instances[name]


def list_spaces(pattern: str = "*") -> list[str]:
    return SPACES.names(pattern)


def decode(encoding: str) -> Arch:
    """Decode a full encoding (``"<space>:<body>"``) of any registered space."""
    space, sep, _ = encoding.partition(":")
    if not sep:
        raise NasRobustError(
            f"encoding {encoding!r} has no space prefix; expected '<space>:<body>' "
            f"with <space> one of: {', '.join(list_spaces())}"
        )
    return get_space(space).decode(encoding)


__all__ = ["Arch", "SPACES", "decode", "get_space", "list_spaces", "register_space"]
