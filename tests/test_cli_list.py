"""``nasrobust list``: every registry's components, and the options each declares."""

from __future__ import annotations

import pytest

from nasrobust.cli.list_cmd import REGISTRIES
from nasrobust.cli.main import main
from nasrobust.noise.base import SUITES
from nasrobust.search import SEARCHERS


def test_lists_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in REGISTRIES:
        assert f"{kind}:" in out
    assert all(name in out for name in SUITES.names() + SEARCHERS.names())


def test_options_come_from_the_declarations(capsys):
    assert main(["list", "searchers", "--options"]) == 0
    out = capsys.readouterr().out
    assert "searcher evolution options:" in out and "population_size" in out
    assert "searcher random options:" not in out  # no options, no table
    assert main(["list", "metrics", "--options"]) == 0
    assert "metric store options:" in capsys.readouterr().out


def test_an_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "vibes"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
