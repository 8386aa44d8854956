"""The architecture value shared by every part of the toolkit."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Hashable


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
        from nasrobust.space import get_space

        return get_space(self.space).encode(self)

    def __str__(self) -> str:
        return self.encoding

    def __repr__(self) -> str:
        return f"Arch({self.encoding!r})"
