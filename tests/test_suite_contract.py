"""Every registered noise suite and every registered attack, through the same invariants.

Like ``test_space_contract.py`` for spaces: a new suite or attack is covered the moment it
registers. Suites run with their own ``cpu_options`` (the study's reduced protocol) on a small
CNN trained on real MNIST digits; attacks run at the MNIST family's largest budget.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nasrobust.data import load_dataset, stack
from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.noise.adversarial import attack_run, minimal_distances, transfer_examples
from nasrobust.noise.attacks import (
    FAMILY_DEFAULTS, NORMS, AttackSettings, attack_names, attack_spec, lp_norms, predict_labels,
)
from nasrobust.noise.base import SUITES, EvalContext, MetricInfo, metric_info
from nasrobust.options import build_options, describe_options, options_dict
from tests.helpers import trained_mnist_model

SUITE_NAMES = SUITES.names()
ATTACK_NAMES = attack_names()
N = 12
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def digits(data):
    x, y = stack(data.test)
    return x[:N], y[:N]


@pytest.fixture(scope="module")
def model():
    return trained_mnist_model(width=4, steps=40)


def _ctx(data, digits, tmp_path, reference=None) -> EvalContext:
    x, y = digits
    return EvalContext(data=data, images=x, labels=y, cache_dir=tmp_path, device=CPU, batch_size=8, seed=1,
                       reference=reference, reference_name="self" if reference else None)


# ----------------------------------------------------------------------------- declarations
@pytest.mark.parametrize("name", SUITE_NAMES)
def test_suite_declares_metrics_and_options(name):
    cls = SUITES.get(name)
    assert cls.name == name and cls.metrics, f"{name} declares no metrics"
    seen = set()
    for info in cls.metrics:
        assert isinstance(info, MetricInfo) and isinstance(info.higher_is_better, bool)
        assert (info.noise, info.metric) not in seen, f"{name} declares {info.noise}/{info.metric} twice"
        seen.add((info.noise, info.metric))
        assert info.headline is None or info.noise is not None, "a headline names its noise"
        assert info.rank_group is not None or not info.rank_fallback
        assert metric_info(name, info.noise or "any-noise", info.metric).higher_is_better == info.higher_is_better or \
            info.noise is not None
    assert all(h.headline for h in cls.headlines())
    with pytest.raises(NasRobustError):
        cls.metric_info("clean", "no_such_metric")
    assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
    for field, kind, _, help_text in describe_options(cls.Options):
        assert kind and help_text, f"{name}.{field} has no help"


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_options_round_trip_and_unknown_keys(name):
    cls = SUITES.get(name)
    for values in ({}, dict(cls.cpu_options)):
        suite = cls.from_options(values)
        again = build_options(cls.Options, options_dict(suite.options), owner=name)
        assert again == suite.options
    first = dataclasses.fields(cls.Options)[0].name
    with pytest.raises(UnknownNameError) as err:
        cls.from_options({first + "x": 1})
    message = str(err.value)
    assert name in message and f"Did you mean {first!r}" in message and "\n" not in message


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_selector_options_are_valid_options(name):
    cls = SUITES.get(name)
    for info in cls.metrics:
        if info.noise is not None:
            cls.from_options(cls.selector_options(info.noise, 0.1))


# ----------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def runs(data, digits, model, tmp_path_factory):
    """Each suite twice with its cpu_options: plain, then with the first run as the reference model."""
    out = {}
    for name in SUITE_NAMES:
        cache = tmp_path_factory.mktemp(name)
        suite = SUITES.create(name, **SUITES.get(name).cpu_options)
        ctx = _ctx(data, digits, cache)
        assert suite.not_applicable(model) is None
        suite.prepare(ctx)
        first = {(m.noise, m.level, m.metric): m.value for m in suite.run(model, ctx)}
        fresh = SUITES.create(name, **SUITES.get(name).cpu_options)  # another instance, same disk cache
        ref_ctx = _ctx(data, digits, cache, reference=lambda s, n, lv, m, first=first: first.get((n, float(lv), m)))
        second = {(m.noise, m.level, m.metric): m.value for m in fresh.run(model, ref_ctx)}
        out[name] = (suite, fresh, ctx, first, second)
    return out


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_every_recorded_metric_is_declared(name, runs):
    _, _, _, first, second = runs[name]
    assert first
    for noise, level, metric in {**first, **second}:
        info = metric_info(name, noise, metric)  # raises for an undeclared metric
        assert isinstance(info.higher_is_better, bool)
        assert isinstance(level, float) and math.isfinite(level)
    assert all(isinstance(v, float) and not math.isnan(v) for v in [*first.values(), *second.values()])


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_same_seed_same_numbers_and_a_stable_protocol(name, runs):
    suite, fresh, ctx, first, second = runs[name]
    assert {k: second[k] for k in first} == first  # the second run repeats every value of the first
    p = suite.protocol(ctx)
    assert p.hash == fresh.protocol(ctx).hash == suite.protocol(ctx).hash
    rebuilt = SUITES.get(name).from_options(options_dict(suite.options))
    assert rebuilt.protocol(ctx).hash == p.hash


# ----------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_attack_spec_is_consistent(attack):
    spec = attack_spec(attack)
    assert spec.name == attack and spec.norm in NORMS and spec.doc
    assert not (spec.minimal and (spec.transferable or spec.single_budget))
    params = spec.params(AttackSettings(), 10)
    assert all(isinstance(k, str) for k in params)
    assert attack_names().index(attack) == sorted(attack_names(), key=lambda a: attack_spec(a).order).index(attack)


@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_attack_stays_in_its_ball_breaks_points_and_repeats(attack, model, digits):
    x, y = digits
    spec = attack_spec(attack)
    eps = FAMILY_DEFAULTS["mnist"].of_norm(spec.norm)[-1]
    correct = predict_labels(model, x, CPU, 64) == y
    settings = AttackSettings(steps=5, cw_steps=10, cw_search_steps=1)
    if spec.minimal:
        dist = minimal_distances(model, x, y, correct, attack=attack, batch_size=8, seed=0, settings=settings)
        assert torch.all(dist[~correct] == 0) and torch.all(dist[correct] > 0)
        again = minimal_distances(model, x, y, correct, attack=attack, batch_size=8, seed=0, settings=settings)
        assert torch.equal(dist, again)
        return
    seen = []
    res = attack_run(model, x, y, correct, attack, eps, batch_size=8, seed=0, settings=settings,
                     on_batch=lambda idx, adv: seen.append((idx, adv)))
    for idx, adv in seen:
        assert adv.min() >= 0 and adv.max() <= 1
        assert torch.all(lp_norms(adv - x[idx], spec.norm) <= eps * (1 + 1e-5) + 1e-6)
    assert not (res.robust & ~correct).any() and res.robust.sum() < correct.sum()
    assert torch.equal(attack_run(model, x, y, correct, attack, eps, batch_size=8, seed=0, settings=settings).robust,
                       res.robust)
    if spec.transferable:
        adv = transfer_examples(model, x, y, attack, eps, batch_size=8, settings=settings)
        assert adv.shape == x.shape and torch.all(lp_norms(adv - x, spec.norm) <= eps * (1 + 1e-5) + 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITE_NAMES)
def test_default_options_record_only_declared_metrics(name, data, digits, model, tmp_path):
    """Every code path of the defaults (all attacks, all corruptions and sequences, the whole grid, every bound)."""
    suite = SUITES.create(name)
    ctx = _ctx(data, digits, tmp_path)
    first = {(m.noise, m.level, m.metric): m.value for m in suite.run(model, ctx)}
    ref_ctx = _ctx(data, digits, tmp_path, reference=lambda s, n, lv, m: first.get((n, float(lv), m)))
    recorded = {*first, *(
        (m.noise, m.level, m.metric) for m in SUITES.create(name).run(model, ref_ctx))}
    undeclared = []
    for noise, _, metric in recorded:
        try:
            metric_info(name, noise, metric)
        except NasRobustError:
            undeclared.append(f"{noise}/{metric}")
    assert not undeclared, f"{name} records undeclared metrics: {sorted(set(undeclared))}"
