"""Parameter/FLOP budgets: parsing, uniform sampling inside a budget, searchers and the CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from scipy import stats

import nasrobust.budget as budget_module
from nasrobust.budget import Budget, BudgetedSpace, BudgetError, parse_count, parse_range, sample_in_budget
from nasrobust.cli.main import main
from nasrobust.cost import Cost
from nasrobust.metrics import parse_metric
from nasrobust.search import SearchError, create_searcher
from nasrobust.space import get_space, list_spaces
from nasrobust.spaces.darts import _PAIRS, EDGES, STEPS, DartsSpace, _from_pairs, canonical_cell, draw_count

NB201 = get_space("nb201")


def nb201_inside(budget: Budget) -> set:
    """The in-budget nb201 architectures, listed independently of the sampler."""
    return {a for a in NB201.enumerate() if budget.admits(NB201.cost(a))}


def chi_square_p(counts: Counter, categories, expected: np.ndarray | None = None) -> float:
    """p-value of Pearson's chi-square test that ``counts`` over ``categories`` follows ``expected`` (uniform)."""
    observed = np.array([counts.get(c, 0) for c in categories], dtype=np.float64)
    assert observed.sum() == sum(counts.values()), "a draw fell outside the categories"
    if expected is None:
        expected = np.full(len(observed), observed.sum() / len(observed))
    return float(stats.chisquare(observed, expected).pvalue)


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, value", [
    ("20M", 20e6), ("1.5G", 1.5e9), ("300k", 3e5), ("300K", 3e5), ("2.5e7", 2.5e7), ("7", 7.0), (" 26 M ", 26e6),
    (".5M", 5e5),
])
def test_parse_count(text, value):
    assert parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("text, expected", [
    ("20M:30M", (20e6, 30e6)), (":5M", (None, 5e6)), ("1.5G:", (1.5e9, None)), ("2M:2M", (2e6, 2e6)),
])
def test_parse_range(text, expected):
    assert parse_range(text, "--params") == expected


@pytest.mark.parametrize("text, message", [
    ("20M", "expected MIN:MAX"),
    (":", "give at least one end"),
    ("abc:5M", "'abc' is not a count"),
    ("20X:30M", "is not a count"),
    ("-1M:5M", "is not a count"),
    ("30M:20M", "MIN 30M is above MAX 20M; write --params 20M:30M"),
])
def test_parse_range_errors(text, message):
    with pytest.raises(BudgetError, match=message.replace("(", r"\(")):
        parse_range(text, "--params")


def test_budget_admits_inclusive_ends_and_describes_itself():
    b = Budget(params=(10, 20), flops=(None, 100))
    assert b.admits(Cost(10, 100)) and b.admits(Cost(20, 0))
    assert not b.admits(Cost(9, 50)) and not b.admits(Cost(21, 50)) and not b.admits(Cost(15, 101))
    assert str(Budget.parse("20M:30M", ":1.5G")) == "params 20M..30M, FLOPs ..1.5G"
    assert not Budget().bounded and str(Budget()) == "no budget"
    with pytest.raises(BudgetError, match="empty"):
        Budget(params=(5, 1))


# ----------------------------------------------------------------------------- uniformity
@pytest.fixture(scope="module")
def nb201_budget() -> tuple[Budget, list]:
    """The parameter-free nb201 cells (none/skip/pool only): 127 architectures, classes of 1 to 200+ cells."""
    b = Budget(params=(None, 73.4e3))
    inside = sorted(nb201_inside(b), key=lambda a: a.encoding)
    assert len(inside) == 127 and len({NB201.factors(a)["class_size"] for a in inside}) > 10
    return b, inside


def test_enumeration_is_exact_and_uniform_on_nb201(nb201_budget):
    """nb201 (6,466 archs) is enumerated: every draw is inside, the rate is exact, first picks are uniform."""
    b, inside = nb201_budget
    s = sample_in_budget(NB201, len(inside), seed=0, budget=b)
    assert s.method == "enumeration" and set(s) == set(inside) and len(s) == len(inside)
    assert s.acceptance_rate == pytest.approx(len(inside) / 6466) and s.in_budget == pytest.approx(len(inside))
    firsts = Counter(sample_in_budget(NB201, 1, seed=seed, budget=b)[0] for seed in range(20 * len(inside)))
    assert chi_square_p(firsts, inside) > 1e-3


def test_rejection_sampling_is_uniform_over_the_in_budget_set(nb201_budget, monkeypatch):
    """Forced onto the rejection path, nb201 draws match uniform over the exactly enumerated in-budget set."""
    monkeypatch.setattr(budget_module, "ENUMERATE_MAX", 0)
    b, inside = nb201_budget
    draws = 20 * len(inside)
    s = sample_in_budget(NB201, 1, seed=0, budget=b)
    assert s.method == "rejection"
    firsts = Counter(sample_in_budget(NB201, 1, seed=seed, budget=b)[0] for seed in range(draws))
    assert set(firsts) <= set(inside)
    assert chi_square_p(firsts, inside) > 1e-3
    # KS on the ranks agrees (the in-budget set in a fixed order).
    rank = {a: i for i, a in enumerate(inside)}
    values = [rank[a] + 0.5 for a, k in firsts.items() for _ in range(k)]
    assert stats.kstest(np.array(values) / len(inside), "uniform").pvalue > 1e-3


def test_nb201_random_genome_is_not_uniform_over_architectures(nb201_budget):
    """The control: the searchers' draw (uniform over 15,625 cells) conditioned on the budget fails the same test."""
    b, inside = nb201_budget
    rng = np.random.default_rng(0)
    allowed = set(inside)
    counts: Counter = Counter()
    while sum(counts.values()) < 10 * len(inside):
        a = NB201.arch(NB201.random_genome(rng))
        if a in allowed:
            counts[a] += 1
    assert chi_square_p(counts, inside) < 1e-6


def test_nb201_uniform_genome_is_uniform_over_its_6466_architectures():
    rng = np.random.default_rng(1)
    counts = Counter(NB201.arch(NB201.uniform_genome(rng)) for _ in range(20 * 6466))
    assert chi_square_p(counts, list(NB201.enumerate())) > 1e-3


def test_ofa_uniform_genome_weights_depth_by_the_stages_it_holds():
    """Every distinct stage equally likely: depth d in proportion to 9**d, blocks uniform, stages independent."""
    space = get_space("ofa-mbv3-small")
    rng = np.random.default_rng(0)
    genomes = [space.uniform_genome(rng) for _ in range(6000)]
    depths = Counter(len(s) for g in genomes for s in g.stages)
    expected = np.array([9.0 ** d for d in space.depths])
    assert chi_square_p(depths, space.depths, expected / expected.sum() * sum(depths.values())) > 1e-3
    blocks = Counter((b.kernel, b.expand) for g in genomes for s in g.stages for b in s)
    assert chi_square_p(blocks, sorted(blocks)) > 1e-3 and len(blocks) == 9
    plain = Counter(len(s) for g in (space.random_genome(rng) for _ in range(2000)) for s in g.stages)
    assert chi_square_p(plain, space.depths) > 1e-3  # OFA's own draw: uniform depth


def _all_cells(ops: tuple[str, ...]):
    """Every cell a draw can produce with ``ops``: an input pair and an op per edge, per node."""
    for pairs in itertools.product(*_PAIRS):
        for o in itertools.product(ops, repeat=STEPS * EDGES):
            yield _from_pairs([(o[EDGES * n + e], pairs[n][e]) for n in range(STEPS) for e in range(EDGES)])


@pytest.mark.parametrize("ops", [
    ("skip_connect",),
    pytest.param(("none", "skip_connect"), marks=pytest.mark.slow),
])
def test_darts_draw_count_matches_brute_force(ops):
    """``draw_count`` of each canonical cell equals how many of all possible draws canonicalise to it."""
    counts = Counter(canonical_cell(c) for c in _all_cells(ops))
    assert all(draw_count(c) == k for c, k in counts.items())


def test_darts_uniform_cells_are_uniform_over_canonical_cells():
    """With one op: 79 canonical cells from 180 draws, 1 to 8 draws each; uniform_genome evens them out."""
    space = DartsSpace()
    space.move_ops = ("skip_connect",)
    classes = sorted(Counter(canonical_cell(c) for c in _all_cells(space.move_ops)))
    rng = np.random.default_rng(0)
    uniform = Counter(space.uniform_genome(rng).normal for _ in range(30 * len(classes)))
    assert chi_square_p(uniform, classes) > 1e-3
    plain = Counter(space.arch(space.random_genome(rng)).genome.normal for _ in range(30 * len(classes)))
    assert chi_square_p(plain, classes) < 1e-6


# ----------------------------------------------------------------------------- determinism, distinctness, errors
@pytest.mark.parametrize("name, budget", [
    ("nb201", Budget(params=(None, 0.5e6))),
    ("bignas", Budget(params=(20e6, 30e6))),
    ("robarch-small", Budget(flops=(None, 2e9))),
    ("ofa-mbv3", Budget(flops=(None, 300e6))),
    ("darts", Budget(params=(3e6, 3.5e6))),
    ("zoo", Budget(params=(None, 30e6))),
])
def test_deterministic_distinct_inside_and_prefix(name, budget):
    space = get_space(name)
    a = sample_in_budget(space, 12, seed=3, budget=budget)
    assert list(a) == list(sample_in_budget(space, 12, seed=3, budget=budget))
    assert list(a) != list(sample_in_budget(space, 12, seed=4, budget=budget))
    assert len(set(a)) == 12 and all(budget.admits(space.cost(x)) for x in a)
    assert list(sample_in_budget(space, 5, seed=3, budget=budget)) == list(a[:5])
    assert 0 < a.acceptance_rate <= 1 and budget_module.human(a.budget.params[1] or 1) and a.describe()
    assert list(budget.sample(space, 12, seed=3)) == list(a)


def test_no_budget_is_the_plain_sample_for_spaces_uniform_over_genomes():
    space = get_space("bignas")
    s = Budget().sample(space, 30, seed=7)
    assert list(s) == space.sample(30, seed=7) and s.acceptance_rate == 1.0


def test_budget_cost_setting_follows_classes_and_input_size():
    space = get_space("robarch-small")
    b = Budget(params=(None, 12e6), num_classes=100)
    s = sample_in_budget(space, 5, seed=0, budget=b)
    assert all(space.cost(a, num_classes=100).params <= 12e6 for a in s)


@pytest.mark.parametrize("name, budget, n, message", [
    ("nb201", Budget(params=(20e6, 30e6)), 5, r"no nb201 architecture is inside params 20M..30M: nb201 params range 73.3K..1.53M"),
    ("nb201", Budget(params=(1.4e6, None)), 50, r"holds only 1 of the 6,466 nb201 architectures; use --n 1 or fewer"),
    ("bignas", Budget(params=(200e6, 300e6)), 3, r"none of 16,000 uniform bignas draws is inside .* bignas params range 598K..109M"),
    ("bignas", Budget(params=(1e6, 1.2e6)), 500, r"too narrow for --n 500 in bignas: acceptance rate about .* use --n \d+ or fewer"),
])
def test_empty_or_too_narrow_budgets_fail_with_the_range(name, budget, n, message):
    with pytest.raises(BudgetError, match=message):
        sample_in_budget(get_space(name), n, seed=0, budget=budget)


# ----------------------------------------------------------------------------- searchers
def test_budgeted_space_proposes_only_inside():
    b = Budget(params=(20e6, 30e6))
    space = BudgetedSpace(get_space("bignas"), b)
    rng = np.random.default_rng(0)
    proposals = [space.arch(space.random_genome(rng)) for _ in range(20)]
    children = [space.mutate(p, rng) for p in proposals]
    assert all(b.admits(space.cost(a)) for a in proposals + children)
    assert all(b.admits(space.cost(a)) for a in space.neighbors(proposals[0])) and space.neighbors(proposals[0])
    outside = get_space("bignas").largest()
    with pytest.raises(BudgetError, match="outside the budget"):
        space.arch(outside.genome)
    assert 0 < space.accepted < space.draws


@pytest.mark.parametrize("searcher", ["random", "evolution", "local"])
def test_searchers_evaluate_only_inside_the_budget(searcher):
    """Maximising FLOPs under a params cap: every evaluation is inside, none wasted on infeasible archs."""
    b = Budget(params=(None, 0.6e6))
    space = BudgetedSpace(NB201, b)
    result = create_searcher(searcher, space, parse_metric("max:cost:flops"), budget=40, seed=0).run()
    assert len(result.history) == 40
    assert all(NB201.cost(e.arch).params <= 0.6e6 for e in result.history)
    assert space.size() == len(nb201_inside(b))


def test_search_state_records_the_budget(tmp_path):
    state = tmp_path / "state.jsonl"
    metric = parse_metric("max:cost:flops")
    create_searcher("random", BudgetedSpace(NB201, Budget(params=(None, 0.6e6))), metric, budget=5).run(state)
    with pytest.raises(SearchError, match="space_budget"):
        create_searcher("random", BudgetedSpace(NB201, Budget(params=(None, 0.7e6))), metric, budget=5).run(state)


def test_searcher_with_a_nearly_empty_budget_stops_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(budget_module, "PROPOSAL_TRIES", 2000)
    space = BudgetedSpace(get_space("bignas"), Budget(params=(500e6, None)))
    with pytest.raises(BudgetError, match="none of 2,000 random bignas architectures"):
        space.random_genome(np.random.default_rng(0))


# ----------------------------------------------------------------------------- CLI
def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_sample_robarch_small_budget_point(capsys, tmp_path):
    """RobArch-S-like budget (26M params): 50 distinct archs in 20M..30M, acceptance rate printed."""
    out_file = tmp_path / "s.jsonl"
    code, out, _ = run(capsys, "sample", "--space", "robarch", "--params", "20M:30M", "--n", "50", "--out", str(out_file))
    assert code == 0 and "sampled 50 distinct robarch architectures inside params 20M..30M" in out
    assert "acceptance rate" in out and "uniform draws" in out
    recs = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len({r["encoding"] for r in recs}) == 50 and all(20e6 <= r["params"] <= 30e6 for r in recs)


def test_cli_sample_flops_budget_exact_on_nb201(capsys):
    code, out, _ = run(capsys, "sample", "--space", "nb201", "--flops", "50M:100M", "--n", "10")
    assert code == 0 and "exact by enumeration" in out and "inside FLOPs 50M..100M" in out


@pytest.mark.parametrize("argv, message", [
    (["sample", "--space", "bignas", "--n", "3", "--params", "20M"], "--params '20M': expected MIN:MAX"),
    (["sample", "--space", "bignas", "--n", "3", "--params", "abc:5M"], "'abc' is not a count"),
    (["sample", "--space", "bignas", "--n", "3", "--flops", "2G:1.5G"], "MIN 2G is above MAX 1.5G; write --flops 1.5G:2G"),
    (["sample", "--space", "bignas", "--n", "3", "--params", ":"], "give at least one end"),
    (["sample", "--space", "nb201", "--n", "3", "--params", "5M:"], "no nb201 architecture is inside params 5M..: nb201 params range"),
    (["sample", "--space", "nb201", "--n", "500", "--params", "1.4M:"], "use --n 1 or fewer"),
    (["sample", "--space", "bignas", "--n", "3", "--params", "200M:300M"], "bignas params range 598K..109M"),
    (["search", "--space", "nb201", "--searcher", "random", "--metric", "cost:flops", "--params", "5M:", "--out", "x"],
     "no nb201 architecture is inside"),
    (["search", "--space", "nb201", "--searcher", "darts", "--params", ":1M", "--out", "x"],
     "use a discrete searcher"),
])
def test_cli_bad_budgets_exit_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out


def test_cli_bad_budget_has_no_traceback_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "nasrobust", "sample", "--space", "robarch", "--n", "5",
                           "--params", "30M:20M"], capture_output=True, text=True)
    assert proc.returncode == 2 and "write --params 20M:30M" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_search_with_budget(tmp_path, capsys):
    out = tmp_path / "search"
    code, text, err = run(capsys, "search", "--space", "nb201", "--searcher", "evolution", "--metric", "max:cost:flops",
                          "--params", ":0.6M", "--budget", "30", "--out", str(out), "--no-progress")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert all(NB201.cost(NB201.decode(e["encoding"])).params <= 0.6e6 for e in result["history"])


@pytest.mark.parametrize("name", list_spaces())
def test_every_space_has_a_valid_deterministic_uniform_genome(name):
    space = get_space(name)
    draws = [[space.arch(space.uniform_genome(np.random.default_rng(seed))) for seed in range(10)] for _ in range(2)]
    assert draws[0] == draws[1] and all(a.space == name for a in draws[0]) and len(set(draws[0])) > 1
