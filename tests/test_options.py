"""The one KEY=VALUE grammar and the shared option coercion, on a table of good and bad inputs."""

from __future__ import annotations

import os
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import pytest
import torch.nn as nn

from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.noise.base import SUITES
from nasrobust.options import (
    OptionError, build_options, describe_options, option, options_dict, parse_assignments, parse_value,
)


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("-3", -3), ("+7", 7), ("0.5", 0.5), ("1e-3", 0.001), ("true", True), ("False", False),
    ("none", None), ("None", None), ("pgd_linf", "pgd_linf"), (" 4:4:4 ", "4:4:4"), ("8/255", "8/255"),
    ("1,3,5", (1, 3, 5)), ("a, b", ("a", "b")), ("1,", (1,)), ("0.1,8/255", (0.1, "8/255")),
    ("true,none", (True, None)), ("", ""), ("runs/model.pt", "runs/model.pt"),
])
def test_parse_value(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_assignments():
    assert parse_assignments(["steps=10", "eps-linf=1/255,8/255", "name=a=b"], what="--option") == {
        "steps": 10, "eps_linf": ("1/255", "8/255"), "name": "a=b"}
    for bad in ("steps", "=10", " =1"):
        with pytest.raises(OptionError, match="--suite-option .*expected KEY=VALUE") as err:
            parse_assignments([bad], what="--suite-option")
        assert "\n" not in str(err.value)


@dataclass(frozen=True)
class Demo:
    """Every kind of field the coercion knows."""

    count: int = option(3, "a count", ge=1)
    quality: int = option(96, "1..100", ge=1, le=100)
    rate: float = option(0.5, "a fraction", ge=0, lt=1)
    budgets: tuple[float, ...] | None = option(None, "budgets", gt=0, canonical=True, example="1/255,8/255")
    levels: tuple[int, ...] = option((1, 2, 3), "levels", choices=(1, 2, 3, 4, 5), example="1,3")
    names: tuple[str, ...] = option(("b", "a"), "names", choices=("a", "b", "c"))
    ordered: tuple[str, ...] = option(("a",), "names in canonical order", choices=("c", "b", "a"), canonical=True)
    extra: tuple[str, ...] = option((), "may be empty", allow_empty=True)
    mode: str = option("fast", "a mode", choices=("fast", "slow"))
    label: str | None = option(None, "free text")
    flag: bool = option(False, "a switch")
    folders: dict[str, str] = option({}, "NAME=FOLDER pairs")
    source: nn.Module | str | os.PathLike | None = option(None, "a model or a path")


GOOD = [
    ({}, {}),
    ({"count": "7"}, {"count": 7}),
    ({"count": 7.0, "quality": "96.0"}, {"count": 7, "quality": 96}),
    ({"rate": "0.25"}, {"rate": 0.25}),
    ({"rate": 0}, {"rate": 0.0}),
    ({"budgets": "8/255,1/255"}, {"budgets": (1 / 255, 8 / 255)}),  # a fraction; canonical order
    ({"budgets": 0.3}, {"budgets": (0.3,)}),  # a scalar for a tuple
    ({"budgets": ("0.1", 0.2, 0.1)}, {"budgets": (0.1, 0.2)}),  # repeats count once
    ({"budgets": None}, {"budgets": None}),
    ({"levels": "5,1"}, {"levels": (5, 1)}),  # not canonical: the given order
    ({"levels": [3, 3, 1]}, {"levels": (3, 1)}),
    ({"names": "c, a"}, {"names": ("c", "a")}),
    ({"ordered": ("a", "c")}, {"ordered": ("c", "a")}),  # canonical: the order of the choices
    ({"extra": ""}, {"extra": ()}),
    ({"extra": ()}, {"extra": ()}),
    ({"mode": " slow "}, {"mode": "slow"}),
    ({"flag": "TRUE"}, {"flag": True}),
    ({"flag": False}, {"flag": False}),
    ({"label": None, "count": None}, {"label": None, "count": 3}),  # None on a non-optional field: the default
    ({"folders": "imagenet-a=/data/a"}, {"folders": {"imagenet-a": "/data/a"}}),
    ({"folders": ("a=/x", "b=/y")}, {"folders": {"a": "/x", "b": "/y"}}),
    ({"folders": {"a": Path("/x")}}, {"folders": {"a": "/x"}}),
    ({"source": "runs/m.pt"}, {"source": "runs/m.pt"}),
    ({"source": Path("runs/m.pt")}, {"source": Path("runs/m.pt")}),
]


@pytest.mark.parametrize("values, expected", GOOD)
def test_build_options_coerces(values, expected):
    opts = build_options(Demo, values, owner="demo")
    for key, value in expected.items():
        got = getattr(opts, key)
        assert got == value and type(got) is type(value), key
    # round trip: the coerced values build the same options again
    assert build_options(Demo, options_dict(opts), owner="demo") == opts
    with pytest.raises(FrozenInstanceError):
        opts.count = 1  # type: ignore[misc]


def test_a_model_object_is_kept():
    model = nn.Linear(2, 2)
    assert build_options(Demo, {"source": model}, owner="demo").source is model


BAD = [
    ({"cout": 1}, UnknownNameError, "unknown demo option 'cout'. Did you mean 'count'?"),
    ({"colour": 1}, UnknownNameError, "Valid demo options: budgets, count, "),
    ({"count": "x"}, OptionError, "demo.count: expected an integer, got 'x'; e.g. demo.count=3"),
    ({"count": 2.5}, OptionError, "demo.count: expected an integer, got 2.5"),
    ({"count": True}, OptionError, "demo.count: expected an integer, got True"),
    ({"count": 0}, OptionError, r"demo.count must be a positive integer \(>= 1\), got 0"),
    ({"quality": 101}, OptionError, "demo.quality must be >= 1 and <= 100, got 101; e.g. demo.quality=96"),
    ({"rate": 1.0}, OptionError, "demo.rate must be >= 0 and < 1, got 1.0"),
    ({"rate": "nan"}, OptionError, "demo.rate: expected a number, got 'nan'"),
    ({"rate": "1/0"}, OptionError, "demo.rate: expected a number"),
    ({"budgets": "0.1,abc"}, OptionError, "demo.budgets: expected numbers, got 'abc'; e.g. demo.budgets=1/255,8/255"),
    ({"budgets": "-0.1"}, OptionError, "demo.budgets must be > 0, got -0.1"),
    ({"budgets": ()}, OptionError, "demo.budgets is empty; give at least one value"),
    ({"levels": "a"}, OptionError, "demo.levels: expected integers, got 'a'; e.g. demo.levels=1,3"),
    ({"levels": (0,)}, UnknownNameError, "unknown demo.levels value '0'. Valid demo.levels values: 1, 2, 3, 4, 5"),
    ({"names": "a,d"}, UnknownNameError, "unknown demo.names value 'd'"),
    ({"mode": "fsat"}, UnknownNameError, "Did you mean 'fast'"),
    ({"mode": 3}, OptionError, "demo.mode: expected text, got 3"),
    ({"flag": 1}, OptionError, "demo.flag: expected true or false, got 1; e.g. demo.flag=false"),
    ({"flag": "yes"}, OptionError, "demo.flag: expected true or false"),
    ({"folders": "nofolder"}, OptionError, "demo.folders: expected NAME=VALUE pairs"),
    ({"source": 42}, OptionError, "demo.source: expected a Module or text or a PathLike, got 42"),
]


@pytest.mark.parametrize("values, error, message", BAD)
def test_build_options_rejects_with_one_line(values, error, message):
    with pytest.raises(error, match=message) as err:
        build_options(Demo, values, owner="demo")
    assert isinstance(err.value, NasRobustError) and "\n" not in str(err.value)


def test_key_prefix_writes_examples_as_the_cli_takes_them():
    with pytest.raises(OptionError, match=r"e\.g\. count=3$"):
        build_options(Demo, {"count": "x"}, owner="demo", key_prefix="")


@dataclass(frozen=True)
class Checked:
    low: int = 1
    high: int = 2

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"need low <= high, got {self.low} > {self.high}")


def test_plain_fields_and_post_init_errors():
    assert build_options(Checked, {"low": "2", "high": 5}, owner="chk") == Checked(2, 5)
    with pytest.raises(OptionError, match="chk: need low <= high, got 3 > 2"):
        build_options(Checked, {"low": 3}, owner="chk")


def test_describe_options():
    rows = {name: (kind, default, text) for name, kind, default, text in describe_options(Demo)}
    assert list(rows)[:3] == ["count", "quality", "rate"]
    assert rows["count"] == ("an integer", 3, "a count")
    assert rows["budgets"] == ("numbers or none", None, "budgets")
    assert rows["folders"] == ("NAME=VALUE pairs", {}, "NAME=FOLDER pairs")
    assert rows["flag"][0] == "true or false"


def test_cli_text_reaches_a_suite_through_one_grammar():
    """``--suite-option natural.severities=1,3`` -> parse_assignments -> the suite's own Options."""
    values = parse_assignments(["severities=3,1", "fp-kinds=", "corruptions=contrast"], what="--suite-option")
    suite = SUITES.create("natural", **values)
    assert (suite.options.severities, suite.options.fp_kinds, suite.options.corruptions) == ((3, 1), (), ("contrast",))
    with pytest.raises(OptionError) as err:
        SUITES.create("natural", **parse_assignments(["severities=a,b"], what="--suite-option"))
    assert str(err.value) == "natural.severities: expected integers, got 'a'; e.g. natural.severities=1,3,5"
    with pytest.raises(UnknownNameError, match="Did you mean 'severities'"):
        SUITES.get("natural").from_options({"severites": (1,)})
