"""Discrete searchers: optimum found more often than chance, Pareto fronts, budget, history, exact resume, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from nasrobust.cli.main import main
from nasrobust.metrics import CostMetric, FunctionMetric, StoreMetric
from nasrobust.records import Protocol, Record, ResultKey
from nasrobust.search import (
    SEARCHERS,
    SearchError,
    create_searcher,
    dominates,
    list_searchers,
    pareto_front,
    read_state,
)
from nasrobust.space import get_space
from nasrobust.store import open_results

SPACE = get_space("nb201")
CORE = ("random", "evolution", "local", "nsga2")
SEEDS = range(10)
N_GENOMES = 15625  # nb201 cells; random draws are uniform over cells, then canonicalised


@pytest.fixture(scope="module")
def table():
    """Every canonical nb201 arch, its isomorphism-class size, and two fixed random linear objectives."""
    archs = list(SPACE.enumerate())
    x = np.stack([SPACE.to_vector(a) for a in archs])
    w = np.random.default_rng(1).normal(size=(2, 30))
    sizes = np.array([len(SPACE.indices(a)) for a in archs])
    return {"archs": archs, "x": x, "w": w, "values": x @ w.T, "sizes": sizes,
            "index": {a: i for i, a in enumerate(archs)}}


def linear(table, k=0):
    w = table["w"][k]
    return FunctionMetric(lambda a: float(SPACE.to_vector(a) @ w), f"linear{k}")


def test_registry():
    assert set(CORE) <= set(list_searchers())
    for name in CORE:
        assert SEARCHERS.get(name).name == name


# ----------------------------------------------------------------------------- finding the optimum
def _chance_of_hit(table, budget):
    """P(uniform random draws hit the optimum's class) with 2 * budget draws: a generous upper bound on
    what a random searcher of ``budget`` distinct archs achieves (it needs about ``budget`` draws)."""
    best = int(np.argmax(table["values"][:, 0]))
    return 1.0 - (1.0 - table["sizes"][best] / N_GENOMES) ** (2 * budget)


@pytest.mark.parametrize("name", ["evolution", "local"])
def test_single_objective_searchers_find_the_optimum_more_often_than_chance(table, name):
    budget = 150
    opt = float(table["values"][:, 0].max())
    hits = 0
    for seed in SEEDS:
        result = create_searcher(name, SPACE, linear(table), budget=budget, seed=seed).run()
        assert len(result.history) <= budget and len({e.encoding for e in result.history}) == len(result.history)
        hits += result.best.values[0] == pytest.approx(opt, abs=1e-12)
    chance = _chance_of_hit(table, budget)
    p_value = stats.binom.sf(hits - 1, len(SEEDS), chance)  # P(X >= hits) if the searcher were random
    assert chance < 0.03
    assert hits >= 3 and p_value < 1e-3, (name, hits, chance, p_value)


def test_random_search_matches_its_distribution(table):
    """Random search is the chance baseline: its best value over seeds matches an independent simulation
    of uniform draws over the 15,625 cells until ``budget`` distinct classes (successive sampling)."""
    budget, seeds = 40, range(30)
    values = table["values"][:, 0]
    found = [create_searcher("random", SPACE, linear(table), budget=budget, seed=s).run().best.values[0] for s in seeds]
    rng = np.random.default_rng(123)
    p = table["sizes"] / N_GENOMES
    sims = []
    for _ in range(2000):
        draws = rng.choice(len(p), size=3 * budget, p=p)
        _, first = np.unique(draws, return_index=True)
        chosen = draws[np.sort(first)[:budget]]
        sims.append(values[chosen].max())
    sims = np.array(sims)
    se = sims.std() / math.sqrt(len(found))
    assert abs(np.mean(found) - sims.mean()) < 4 * se, (np.mean(found), sims.mean(), se)
    assert stats.ks_2samp(found, sims).pvalue > 1e-3


def test_multi_objective_front_is_non_dominated_and_better_than_random(table):
    """NSGA-II on (clean, robust) synthetic objectives: its front is non-dominated, covers every evaluated
    arch, and contains far more truly Pareto-optimal archs than random search's expectation."""
    values = table["values"]
    order = np.lexsort((-values[:, 1], -values[:, 0]))
    true_front, best2 = set(), -np.inf
    for i in order:
        if values[i, 1] > best2:
            true_front.add(table["archs"][i])
            best2 = values[i, 1]
    budget = 150
    found = []
    for seed in SEEDS:
        result = create_searcher("nsga2", SPACE, [linear(table, 0), linear(table, 1)], budget=budget, seed=seed).run()
        front = result.front
        for a in front:
            assert not any(dominates(b.scores, a.scores) for b in result.history)
        for e in result.history:
            assert e in front or any(dominates(f.scores, e.scores) for f in front)
        found.append(len({e.arch for e in front} & true_front))
    # expected Pareto-optimal archs among random draws (2 * budget draws, generous)
    p = table["sizes"][[table["index"][a] for a in true_front]] / N_GENOMES
    random_expectation = float(np.sum(1 - (1 - p) ** (2 * budget)))
    assert np.mean(found) > 5 * random_expectation and min(found) >= 0, (found, random_expectation)
    assert sum(f > 0 for f in found) >= 8


def test_multi_objective_with_cost_and_directions(table):
    """clean vs robust vs analytic FLOPs (lower is better): scores are oriented, the front is non-dominated."""
    objectives = [linear(table, 0), linear(table, 1), CostMetric("flops")]
    result = create_searcher("nsga2", SPACE, objectives, budget=60, seed=0).run()
    assert [o.higher_is_better for o in result.objectives] == [True, True, False]
    for e in result.history:
        assert e.scores[2] == -e.values[2] == -SPACE.cost(e.arch).flops
    front = result.front
    assert front and all(not dominates(b.scores, a.scores) for a in front for b in result.history)
    assert pareto_front(result.history) == front
    with pytest.raises(SearchError, match="weighted sum"):
        create_searcher("evolution", SPACE, objectives)


# ----------------------------------------------------------------------------- budget, history, provenance
@pytest.mark.parametrize("name", CORE)
def test_budget_history_and_provenance(table, name):
    store_rows = {}
    metric = FunctionMetric(lambda a: store_rows.setdefault(a, float(SPACE.to_vector(a) @ table["w"][0])), "f")
    result = create_searcher(name, SPACE, metric, budget=25, seed=3).run()
    assert len(result.history) == 25 and result.stopped == "budget"
    assert [e.index for e in result.history] == list(range(25))
    assert metric.calls == 25, "every distinct arch is evaluated exactly once"
    elapsed = [e.elapsed for e in result.history]
    assert elapsed == sorted(elapsed) and all(e.seconds >= 0 for e in result.history)
    assert all(e.predicted == (False,) for e in result.history)


def test_predicted_values_are_recorded(tmp_path, table):
    archs = table["archs"][::2]
    db = tmp_path / "half.db"
    with open_results(db, create=True) as store:
        store.write_many([Record(ResultKey.of(a, weights_id="w", dataset="d", suite="adversarial", noise="pgd_linf",
                                              level=0.1, metric="accuracy"), 0.5, Protocol.make()) for a in archs])

    class Surrogate:
        def predict(self, arch):
            return 0.25

    metric = StoreMetric(db, "adversarial/pgd_linf/accuracy@0.1", fallback=Surrogate())
    result = create_searcher("random", SPACE, metric, budget=30, seed=0).run()
    stored = set(archs)
    for e in result.history:
        assert e.predicted == ((e.arch not in stored),) and e.values[0] == (0.25 if e.predicted[0] else 0.5)
    assert any(e.predicted[0] for e in result.history) and not all(e.predicted[0] for e in result.history)


def test_space_exhausted_stops_cleanly():
    zoo = get_space("zoo")
    result = create_searcher("random", zoo, lambda a: float(len(a.encoding)), budget=zoo.size() + 50, seed=0).run()
    assert result.stopped == "space exhausted" and len(result.history) == zoo.size()


def test_bad_options_and_budget():
    with pytest.raises(SearchError, match="Valid evolution options: population_size, sample_size"):
        create_searcher("evolution", SPACE, lambda a: 0.0, colour="red")
    with pytest.raises(SearchError, match="sample_size"):
        create_searcher("evolution", SPACE, lambda a: 0.0, population_size=3, sample_size=5)
    with pytest.raises(SearchError, match="budget"):
        create_searcher("random", SPACE, lambda a: 0.0, budget=0)


# ----------------------------------------------------------------------------- resume
class Interrupt(KeyboardInterrupt):
    pass


def _interrupting(table, after):
    count = [0]

    def f(arch):
        count[0] += 1
        if count[0] > after:
            raise Interrupt
        return float(SPACE.to_vector(arch) @ table["w"][0])

    return FunctionMetric(f, "linear0")


def _key(result):
    return [(e.index, e.encoding, e.values, e.scores, e.predicted) for e in result.history]


@pytest.mark.parametrize("name", CORE)
def test_resume_gives_the_uninterrupted_result(tmp_path, table, name):
    objective = (lambda m: [m, FunctionMetric(lambda a: -float(SPACE.to_vector(a) @ table["w"][1]), "linear1")]) \
        if SEARCHERS.get(name).multi_objective else (lambda m: m)
    full = create_searcher(name, SPACE, objective(linear(table)), budget=60, seed=7).run()
    state = tmp_path / "state.jsonl"
    with pytest.raises(Interrupt):
        create_searcher(name, SPACE, objective(_interrupting(table, 23)), budget=60, seed=7).run(state)
    header, done = read_state(state)
    assert len(done) == 23 and header["searcher"] == name
    with state.open("a") as f:  # killed while writing the next line
        f.write('{"index": 23, "encoding": "nb201:|nor_con')
    again = linear(table)
    resumed = create_searcher(name, SPACE, objective(again), budget=60, seed=7).run(state)
    assert _key(resumed) == _key(full)
    assert again.calls == 60 - 23, "replayed evaluations are not measured again"
    # extending a finished search equals running the larger budget at once
    longer = create_searcher(name, SPACE, objective(linear(table)), budget=80, seed=7).run(state)
    assert _key(longer) == _key(create_searcher(name, SPACE, objective(linear(table)), budget=80, seed=7).run())


def test_state_of_another_search_is_refused(tmp_path, table):
    state = tmp_path / "state.jsonl"
    create_searcher("evolution", SPACE, linear(table), budget=5, seed=0).run(state)
    with pytest.raises(SearchError, match="seed"):
        create_searcher("evolution", SPACE, linear(table), budget=5, seed=1).run(state)
    with pytest.raises(SearchError, match="options"):
        create_searcher("evolution", SPACE, linear(table), budget=5, seed=0, population_size=5).run(state)


# ----------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def full_store(tmp_path_factory, table):
    """A tabular store over all 6,466 nb201 archs: a synthetic robust accuracy in (0, 1) and a clean one."""
    db = tmp_path_factory.mktemp("store") / "results.db"
    proto = Protocol.make(eps=0.1, norm="Linf", steps=20, seed=0, n_examples=100)
    robust = 1 / (1 + np.exp(-table["values"][:, 0]))
    clean = 1 / (1 + np.exp(-table["values"][:, 1]))
    records = []
    for a, r, c in zip(table["archs"], robust, clean):
        for noise, level, v in (("pgd_linf", 0.1, r), ("clean", 0.0, c)):
            records.append(Record(ResultKey.of(a, weights_id="w", dataset="mnist5k", suite="adversarial",
                                               noise=noise, level=level, metric="accuracy"), float(v), proto))
    with open_results(db, create=True) as store:
        store.write_many(records)
    return db


def _history(path):
    return [(e["index"], e["encoding"], e["values"]) for e in json.loads(path.read_text())["history"]]


def test_cli_search_resume_and_result(tmp_path, full_store, table, capsys):
    spec = f"store:{full_store}:adversarial/pgd_linf/accuracy@0.1"
    base = ["search", "--space", "nb201", "--searcher", "evolution", "--metric", spec, "--seed", "2", "--no-progress"]
    assert main(base + ["--budget", "50", "--out", str(tmp_path / "full")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "full" / "result.json").read_text())
    assert result["evaluations"] == 50 and result["best"]["encoding"] in out
    best = max(result["history"], key=lambda e: e["values"][0])
    assert result["best"]["encoding"] == best["encoding"]
    assert result["best"]["values"][0] == pytest.approx(StoreMetric(full_store, "adversarial/pgd_linf/accuracy@0.1")(
        SPACE.decode(best["encoding"])))
    # a run killed after 17 evaluations (its state file cut there, mid-line), then rerun
    part = tmp_path / "part"
    lines = (tmp_path / "full" / "state.jsonl").read_text().splitlines()
    part.mkdir()
    (part / "state.jsonl").write_text("\n".join(lines[:18]) + "\n" + lines[18][:25])
    assert main(base + ["--budget", "50", "--out", str(part)]) == 0
    assert _history(part / "result.json") == _history(tmp_path / "full" / "result.json")
    # --budget extends, --fresh restarts
    assert main(base + ["--budget", "60", "--out", str(part)]) == 0
    assert _history(part / "result.json")[:50] == _history(tmp_path / "full" / "result.json")
    assert len(_history(part / "result.json")) == 60
    assert main(base + ["--budget", "10", "--fresh", "--out", str(part)]) == 0
    assert len(read_state(part / "state.jsonl")[1]) == 10


def test_cli_multi_objective_with_constraint(tmp_path, full_store, capsys):
    budget = 50_000_000  # about the median nb201 network: half the space is infeasible
    args = ["search", "--space", "nb201", "--searcher", "nsga2", "--no-progress", "--budget", "40",
            "--metric", f"store:{full_store}:adversarial/clean/accuracy",
            "--metric", f"store:{full_store}:adversarial/pgd_linf/accuracy@0.1",
            "--metric", "cost:flops", "--max-flops", "50M", "--out", str(tmp_path / "mo")]
    assert main(args) == 0
    result = json.loads((tmp_path / "mo" / "result.json").read_text())
    assert "Pareto front" in capsys.readouterr().out
    assert [o["higher_is_better"] for o in result["objectives"]] == [True, True, False]
    for e in result["history"]:
        feasible = SPACE.cost(SPACE.decode(e["encoding"])).flops <= budget
        assert feasible == all(math.isfinite(v) for v in e["values"])
    assert all(all(math.isfinite(v) for v in e["values"]) for e in result["front"])


def test_cli_user_errors(tmp_path, capsys):
    assert main(["search", "--space", "nb201", "--metric", "accuracy", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad metric spec" in err and "metric spec grammar" in err
    assert main(["search", "--space", "nb201", "--out", str(tmp_path)]) == 2
    assert "--metric" in capsys.readouterr().err
    assert main(["search", "--space", "nb201", "--searcher", "anneal", "--metric", "cost:flops", "--out", str(tmp_path)]) == 2
    assert "unknown searcher" in capsys.readouterr().err
    assert main(["search", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in CORE) and "population_size=20" in listing
    assert main(["search", "--help-metric"]) == 0 and "store:" in capsys.readouterr().out
