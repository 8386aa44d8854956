"""benchmarks/eval_throughput.py: each saving's switch is one the package reads, and each row re-times exactly
the suites its savings can change (a suite left out keeps the baseline's seconds in that row's total)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its sibling _report / _timed
    try:
        spec = importlib.util.spec_from_file_location("eval_throughput_bench", REPO / "benchmarks" / "eval_throughput.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_every_switch_is_read_by_the_package(bench):
    source = "\n".join(p.read_text() for p in (REPO / "nasrobust").rglob("*.py"))
    assert set(bench.SWITCHES) == set(bench.TOUCHES)
    for var in bench.SWITCHES.values():
        assert f'"{var}"' in source, f"{var} is not read anywhere in nasrobust/"


@pytest.mark.parametrize("on, suites", [(set(), ("adversarial", "natural", "system", "certified")),
                                        ({"heap reuse"}, ("certified",)),
                                        ({"early exit"}, ("adversarial", "natural", "system")),
                                        ({"early exit", "heap reuse"}, ("adversarial", "natural", "system", "certified"))])
def test_rows_retime_the_suites_their_savings_touch(bench, on, suites):
    assert bench.touched(on) == suites
