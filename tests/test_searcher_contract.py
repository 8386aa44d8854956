"""Invariants every registered searcher must satisfy (parametrised over the searcher registry).

Discrete searchers run on nb201 with a synthetic objective (a fixed linear function of the
architecture vector; two of them for multi-objective searchers) and a budget of 12; differentiable
ones run one epoch of a 4-channel nb201 supernet on 32 bundled digits. Searchers whose optional
extra is not installed (NNI) are skipped with the reason, never silently.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from nasrobust.metrics import FunctionMetric
from nasrobust.options import build_options, describe_options
from nasrobust.search import SEARCHERS, SearchError, create_searcher, read_state
from nasrobust.space import get_space

SPACE = get_space("nb201")
NAMES = SEARCHERS.names()
BUDGET = 12
#: A 4-channel, one-epoch, 32-example search (differentiable searchers).
TINY = dict(dataset="digits", channels=4, cells_per_stage=1, n_train=32, batch_size=16, steps_per_epoch=1,
            n_score=16, recalib_images=16)
#: Optional extras a searcher needs: name prefix -> importable module.
EXTRAS = {"nni-": "nni"}


def is_differentiable(name: str) -> bool:
    return bool(getattr(SEARCHERS.get(name), "differentiable", False))


DISCRETE = [n for n in NAMES if not is_differentiable(n)]
DIFFERENTIABLE = [n for n in NAMES if is_differentiable(n)]


def _needs_extra(name: str) -> None:
    for prefix, module in EXTRAS.items():
        if name.startswith(prefix) and importlib.util.find_spec(module) is None:
            pytest.skip(f"{name} needs the optional extra {module!r} (pip install 'nasrobust[{module}]')")


def objective(name: str, calls: list):
    w = np.random.default_rng(0).normal(size=(2, len(SPACE.to_vector(SPACE.sample(1)[0]))))

    def linear(k: int) -> FunctionMetric:
        def f(arch):
            calls.append(arch)
            return float(SPACE.to_vector(arch) @ w[k])
        return FunctionMetric(f, f"linear{k}")

    return [linear(0), linear(1)] if SEARCHERS.get(name).multi_objective else linear(0)


def test_the_registry_holds_both_kinds():
    assert DISCRETE and DIFFERENTIABLE


@pytest.mark.parametrize("name", NAMES)
def test_declares_its_name_doc_and_options(name):
    cls = SEARCHERS.get(name)
    assert cls.name == name and SEARCHERS.doc(name)
    assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
    defaults = build_options(cls.Options, {}, owner=name)  # every option has a default
    assert [d[0] for d in describe_options(cls.Options)] == [f.name for f in dataclasses.fields(defaults)]


@pytest.mark.parametrize("name", NAMES)
def test_bad_option_and_budget_are_one_line_errors(name):
    _needs_extra(name)
    with pytest.raises(SearchError) as info:
        create_searcher(name, SPACE, None if is_differentiable(name) else (lambda a: 0.0), colour="red")
    assert "colour" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SearchError, match="budget"):
        create_searcher(name, SPACE, None if is_differentiable(name) else (lambda a: 0.0), budget=0)


def key(result) -> list:
    """What a search found, without its wall times."""
    return [(e.index, e.encoding, e.values, e.scores, e.predicted) for e in result.history]


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_searcher_contract(name, tmp_path):
    _needs_extra(name)
    calls: list = []
    result = create_searcher(name, SPACE, objective(name, calls), budget=BUDGET, seed=0).run(tmp_path / "state.jsonl")
    history = result.history
    assert 0 < len(history) <= BUDGET and [e.index for e in history] == list(range(len(history)))
    assert len({e.encoding for e in history}) == len(history), "an architecture is evaluated once"
    assert all(SPACE.decode(e.encoding) == e.arch for e in history), "canonical archs of the space"
    n_objectives = 2 if SEARCHERS.get(name).multi_objective else 1
    assert len(calls) == n_objectives * len(history) and all(len(e.values) == n_objectives for e in history)
    json.dumps(result.to_dict())
    # the same seed gives the same search; the state file replays it without measuring again
    again = create_searcher(name, SPACE, objective(name, []), budget=BUDGET, seed=0).run()
    assert key(again) == key(result)
    replayed: list = []
    resumed = create_searcher(name, SPACE, objective(name, replayed), budget=BUDGET, seed=0).run(tmp_path / "state.jsonl")
    assert key(resumed) == key(result) and not replayed
    header, done = read_state(tmp_path / "state.jsonl")
    assert header["searcher"] == name and len(done) == len(history)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_differentiable_searcher_contract(name):
    runs = [create_searcher(name, SPACE, None, budget=1, seed=0, **TINY).run() for _ in range(2)]
    best = runs[0].best
    assert SPACE.decode(best.encoding) == best.arch and SPACE.arch(best.arch.genome) == best.arch
    assert all(np.isfinite(best.values))
    assert key(runs[1]) == key(runs[0]), "same seed, same cell and scores"


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_differentiable_searcher_names_the_spaces_it_runs_on(name):
    with pytest.raises(SearchError, match="one-shot cell supernet; 'bignas-small' has none") as info:
        create_searcher(name, "bignas-small", None, budget=1, **TINY).run()
    usable = [n for n in ("darts", "nb201") if get_space(n).has_search_supernet()]
    assert usable == ["darts", "nb201"] and all(n in str(info.value) for n in usable)
