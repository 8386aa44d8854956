"""Typed records of the result store: what was measured, how, and the value.

Pure Python (no numpy, no torch at import): the store, the evaluator and the CLI all share
these frozen dataclasses.

* :class:`ResultKey` -- *what* was measured: one row of the store per
  ``(space, encoding, weights_id, dataset, suite, noise, level, metric)``.
* :class:`Protocol` -- *how*: the suite-level settings (eps, norm, steps, restarts, seed,
  n_examples, free-form ``params``) plus the library versions that produced it.
* :class:`Record` -- one finite value with its key, protocol and creation time.
* :class:`WorkUnit` -- the resume granule of an evaluator: one architecture x weights x
  dataset x suite x protocol, marked complete once all its records are written.

Numbers stay numbers (RobustBench's ``robustbench/model_info`` JSON files store accuracies as
strings such as ``"87.20"``; here every value, level and protocol field is a typed float or
int all the way into SQLite).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Union

from nasrobust.errors import NasRobustError

#: Packages whose versions every :class:`Protocol` records automatically.
VERSIONED_PACKAGES = ("nasrobust", "numpy", "torch", "torchattacks")

Scalar = Union[bool, int, float, str, None]
#: A free-form protocol setting: a scalar or a flat tuple of scalars (e.g. severities).
ParamValue = Union[Scalar, tuple[Scalar, ...]]

_INT64 = (-(2**63), 2**63 - 1)


class InvalidRecordError(NasRobustError, ValueError):
    """A key, protocol or value that cannot be stored (wrong type, NaN, empty name, ...)."""


@lru_cache(maxsize=1)
def current_versions() -> tuple[tuple[str, str], ...]:
    """``(package, version)`` of :data:`VERSIONED_PACKAGES` that are installed, sorted.

    Read from package metadata, so torch is not imported; computed once per process.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in VERSIONED_PACKAGES:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return tuple(sorted(out))


# ---------------------------------------------------------------------------- validation
def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecordError(f"{what} must be a non-empty string, got {value!r}")


def _check_finite(value: Any, what: str) -> None:
    if isinstance(value, str):
        raise InvalidRecordError(f"{what} must be a number, not the string {value!r}; convert it with float()")
    if not _is_real(value):
        hint = "; use .item() for a tensor/array element" if hasattr(value, "item") else ""
        raise InvalidRecordError(f"{what} must be a real number, got {type(value).__name__} {value!r}{hint}")
    if not math.isfinite(float(value)):
        raise InvalidRecordError(
            f"{what} is {float(value)}; the store keeps finite numbers only. "
            "If the quantity is undefined for this architecture, do not write a record: "
            "a missing row means 'not measured / undefined', never a silent NaN"
        )


def _check_optional_int(value: Any, what: str, minimum: int | None) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise InvalidRecordError(f"protocol {what} must be an int or None, got {type(value).__name__} {value!r}")
    if not _INT64[0] <= int(value) <= _INT64[1]:
        raise InvalidRecordError(f"protocol {what} = {value} does not fit a 64-bit integer")
    if minimum is not None and int(value) < minimum:
        raise InvalidRecordError(f"protocol {what} must be >= {minimum}, got {value}")


def _check_scalar(value: Any, what: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if _is_int(value):
        _check_optional_int(value, what, None)
        return
    _check_finite(value, what)


def _check_param(key: Any, value: Any) -> None:
    _check_name(key, "protocol param name")
    if isinstance(value, tuple):
        for i, v in enumerate(value):
            if isinstance(v, tuple):
                raise InvalidRecordError(f"protocol param {key!r}: nested tuples are not supported")
            _check_scalar(v, f"protocol param {key!r}[{i}]")
    else:
        _check_scalar(value, f"protocol param {key!r}")


def _canonical_number(x: Any) -> Any:
    """JSON-canonical number: ints stay ints, integral floats become ints, -0.0 becomes 0."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if _is_int(x):
        return int(x)
    f = float(x)
    return int(f) if f.is_integer() else f


def _canonical_param(value: ParamValue) -> Any:
    if isinstance(value, tuple):
        return [_canonical_number(v) for v in value]
    return _canonical_number(value)


# ---------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Protocol:
    """How a suite was run: the settings that make its numbers comparable.

    Fields follow the anchors' protocols (RobustBench ``eval.py``: eps, norm, n_examples;
    torchattacks/auto-attack: steps, restarts, seed); anything else (step size, severities,
    AutoAttack version, reference model of mCE, ...) goes in ``params``, a sorted tuple of
    ``(name, value)`` pairs -- build one from a mapping with :meth:`make`.

    ``versions`` records the library versions that produced the numbers (captured
    automatically). It is provenance, not identity: :attr:`hash` excludes it, so rerunning
    the same protocol after ``pip install -U`` resumes instead of conflicting, while the
    versions stay queryable beside every value.
    """

    eps: float | None = None
    norm: str | None = None
    steps: int | None = None
    restarts: int | None = None
    seed: int | None = None
    n_examples: int | None = None
    params: tuple[tuple[str, ParamValue], ...] = ()
    versions: tuple[tuple[str, str], ...] = field(default_factory=current_versions)

    def __post_init__(self) -> None:
        if self.eps is not None:
            _check_finite(self.eps, "protocol eps")
            if float(self.eps) < 0:
                raise InvalidRecordError(f"protocol eps must be >= 0, got {self.eps}")
        if self.norm is not None:
            _check_name(self.norm, "protocol norm")
        _check_optional_int(self.steps, "steps", 0)
        _check_optional_int(self.restarts, "restarts", 0)
        _check_optional_int(self.seed, "seed", None)
        _check_optional_int(self.n_examples, "n_examples", 0)
        for name, pairs in (("params", self.params), ("versions", self.versions)):
            if isinstance(pairs, Mapping) or not isinstance(pairs, tuple):
                raise InvalidRecordError(
                    f"protocol {name} must be a sorted tuple of (name, value) pairs; "
                    f"build it from a mapping with Protocol.make({name}={{...}})"
                )
            if any(not (isinstance(p, tuple) and len(p) == 2) for p in pairs):
                raise InvalidRecordError(f"protocol {name} must hold (name, value) pairs, got {pairs!r}")
            keys = [k for k, _ in pairs]
            if keys != sorted(set(keys)):
                raise InvalidRecordError(
                    f"protocol {name} names must be unique and sorted, got {keys}; use Protocol.make(...)"
                )
        for key, value in self.params:
            _check_param(key, value)
        for package, ver in self.versions:
            _check_name(package, "versions package")
            _check_name(ver, f"version of {package}")

    @classmethod
    def make(
        cls,
        *,
        eps: float | None = None,
        norm: str | None = None,
        steps: int | None = None,
        restarts: int | None = None,
        seed: int | None = None,
        n_examples: int | None = None,
        params: Mapping[str, ParamValue] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> "Protocol":
        """Build a protocol from mappings (lists in ``params`` become tuples)."""
        items = {k: tuple(v) if isinstance(v, list) else v for k, v in (params or {}).items()}
        kwargs: dict[str, Any] = {}
        if versions is not None:
            kwargs["versions"] = tuple(sorted(versions.items()))
        return cls(
            eps=eps, norm=norm, steps=steps, restarts=restarts, seed=seed, n_examples=n_examples,
            params=tuple(sorted(items.items())), **kwargs,
        )

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def canonical(self) -> dict[str, Any]:
        """The identity of the protocol as plain JSON types (what :attr:`hash` digests)."""
        return {
            "eps": None if self.eps is None else _canonical_number(float(self.eps)),
            "norm": self.norm,
            "steps": None if self.steps is None else int(self.steps),
            "restarts": None if self.restarts is None else int(self.restarts),
            "seed": None if self.seed is None else int(self.seed),
            "n_examples": None if self.n_examples is None else int(self.n_examples),
            "params": {k: _canonical_param(v) for k, v in self.params},
        }

    @property
    def hash(self) -> str:
        """sha1 of the canonical JSON (sorted keys, no spaces), versions excluded.

        Two protocols are "the same" for the store iff their hashes are equal; integral
        floats hash like ints (``steps=20`` and a param ``20.0`` do not conflict).
        """
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha1(text.encode()).hexdigest()

    @property
    def identity(self) -> str:
        """sha1 of the canonical JSON *with* versions: one row per identity in the store."""
        data = {"protocol": self.hash, "versions": dict(self.versions)}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": None if self.eps is None else float(self.eps),
            "norm": self.norm,
            "steps": self.steps,
            "restarts": self.restarts,
            "seed": self.seed,
            "n_examples": self.n_examples,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params},
            "versions": dict(self.versions),
            "hash": self.hash,
        }

    def diff(self, other: "Protocol") -> dict[str, tuple[Any, Any]]:
        """Fields (and ``params.<name>``) whose canonical values differ: ``name -> (self, other)``."""
        a, b = self.canonical(), other.canonical()
        pa, pb = a.pop("params"), b.pop("params")
        out = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        for k in sorted(set(pa) | set(pb)):
            if pa.get(k, "<unset>") != pb.get(k, "<unset>"):
                out[f"params.{k}"] = (pa.get(k, "<unset>"), pb.get(k, "<unset>"))
        return out


# ---------------------------------------------------------------------------- keys and records
@dataclass(frozen=True)
class ResultKey:
    """What was measured; unique in the store.

    ``level`` is the numeric strength of the perturbation (eps, severity, ...; 0.0 for
    clean data or level-free metrics), ``noise`` names the perturbation (``"pgd_linf"``,
    ``"gaussian_noise"``, ``"pil/bilinear"``) and ``metric`` what was measured
    (``"accuracy"``, ``"ar"``, ``"wcar"``, ``"mce"``, ``"fp"``, ...).
    """

    space: str
    encoding: str
    weights_id: str
    dataset: str
    suite: str
    noise: str
    level: float
    metric: str

    def __post_init__(self) -> None:
        for name in ("space", "encoding", "weights_id", "dataset", "suite", "noise", "metric"):
            _check_name(getattr(self, name), name)
        if not self.encoding.startswith(self.space + ":"):
            raise InvalidRecordError(
                f"encoding {self.encoding!r} does not belong to space {self.space!r}; "
                f"encodings are '<space>:<body>' (use arch.encoding)"
            )
        _check_finite(self.level, "level")

    @classmethod
    def of(cls, arch: Any, *, weights_id: str, dataset: str, suite: str, noise: str, level: float, metric: str) -> "ResultKey":
        """Key of an :class:`~nasrobust.space.Arch` (or its encoding string)."""
        encoding = arch if isinstance(arch, str) else arch.encoding
        return cls(encoding.partition(":")[0], encoding, weights_id, dataset, suite, noise, level, metric)

    def as_tuple(self) -> tuple[str, str, str, str, str, str, float, str]:
        return (self.space, self.encoding, self.weights_id, self.dataset, self.suite, self.noise,
                float(self.level), self.metric)

    def unit(self, protocol: Protocol) -> "WorkUnit":
        return WorkUnit(self.space, self.encoding, self.weights_id, self.dataset, self.suite, protocol.hash)


@dataclass(frozen=True)
class Record:
    """One finished measurement: a finite ``value`` for ``key`` under ``protocol``.

    Non-finite values are refused (:class:`InvalidRecordError`): an undefined quantity is
    simply not written, so a reader never meets a silent NaN.
    """

    key: ResultKey
    value: float
    protocol: Protocol
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.key, ResultKey):
            raise InvalidRecordError(f"record key must be a ResultKey, got {type(self.key).__name__}")
        if not isinstance(self.protocol, Protocol):
            raise InvalidRecordError(f"record protocol must be a Protocol, got {type(self.protocol).__name__}")
        _check_finite(self.value, f"value of {self.key.metric} ({self.key.suite}/{self.key.noise}@{self.key.level})")
        _check_finite(self.created, "created timestamp")

    def to_dict(self) -> dict[str, Any]:
        """Flat key fields, value, created and the nested protocol (JSON-ready)."""
        k = self.key
        return {
            "space": k.space, "encoding": k.encoding, "weights_id": k.weights_id, "dataset": k.dataset,
            "suite": k.suite, "noise": k.noise, "level": float(k.level), "metric": k.metric,
            "value": float(self.value), "created": float(self.created), "protocol": self.protocol.to_dict(),
        }


@dataclass(frozen=True)
class WorkUnit:
    """The resume granule: one (arch, weights, dataset, suite, protocol) evaluation.

    An evaluator writes the unit's records one by one (each commits), then marks the unit
    complete; on restart it skips complete units wholesale and, inside an incomplete one,
    the keys already done.
    """

    space: str
    encoding: str
    weights_id: str
    dataset: str
    suite: str
    protocol_hash: str

    def __post_init__(self) -> None:
        for name in ("space", "encoding", "weights_id", "dataset", "suite", "protocol_hash"):
            _check_name(getattr(self, name), name)
        if not self.encoding.startswith(self.space + ":"):
            raise InvalidRecordError(f"encoding {self.encoding!r} does not belong to space {self.space!r}")

    @classmethod
    def of(cls, arch: Any, *, weights_id: str, dataset: str, suite: str, protocol: Protocol) -> "WorkUnit":
        encoding = arch if isinstance(arch, str) else arch.encoding
        return cls(encoding.partition(":")[0], encoding, weights_id, dataset, suite, protocol.hash)


@dataclass(frozen=True)
class RunInfo:
    """Who wrote into a store, with what, and when (one per writing process)."""

    id: int
    started: float
    user: str | None
    host: str | None
    pid: int | None
    rank: int | None
    nasrobust_version: str
    python_version: str | None
    argv: tuple[str, ...]
    origin: str | None  # the store file this run was merged from, None if written here


__all__ = [
    "InvalidRecordError",
    "ParamValue",
    "Protocol",
    "Record",
    "ResultKey",
    "RunInfo",
    "VERSIONED_PACKAGES",
    "WorkUnit",
    "current_versions",
]
