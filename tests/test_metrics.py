"""The metric plug: store lookups (+ surrogate fallback), live evaluation, composition, the spec grammar."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nasrobust.metrics import (
    GRAMMAR,
    Constrained,
    CostMetric,
    FunctionMetric,
    LiveMetric,
    MetricError,
    MetricSpecError,
    MetricUnavailableError,
    MultiObjective,
    Oriented,
    Selector,
    StoreMetric,
    WeightedSum,
    parse_metric,
    parse_number,
)
from nasrobust.errors import NasRobustError
from nasrobust.records import Protocol, Record, ResultKey
from nasrobust.space import get_space
from nasrobust.store import open_results

SPACE = get_space("nb201")
PGD = Protocol.make(eps=0.1, norm="Linf", steps=20, restarts=1, seed=0, n_examples=100)
EPS = (0.1, 0.2)


def _values(arch, i):
    """Deterministic 'measurements' of architecture ``i``: clean > pgd@0.1 > pgd@0.2."""
    return {("clean", 0.0): 0.9 - 0.01 * i, ("pgd_linf", 0.1): 0.5 - 0.02 * i, ("pgd_linf", 0.2): 0.2 - 0.01 * i}


@pytest.fixture(scope="module")
def archs():
    return SPACE.sample(6, seed=11)


@pytest.fixture()
def db(tmp_path, archs):
    """A tiny store: 5 of the 6 archs, clean and PGD accuracies, plus an mce row (lower is better)."""
    path = tmp_path / "results.db"
    records = []
    for i, arch in enumerate(archs[:5]):
        for (noise, level), v in _values(arch, i).items():
            records.append(Record(ResultKey.of(arch, weights_id="w0", dataset="mnist5k", suite="adversarial",
                                               noise=noise, level=level, metric="accuracy"), v, PGD))
        records.append(Record(ResultKey.of(arch, weights_id="w0", dataset="mnist5k", suite="natural", noise="mce",
                                           level=0.0, metric="mce"), 1.0 + 0.1 * i, PGD))
    with open_results(path, create=True) as store:
        store.write_many(records)
    return path


class FakeSurrogate:
    """Any object with predict(arch) -> float is a fallback (the analysis surrogate's interface)."""

    def __init__(self):
        self.asked = []

    def predict(self, arch):
        self.asked.append(arch)
        return 0.123


# ----------------------------------------------------------------------------- store
def test_store_metric_exact_lookup(db, archs):
    m = StoreMetric(db, "adversarial/pgd_linf/accuracy@0.1")
    for i, arch in enumerate(archs[:5]):
        assert m(arch) == pytest.approx(0.5 - 0.02 * i, abs=0)  # the stored double, bit for bit
        assert m.last.predicted is False and m.last.source == "store"
    assert m.higher_is_better and m.calls == 5
    m(archs[0])
    assert m.calls == 5, "repeated architectures are answered from the cache"
    # a non-canonical twin of a stored arch finds it (the store canonicalises encodings)
    assert m(SPACE.decode(archs[0].encoding)) == m(archs[0])


def test_store_metric_levels_and_directions(db, archs):
    assert StoreMetric(db, "adversarial/pgd_linf/accuracy@0.2")(archs[1]) == pytest.approx(0.19)
    assert StoreMetric(db, "adversarial/clean/accuracy")(archs[1]) == pytest.approx(0.89)  # only level stored
    mce = StoreMetric(db, "natural/mce/mce")
    assert not mce.higher_is_better and mce.score(archs[2]) == pytest.approx(-1.2)
    with pytest.raises(MetricUnavailableError, match="only at level"):
        StoreMetric(db, "adversarial/pgd_linf/accuracy@0.3")(archs[0])
    with pytest.raises(MetricError, match="stored values match"):  # two levels, none chosen
        StoreMetric(db, "adversarial/pgd_linf/accuracy")(archs[0])


def test_store_metric_direction_is_the_one_the_suite_declares(tmp_path, archs):
    """The bug: a metric-name list of its own made store:DB:system/summary/std *maximise* the spread of system-noise
    accuracies. The direction now comes from the suite's declaration (nasrobust.noise.base.metric_info)."""
    from nasrobust.noise.base import metric_info

    path = tmp_path / "sys.db"
    stds = [0.05, 0.01, 0.20]
    with open_results(path, create=True) as store:
        store.write_many(Record(ResultKey.of(a, weights_id="w0", dataset="mnist5k", suite="system", noise="summary",
                                             level=0.0, metric="std"), v, PGD) for a, v in zip(archs, stds))
    spread = parse_metric(f"store:{path}:system/summary/std")
    assert spread.higher_is_better is False
    assert max(archs[:3], key=spread.score) == archs[1], "a search keeps the architecture with the smallest spread"
    for suite, noise, metric in (("system", "summary", "std"), ("certified", "jacobian_linf", "jacobian_norm_mean"),
                                 ("natural", "mce", "mce"), ("adversarial", "pgd_linf", "accuracy")):
        declared = metric_info(suite, noise, metric).higher_is_better
        assert StoreMetric(path, f"{suite}/{noise}/{metric}").higher_is_better is declared
    assert not StoreMetric(path, "certified/jacobian_linf/jacobian_norm_mean").higher_is_better
    with pytest.raises(NasRobustError, match="natural metric"):
        StoreMetric(path, "natural/mce/vibes")  # an undeclared metric has no direction: a clear error


def test_store_metric_missing_and_fallback(db, archs):
    with pytest.raises(MetricUnavailableError, match="no adversarial/pgd_linf/accuracy@0.1"):
        StoreMetric(db, "adversarial/pgd_linf/accuracy@0.1")(archs[5])
    sur = FakeSurrogate()
    m = StoreMetric(db, "adversarial/pgd_linf/accuracy@0.1", fallback=sur)
    assert m(archs[0]) == pytest.approx(0.5) and not m.last_predicted and sur.asked == []
    assert m(archs[5]) == 0.123 and m.last_predicted and m.last.source == "surrogate"
    with pytest.raises(MetricError, match="predict"):
        StoreMetric(db, "adversarial/clean/accuracy", fallback=object())


def test_surrogate_fallback_from_the_spec(tmp_path):
    """fallback=surrogate fits nasrobust.analysis.surrogate on the stored archs; unstored archs are predicted."""
    w = np.random.default_rng(0).normal(size=30)
    stored = SPACE.sample(16, seed=1)
    path = tmp_path / "s.db"
    with open_results(path, create=True) as store:
        store.write_many([Record(ResultKey.of(a, weights_id="w0", dataset="digits", suite="adversarial", noise="pgd_linf",
                                              level=0.1, metric="accuracy"), float(SPACE.to_vector(a) @ w), PGD)
                          for a in stored])  # digits: the analysis table loads the dataset for its size
    m = parse_metric(f"store:{path}:adversarial/pgd_linf/accuracy@0.1?fallback=surrogate", space=SPACE)
    assert m(stored[0]) == pytest.approx(float(SPACE.to_vector(stored[0]) @ w)) and not m.last_predicted
    new = next(a for a in SPACE.sample(80, seed=2) if a not in set(stored))
    value = m(new)
    assert m.last_predicted and m.last.source == "surrogate" and math.isfinite(value)
    assert value == pytest.approx(m.fallback.predict(new).value)
    with pytest.raises(MetricSpecError, match="search space"):
        parse_metric(f"store:{path}:adversarial/pgd_linf/accuracy@0.1?fallback=surrogate")


def test_store_metric_ambiguous_weights(db, archs):
    with open_results(db, create=True) as store:
        store.write(Record(ResultKey.of(archs[0], weights_id="w1", dataset="mnist5k", suite="adversarial",
                                        noise="clean", level=0.0, metric="accuracy"), 0.7, PGD))
    with pytest.raises(MetricError, match="weights="):
        StoreMetric(db, "adversarial/clean/accuracy")(archs[0])
    assert StoreMetric(db, "adversarial/clean/accuracy", weights_id="w1")(archs[0]) == 0.7
    assert parse_metric(f"store:{db}:adversarial/clean/accuracy?weights=w0")(archs[0]) == pytest.approx(0.9)


# ----------------------------------------------------------------------------- composition
def test_weighted_sum_orients_each_term(db, archs):
    acc = StoreMetric(db, "adversarial/pgd_linf/accuracy@0.1")
    mce = StoreMetric(db, "natural/mce/mce")
    s = WeightedSum([(0.5, acc), (2.0, mce)])
    for i, a in enumerate(archs[:5]):
        assert s(a) == pytest.approx(0.5 * (0.5 - 0.02 * i) - 2.0 * (1.0 + 0.1 * i))
    assert s.higher_is_better
    sur = FakeSurrogate()
    mixed = WeightedSum([(1.0, acc), (1.0, StoreMetric(db, "adversarial/clean/accuracy", fallback=sur))])
    mixed(archs[0])
    assert not mixed.last_predicted
    with pytest.raises(MetricUnavailableError):
        mixed(archs[5])  # the first term has no fallback


def test_constrained_by_analytic_flops(archs):
    flops = CostMetric("flops")
    values = sorted(flops(a) for a in archs)
    budget = values[2]
    inner = FunctionMetric(lambda a: 1.0, "one")
    hard = Constrained(inner, max_flops=budget)
    for a in archs:
        feasible = SPACE.cost(a).flops <= budget
        assert hard(a) == (1.0 if feasible else -math.inf)
        assert hard.last.source == ("function" if feasible else "infeasible")
    lam = 3.0
    soft = Constrained(inner, max_flops=budget, penalty=lam)
    for a in archs:
        over = max(0.0, SPACE.cost(a).flops / budget - 1.0)
        assert soft(a) == pytest.approx(1.0 - lam * over)
    # lower-is-better metrics get +inf when infeasible, so their score is -inf too
    lower = Constrained(Oriented(inner, False), max_params=1)
    assert lower(archs[0]) == math.inf and lower.score(archs[0]) == -math.inf
    assert inner.calls == len(set(archs)), "infeasible archs are not evaluated by the hard constraint"


def test_cost_metric_matches_space_cost(archs):
    for a in archs:
        c = SPACE.cost(a)
        assert CostMetric("flops")(a) == c.flops and CostMetric("params")(a) == c.params
    with pytest.raises(MetricError):
        CostMetric("latency")


def test_multi_objective(db, archs):
    mo = MultiObjective([StoreMetric(db, "adversarial/clean/accuracy"), StoreMetric(db, "natural/mce/mce"),
                         CostMetric("flops")])
    assert mo.directions == (True, False, False)
    a = archs[3]
    assert mo(a) == (pytest.approx(0.87), pytest.approx(1.3), SPACE.cost(a).flops)
    assert mo.scores(a) == (pytest.approx(0.87), pytest.approx(-1.3), -SPACE.cost(a).flops)
    assert mo.last_predicted == (False, False, False)


# ----------------------------------------------------------------------------- the grammar
def test_parse_numbers():
    assert parse_number("8/255") == 8 / 255
    assert parse_number("300M") == 3e8 and parse_number("1.5k") == 1500.0 and parse_number("1e-3") == 1e-3
    with pytest.raises(ValueError):
        parse_number("fast")


def test_selector_grammar():
    assert Selector.parse("adversarial/pgd_linf@8/255") == Selector("adversarial", "pgd_linf", "accuracy", 8 / 255)
    assert Selector.parse("system/png/pil/bilinear/accuracy@0") == Selector("system", "png/pil/bilinear", "accuracy", 0.0)
    assert Selector.parse("natural/mce/mce").level is None


def test_parse_store_and_composition(db, archs):
    m = parse_metric(f"store:{db}:adversarial/pgd_linf/accuracy@0.1")
    assert isinstance(m, StoreMetric) and m(archs[1]) == pytest.approx(0.48)
    neg = parse_metric(f"-store:{db}:adversarial/pgd_linf/accuracy@0.1")
    assert isinstance(neg, Oriented) and not neg.higher_is_better and neg(archs[1]) == pytest.approx(0.48)
    assert parse_metric(f"min:store:{db}:adversarial/clean/accuracy").higher_is_better is False
    assert parse_metric(f"max:store:{db}:natural/mce/mce").higher_is_better is True
    s = parse_metric(f"0.5*store:{db}:adversarial/clean/accuracy+0.5*store:{db}:adversarial/pgd_linf/accuracy@0.1"
                     f"+1e-9*-cost:flops")
    assert isinstance(s, WeightedSum) and [w for w, _ in s.terms] == [0.5, 0.5, 1e-9]
    a = archs[2]
    assert s(a) == pytest.approx(0.5 * 0.88 + 0.5 * 0.46 - 1e-9 * SPACE.cost(a).flops)
    assert parse_metric("cost:params")(a) == SPACE.cost(a).params
    w = parse_metric(f"1e+1*store:{db}:adversarial/clean/accuracy")  # an exponent's '+' is not a term separator
    assert isinstance(w, WeightedSum) and w(a) == pytest.approx(8.8)


@pytest.mark.parametrize("spec, problem", [
    ("", "empty"),
    ("accuracy", "does not start with"),
    ("store:results.db", "store:DB:SUITE"),
    ("store:x.db:adversarial", "SUITE/NOISE"),
    ("store:x.db:adversarial/pgd@fast", "not a number"),
    ("store:x.db:adversarial/pgd?weights", "KEY=VALUE"),
    ("store:x.db:adversarial/pgd?colour=red", "unknown store option"),
    ("proxy:magic", "unknown proxy"),
    ("cost:latency", "unknown cost"),
    ("live:ckpt", "live:CHECKPOINT#"),
    ("0.5*", "does not start with"),
    ("store:x.db:a/b?fallback=oracle", "unknown store.fallback value"),
])
def test_bad_specs_explain_with_grammar(spec, problem):
    with pytest.raises(MetricSpecError) as info:
        parse_metric(spec)
    assert problem in str(info.value) and "metric spec grammar" in str(info.value)


def test_spec_options_use_the_one_option_grammar(db, archs):
    """?KEY=VALUE inside a spec is read like --suite-option and checked against the kind's declared options."""
    with pytest.raises(MetricSpecError, match="Did you mean 'weights'"):
        parse_metric(f"store:{db}:adversarial/clean/accuracy?weigths=w0")
    with pytest.raises(MetricSpecError, match=r"cost.num_classes: expected an integer, got 'ten'"):
        parse_metric("cost:flops?num_classes=ten")
    m = parse_metric("cost:flops?num_classes=10&input_size=28")
    assert m(archs[0]) == SPACE.cost(archs[0], 10, 28).flops


def test_grammar_lists_every_registered_kind_and_its_options():
    from nasrobust.metrics import METRIC_KINDS, grammar

    text = grammar()
    for name in METRIC_KINDS.names():
        assert f"'{name}:'" in text
    assert "weights=..." in text and "fallback=..." in text and "batch=64" in text


def test_grammar_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(MetricSpecError):
        parse_metric(f"__import__('pathlib').Path({str(marker)!r}).touch()")
    assert not marker.exists()
    assert "store:" in GRAMMAR and "proxy:" in GRAMMAR and "live:" in GRAMMAR


def test_proxy_spec_builds_proxy_metric():
    from nasrobust.metrics import ProxyMetric

    m = parse_metric("-proxy:jacobian?batch=8&channels=4&cells_per_stage=1")
    assert isinstance(m, Oriented) and isinstance(m.inner, ProxyMetric)
    assert m.inner.batch_size == 8 and m.inner.build_kwargs == {"channels": 4, "cells_per_stage": 1}


# ----------------------------------------------------------------------------- live
@pytest.fixture(scope="module")
def mnist():
    from nasrobust.data import load_dataset

    return load_dataset("mnist5k")


def _tiny_supernet(data):
    from nasrobust.supernet import build_supernet

    info = data.info
    torch.manual_seed(0)
    model = build_supernet("nb201", info.image_size, info.mean, info.std, num_classes=10, channels=4, cells_per_stage=1)
    return model.eval(), data


def _accuracy(model, images, labels):
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).double().mean())


def test_live_metric_clean_and_pgd_on_a_supernet(tmp_path, mnist):
    """Clean accuracy equals a direct recalibrate-extract-predict; PGD accuracy equals the Evaluator's stored value."""
    from nasrobust.data import stack
    from nasrobust.supernet import recalibrated_subnet

    model, data = _tiny_supernet(mnist)
    archs = SPACE.sample(2, seed=5)
    n, recal = 40, 200
    clean = LiveMetric(model, data, "adversarial/clean/accuracy@0", n_examples=n, recalib_images=recal, batch_size=50,
                       cache_dir=tmp_path / "cache")
    images, labels = stack(data.test_subset(n))
    for arch in archs:
        sub = recalibrated_subnet(model, arch, data, recal, seed=0)
        assert clean(arch) == pytest.approx(_accuracy(sub, images, labels), abs=1e-12)
        assert clean.last.source == "live" and not clean.last_predicted
    calls = clean.calls
    clean(archs[0])
    assert clean.calls == calls, "cached per encoding"

    # the same through the spec grammar, from a saved supernet checkpoint
    from nasrobust import checkpoint

    meta = checkpoint.CheckpointMeta(kind="supernet", space="nb201", dataset=dict(data.info.__dict__), recipe={},
                                     supernet=dict(model.supernet.config))
    checkpoint.save(tmp_path / "sn", meta, model.state_dict())
    spec = f"live:{tmp_path / 'sn'}#adversarial/clean/accuracy@0?n={n}&recalib={recal}&batch=50&cache_dir={tmp_path / 'cache'}"
    parsed = parse_metric(spec)
    assert isinstance(parsed, LiveMetric) and parsed(archs[1]) == pytest.approx(clean(archs[1]), abs=1e-12)

    sel = "adversarial/pgd_linf/accuracy@0.1"
    opts = {"steps": 3}
    live = LiveMetric(model, data, sel, suite_options=opts, n_examples=n, recalib_images=recal, batch_size=50,
                      cache_dir=tmp_path / "cache")
    assert live.suite_options == {"attacks": "pgd_linf", "eps_linf": 0.1, "steps": 3}
    store = open_results(tmp_path / "live.db", create=True)
    persisted = LiveMetric(model, data, sel, suite_options=opts, n_examples=n, recalib_images=recal, batch_size=50,
                           cache_dir=tmp_path / "cache", store=store, weights_id="tiny")
    for arch in archs:
        v = live(arch)
        assert 0.0 <= v <= clean(arch)
        assert persisted(arch) == pytest.approx(v, abs=1e-12), "direct suite run == Evaluator + store lookup"
    assert StoreMetric(store, sel, weights_id="tiny")(archs[0]) == pytest.approx(live(archs[0]))


def test_live_metric_with_a_standalone_builder(tmp_path, mnist):
    """Without a supernet: any Arch -> module callable (here a stand-alone build with BN re-calibrated)."""
    from nasrobust.data import stack
    from nasrobust.models import ImageClassifier
    from nasrobust.supernet import recalibrate_bn

    data = mnist
    info = data.info
    x_cal, _ = stack(data.train_subset(100, torch.Generator().manual_seed(0)))

    def build(arch):
        torch.manual_seed(0)
        m = ImageClassifier(SPACE.build(arch, num_classes=10, channels=4, cells_per_stage=1), 28, info.mean, info.std)
        recalibrate_bn(m, [x_cal])
        return m

    arch = SPACE.sample(1, seed=3)[0]
    m = LiveMetric(build, data, "adversarial/clean/accuracy@0", n_examples=30, cache_dir=tmp_path)
    images, labels = stack(data.test_subset(30))
    assert m(arch) == pytest.approx(_accuracy(build(arch).eval(), images, labels), abs=1e-12)


def test_live_metric_argument_errors(tmp_path):
    with pytest.raises(MetricError, match="weights_id"):
        LiveMetric(lambda a: None, None, "adversarial/clean/accuracy@0", store=open_results(tmp_path / "x.db", create=True))
    with pytest.raises(MetricError, match="level explicitly"):
        LiveMetric(lambda a: None, None, "adversarial/pgd_linf/accuracy")


def test_function_metric_and_numpy_callable():
    w = np.arange(30, dtype=float)
    m = FunctionMetric(lambda a: float(SPACE.to_vector(a) @ w), "lin")
    a = SPACE.sample(1)[0]
    assert m(a) == float(SPACE.to_vector(a) @ w) and m.name == "lin" and m.higher_is_better
