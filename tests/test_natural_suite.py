"""The natural suite end to end: cached corruptions, accuracy per severity, CE/mCE, flip probability."""

from __future__ import annotations

import pytest
import torch

from nasrobust import get_space
from nasrobust.data import load_dataset
from nasrobust.errors import NasRobustError
from nasrobust.evaluator import Evaluator, Reference
from nasrobust.noise import natural
from nasrobust.noise.base import SUITES
from nasrobust.store import open_results
from tests.helpers import trained_mnist_model

ARCHS = get_space("nb201").sample(2, seed=0)  # any encodings: the store keys results by them


def suite():
    return SUITES.create("natural", corruptions=("glass_blur", "contrast"), severities=(1, 5),
                         fp_kinds=("translate", "gaussian_noise"), fp_examples=30)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k")


def evaluator(tmp_path, data, reference=None):
    store = open_results(tmp_path / "r.db", create=True)
    return store, Evaluator(store, data, [suite()], n_examples=100, cache_dir=tmp_path / "cache", batch_size=100,
                            reference=reference, progress=False)


def values(store, enc):
    return {(r.key.noise, r.key.level, r.key.metric): r.value for r in store.query(enc, suite="natural")}


def test_accuracy_falls_with_severity_and_self_reference_gives_ce_one(tmp_path, data):
    model = trained_mnist_model()
    ref = Reference(ARCHS[0].encoding, "w0")
    store, ev = evaluator(tmp_path, data, ref)
    ev.evaluate(model, ARCHS[0], "w0")
    v = values(store, ARCHS[0])
    assert v[("clean", 0.0, "accuracy")] > 0.9
    assert v[("glass_blur", 5.0, "accuracy")] < v[("glass_blur", 1.0, "accuracy")]
    assert v[("contrast", 5.0, "accuracy")] < v[("clean", 0.0, "accuracy")]
    assert v[("mce", 0.0, "mce")] == pytest.approx(1.0)
    assert v[("glass_blur", 0.0, "ce")] == pytest.approx(1.0)
    mean = (v[("glass_blur", 1.0, "accuracy")] + v[("glass_blur", 5.0, "accuracy")]
            + v[("contrast", 1.0, "accuracy")] + v[("contrast", 5.0, "accuracy")]) / 4
    assert v[("mean_corruption", 0.0, "accuracy")] == pytest.approx(mean)
    for kind in ("translate", "gaussian_noise"):
        assert 0.0 <= v[(f"fp/{kind}", 0.0, "fp")] <= 1.0
    assert v[("fp/translate", 0.0, "fp")] > 0  # shifting digits by up to 7 px flips some predictions


def test_ce_against_another_model_matches_the_formula(tmp_path, data):
    strong, weak = trained_mnist_model(), trained_mnist_model(width=4, steps=40)
    ref = Reference(ARCHS[0].encoding, "w0")
    store, ev = evaluator(tmp_path, data, ref)
    ev.evaluate(strong, ARCHS[0], "w0")
    ev.evaluate(weak, ARCHS[1], "w1")
    r, w = values(store, ARCHS[0]), values(store, ARCHS[1])
    for c in ("glass_blur", "contrast"):
        err = sum(1 - w[(c, s, "accuracy")] for s in (1.0, 5.0))
        ref_err = sum(1 - r[(c, s, "accuracy")] for s in (1.0, 5.0))
        assert w[(c, 0.0, "ce")] == pytest.approx(err / ref_err)
        gap = sum((1 - w[(c, s, "accuracy")]) - (1 - w[("clean", 0.0, "accuracy")]) for s in (1.0, 5.0))
        ref_gap = sum((1 - r[(c, s, "accuracy")]) - (1 - r[("clean", 0.0, "accuracy")]) for s in (1.0, 5.0))
        if ref_gap > 0:
            assert w[(c, 0.0, "relative_ce")] == pytest.approx(gap / ref_gap)
        else:
            assert (c, 0.0, "relative_ce") not in w
    assert w[("mce", 0.0, "mce")] == pytest.approx((w[("glass_blur", 0.0, "ce")] + w[("contrast", 0.0, "ce")]) / 2)


def test_corrupted_data_is_cached_and_reused(tmp_path, data, monkeypatch):
    model = trained_mnist_model()
    store, ev = evaluator(tmp_path, data)
    ev.evaluate(model, ARCHS[0], "w0")
    first = values(store, ARCHS[0])

    def fail(*a, **k):
        raise AssertionError("corruptions must come from the cache")

    monkeypatch.setattr(natural, "corrupt", fail)
    monkeypatch.setattr(natural, "perturbation_sequence", fail)
    store2, ev2 = evaluator(tmp_path, data)  # same cache folder, same store file
    ev2.evaluate(model, ARCHS[1], "w0")
    second = values(store2, ARCHS[1])
    assert second == first  # same model, same cached data: same numbers
    assert ("mce", 0.0, "mce") not in first  # no reference given


def test_bad_options():
    with pytest.raises(NasRobustError, match="gaussian_noise"):
        SUITES.create("natural", corruptions=("gauss",))
    with pytest.raises(NasRobustError, match="severit"):
        SUITES.create("natural", severities=(0,))


def test_grey_and_colour_inputs_both_work(tmp_path):
    images = torch.rand(4, 1, 28, 28)
    out = natural.corrupt(images, "frost", 3, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
