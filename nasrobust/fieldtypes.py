"""Type checks for settings read from files (TOML, JSON) into frozen dataclasses.

A dataclass does not check its field types, so ``n = "many"`` in a study's ``config.toml``
would travel until some ``<`` comparison fails deep inside with a ``TypeError``. The field
annotations already say what each value must be; :func:`check_fields` reads them and raises a
:class:`~nasrobust.errors.NasRobustError` that names the setting, the wrong value and an
example of a right one (the field's default).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from nasrobust.errors import NasRobustError

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "unset"}


def _args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint)


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as read from TOML/JSON: lists for tuples, dicts for mappings) fits ``hint``."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in _args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or hint is tuple:
        element = _args(hint)[0] if _args(hint) else Any
        return isinstance(value, (list, tuple)) and all(conforms(v, element) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (hint, Mapping))
    return True


def describe(hint: Any) -> str:
    """``int | None`` -> 'an integer (or unset)'."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in _args(hint) if a is not type(None)]
        return " or ".join(parts) + (" (or unset)" if type(None) in _args(hint) else "")
    if origin is tuple or hint is tuple:
        return f"a list of {describe(_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s" if _args(hint) else "a list"
    if origin in (dict, Mapping, typing.Mapping) or dataclasses.is_dataclass(hint):
        return "a table"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def check_fields(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Raise when a value in ``data`` does not fit the annotation of ``cls``'s field of that name.

    Unknown keys are left to the caller (which lists the valid ones); nested dataclass fields
    given as tables are checked too.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in data.items():
        if name not in fields:
            continue
        hint = hints[name]
        if not conforms(value, hint):
            raise NasRobustError(f"{where}: {name} = {value!r} is not {describe(hint)}{_example(fields[name])}")
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            check_fields(hint, value, f"{where} [{name}]")


def _example(field: dataclasses.Field) -> str:
    default = field.default
    if default is dataclasses.MISSING or default is None or dataclasses.is_dataclass(default):
        return ""
    try:
        text = json.dumps(list(default) if isinstance(default, tuple) else default)
    except TypeError:
        return ""
    return f"; e.g. {field.name} = {text}"
