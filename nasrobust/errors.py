"""User-facing errors.

Everything a user can get wrong (an unknown name, a malformed encoding, a checkpoint of the
wrong space, a missing folder) raises a subclass of :class:`NasRobustError`. The CLI prints
its message and exits non-zero without a traceback; library callers can catch one type.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NasRobustError(Exception):
    """Base class for errors caused by user input; the message says what and how to fix it."""


class UnknownNameError(NasRobustError, KeyError):
    """A name (space, searcher, suite, dataset, ...) that is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class EncodingError(NasRobustError, ValueError):
    """An architecture encoding that does not parse; says which part and shows the grammar."""

    def __init__(self, space: str, text: str, problem: str, grammar: str):
        self.space, self.text, self.problem, self.grammar = space, text, problem, grammar
        super().__init__(
            f"malformed {space} encoding {text!r}: {problem}\n"
            f"grammar: {grammar}"
        )


class SpaceError(NasRobustError, ValueError):
    """A request a search space cannot satisfy (e.g. more distinct samples than it holds)."""
