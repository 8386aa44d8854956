"""One grammar and one coercion for component options (suites, searchers, supernets, the CLI).

A component declares its options as a frozen dataclass whose fields carry types, defaults and
help (:func:`option`). Text from the command line (``--suite-option natural.severities=1,3``)
is read by :func:`parse_value` -- the only KEY=VALUE grammar in the project -- and
:func:`build_options` coerces a mapping of values (from the CLI or from Python) to the
dataclass by its field types, so every component accepts the same inputs and reports the same
one-line errors: an unknown key gets "did you mean", a value of the wrong type says what was
expected with a working example, and a value outside the declared bounds or choices says which
values are valid.

Grammar of :func:`parse_value`: ``true``/``false`` -> bool, ``none`` -> None, an integer ->
int, a number -> float, anything else -> the text; a comma-separated value -> a tuple of
parsed items (empty items dropped). A float field also accepts a fraction ``8/255`` (budgets
are written that way in papers).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, Union

from nasrobust.errors import NasRobustError, UnknownNameError

T = TypeVar("T")

_INT = re.compile(r"[+-]?\d+")


class OptionError(NasRobustError, ValueError):
    """An option value that cannot be used; the message names the option and shows a valid value."""


# ----------------------------------------------------------------------------- declaring
def option(default: Any = None, help: str = "", *, choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           allow_empty: bool = False, canonical: bool = False, example: str | None = None) -> Any:
    """A dataclass field with what :func:`build_options` checks besides the type.

    ``choices`` (a collection, or a callable returning one, e.g. a registry's names) limits a
    value or each item of a tuple; ``ge``/``gt``/``le``/``lt`` bound numbers (each item of a
    tuple); a tuple must not be empty unless ``allow_empty``; a repeated tuple item counts
    once, and ``canonical`` also sorts the items (in the order of ``choices`` when given, else
    by value), so that equal requests give equal options and protocols; ``example`` is the
    value shown in error messages (default: the field's default).
    """
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "allow_empty": allow_empty, "canonical": canonical, "example": example}
    if isinstance(default, Mapping):  # unhashable: each instance gets its own copy
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A component without options."""


# ----------------------------------------------------------------------------- the grammar
def parse_value(text: str) -> Any:
    """One KEY=VALUE value: bool, None, int, float, else the text; ``a,b`` -> a tuple of parsed items."""
    if "," in text:
        return tuple(parse_value(item) for item in text.split(",") if item.strip())
    text = text.strip()
    lower = text.lower()
    if lower in ("true", "false"):
        return lower == "true"
    if lower == "none":
        return None
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_assignments(items: Iterable[str], *, what: str) -> dict[str, Any]:
    """``["steps=10", "eps-linf=8/255"]`` -> ``{"steps": 10, "eps_linf": "8/255"}`` (``-`` in keys -> ``_``).

    ``what`` names the flag in errors, e.g. ``"--supernet-option"``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise OptionError(f"{what} {item!r}: expected KEY=VALUE, e.g. steps=10")
        out[key.replace("-", "_")] = parse_value(value)
    return out


# ----------------------------------------------------------------------------- coercion
class _Mismatch(Exception):
    """A value does not fit a type."""


def _is_optional(tp: Any) -> bool:
    return type(None) in _union_members(tp)


def _union_members(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(tp)
    return (tp,)


def _type_text(tp: Any, plural: bool = False) -> str:
    """``int`` -> "an integer" / "integers", ``tuple[float, ...]`` -> "numbers", ..."""
    members = [m for m in _union_members(tp) if m is not type(None)]
    if len(members) > 1:
        return " or ".join(_type_text(m, plural) for m in members)
    tp = members[0] if members else tp
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        return _type_text(args[0], plural=True) if args else "a list"
    if origin in (dict, Mapping):
        return "NAME=VALUE pairs"
    names = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
             float: ("a number", "numbers"), str: ("text", "names")}
    if tp in names:
        return names[tp][plural]
    if tp is Any:
        return "a value"
    label = getattr(tp, "__name__", str(tp))
    return f"{label} objects" if plural else f"a {label}"


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, numbers.Real):
        f = float(value)
    elif isinstance(value, str):
        num, slash, den = value.strip().partition("/")
        try:
            f = float(num) / float(den) if slash else float(num)
        except (ValueError, ZeroDivisionError):
            raise _Mismatch from None
    else:
        raise _Mismatch
    if not math.isfinite(f):
        raise _Mismatch
    return f


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value.strip())
    f = _to_float(value)  # 96.0 or "96.0" is an integer too; 9.5 is not
    if not f.is_integer():
        raise _Mismatch
    return int(f)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Mismatch


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (see the module docstring), else :class:`_Mismatch`."""
    if tp is Any:
        return value
    members = _union_members(tp)
    if len(members) > 1:
        if value is None and type(None) in members:
            return None
        options = [m for m in members if m is not type(None)]
        for member in options[:-1]:
            try:
                return _coerce(value, member)
            except _Mismatch:
                continue
        return _coerce(value, options[-1])
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        if isinstance(value, str):
            items: Iterable[Any] = [s.strip() for s in value.split(",") if s.strip()]
        elif isinstance(value, (tuple, list)):
            items = value
        else:
            items = [value]
        return tuple(_coerce_item(v, item_type) for v in items)
    if origin in (dict, Mapping):
        return _to_mapping(value)
    if tp is bool:
        return _to_bool(value)
    if tp is int:
        return _to_int(value)
    if tp is float:
        return _to_float(value)
    if tp is str:
        if isinstance(value, str):
            return value.strip()
        raise _Mismatch
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


class _BadItem(_Mismatch):
    """An item of a list that does not fit: ``args[0]`` is the item (errors quote it, not the whole list)."""


def _coerce_item(value: Any, tp: Any) -> Any:
    try:
        return _coerce(value, tp)
    except _BadItem:
        raise
    except _Mismatch:
        raise _BadItem(value) from None


def _to_mapping(value: Any) -> dict[str, str]:
    """A mapping, or ``NAME=VALUE`` text items (how a mapping is written on the command line)."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)):
        raise _Mismatch
    out = {}
    for item in items:
        key, eq, val = str(item).partition("=")
        if not eq or not key.strip():
            raise _Mismatch
        out[key.strip()] = val.strip()
    return out


def _example(prefix: str, f: dataclasses.Field) -> str:
    given = f.metadata.get("example")
    if given is None:
        default = f.default
        if isinstance(default, tuple):
            given = ",".join(map(str, default))
        elif isinstance(default, bool):
            given = str(default).lower()
        elif default is not None and default is not dataclasses.MISSING and isinstance(default, (int, float, str)):
            given = str(default)
    return f"; e.g. {prefix}{f.name}={given}" if given not in (None, "") else ""


def _choices(f: dataclasses.Field) -> tuple[Any, ...] | None:
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _check(owner: str, prefix: str, f: dataclasses.Field, value: Any) -> None:
    """Bounds, choices and emptiness declared by :func:`option`."""
    if value is None:
        return
    label = f"{owner}.{f.name}"
    items = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and not value and not f.metadata.get("allow_empty", False):
        raise OptionError(f"{label} is empty; give at least one value{_example(prefix, f)}")
    choices = _choices(f)
    if choices is not None:
        for item in items:
            if item not in choices:
                raise UnknownNameError(f"{label} value", str(item), [str(c) for c in choices])
    meta = f.metadata
    for item in items:
        if not isinstance(item, numbers.Real) or isinstance(item, bool):
            continue
        positive_int = (meta.get("ge") == 1 and meta.get("le") is None and meta.get("lt") is None
                        and isinstance(item, numbers.Integral))
        for key, ok, text in (("ge", lambda b: item >= b, ">="), ("gt", lambda b: item > b, ">"),
                              ("le", lambda b: item <= b, "<="), ("lt", lambda b: item < b, "<")):
            bound = meta.get(key)
            if bound is not None and not ok(bound):
                rule = "a positive integer (>= 1)" if positive_int else _bounds_text(meta)
                raise OptionError(f"{label} must be {rule}, got {item!r}{_example(prefix, f)}")


def _normalised(f: dataclasses.Field, value: Any) -> Any:
    """Tuples without repeats; ``canonical`` ones sorted (by ``choices`` order, else by value)."""
    if not isinstance(value, tuple):
        return value
    value = tuple(dict.fromkeys(value))
    if f.metadata.get("canonical"):
        choices = _choices(f)
        return tuple(c for c in choices if c in value) if choices is not None else tuple(sorted(value))
    return value


def _bounds_text(meta: Mapping[str, Any]) -> str:
    parts = [f"{text} {meta[key]:g}" for key, text in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if meta.get(key) is not None]
    return " and ".join(parts)


def _fields(cls: type) -> tuple[tuple[dataclasses.Field, Any], ...]:
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    hints = typing.get_type_hints(cls)
    return tuple((f, hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init)


def build_options(cls: type[T], values: Mapping[str, Any], *, owner: str, key_prefix: str | None = None) -> T:
    """``cls`` (a frozen dataclass) from ``values``, each coerced to its field's type and checked.

    ``owner`` prefixes messages (``"natural"`` -> ``natural.severities: ...``); examples in messages
    write a key as the command line does, ``key_prefix`` + name (default ``owner.``). Raises
    :class:`~nasrobust.errors.UnknownNameError` for an unknown key (with "did you mean") or a
    value outside the declared choices, and :class:`OptionError` for a wrong type, an empty list
    or a value out of bounds.
    """
    prefix = f"{owner}." if key_prefix is None else key_prefix
    fields = _fields(cls)
    by_name = {f.name: (f, tp) for f, tp in fields}
    for key in values:
        if key not in by_name:
            if not by_name:
                raise OptionError(f"{owner} takes no options, got {key!r}")
            raise UnknownNameError(f"{owner} option", str(key), by_name)
    kwargs = {}
    for name, raw in values.items():
        f, tp = by_name[name]
        if raw is None and not _is_optional(tp) and tp is not Any:
            continue  # None means "the default" (Registry.create drops None too)
        try:
            value = _coerce(raw, tp)
        except _Mismatch as exc:
            got = exc.args[0] if isinstance(exc, _BadItem) else raw
            raise OptionError(f"{owner}.{name}: expected {_type_text(tp)}, got {got!r}{_example(prefix, f)}") from None
        _check(owner, prefix, f, value)
        kwargs[name] = _normalised(f, value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, NasRobustError):
            raise
        raise OptionError(f"{owner}: {exc}") from None


def describe_options(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type text, default, help)`` per option, in declaration order (for ``nasrobust list``)."""
    out = []
    for f, tp in _fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = _type_text(tp)
        if _is_optional(tp):
            text += " or none"
        out.append((f.name, text, default, f.metadata.get("help", "")))
    return out


def options_dict(options: Any) -> dict[str, Any]:
    """The field values of an options dataclass (shallow: model objects are kept as they are)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


__all__ = ["NoOptions", "OptionError", "build_options", "describe_options", "option", "options_dict",
           "parse_assignments", "parse_value"]
