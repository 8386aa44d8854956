"""Issue 12's work savings that never change a number: the shared clean pass and the system suite's batch memo.

Each saving has a switch (``EvalContext.share_clean`` / ``dedupe_inputs``, defaulted from
``NASROBUST_NO_SHARED_CLEAN`` / ``NASROBUST_NO_INPUT_DEDUPE``) that is not a suite option, so the
protocols -- and hence the store's units -- are the same with it on or off; the stored records must be
identical, and the model must be called fewer times with it on.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from nasrobust import get_space
from nasrobust.data import load_dataset
from nasrobust.evaluator import Evaluator, make_suites
from nasrobust.inference import predict
from nasrobust.noise import system as S
from nasrobust.noise.base import SUITES, EvalContext
from nasrobust.store import open_results
from tests.helpers import trained_mnist_model

ARCH = get_space("nb201").sample(1, seed=0)[0]  # any encoding: the store keys results by it
N = 80
BATCH = 32  # 3 batches of the 80 images, the last one short


class Counting(nn.Module):
    """Wraps a classifier and keeps every input it is called on (detached), to count forward passes."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.resolution = 28
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.inner(x)

    def calls_on(self, images: torch.Tensor) -> int:
        """Calls whose input is exactly one of ``images``' batches (clean passes)."""
        batches = [images[i:i + BATCH] for i in range(0, len(images), BATCH)]
        return sum(any(x.shape == b.shape and torch.equal(x, b) for b in batches) for x in self.inputs)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k")


def _run(tmp_path, data, name, suites, **switches):
    """Score the counting model with ``suites`` into a fresh store; (records, model, evaluator)."""
    model = Counting(trained_mnist_model())
    store = open_results(tmp_path / f"{name}.db", create=True)
    ev = Evaluator(store, data, make_suites(suites, OPTIONS), n_examples=N, cache_dir=tmp_path / "cache",
                   batch_size=BATCH, progress=False)
    for key, value in switches.items():
        setattr(ev.ctx, key, value)
    report = ev.evaluate(model, ARCH, "w0")
    assert set(report.written) == set(suites)
    rows = {r.key: (r.value, r.protocol.hash) for r in store.query(ARCH)}
    store.close()
    return rows, model, ev


OPTIONS = {
    "adversarial": {"attacks": ("fgsm", "pgd_linf"), "eps_linf": (0.1,), "steps": 10},
    "natural": {"corruptions": ("contrast", "gaussian_noise"), "severities": (1, 5), "fp_kinds": ()},
    # pil and opencv decode these JPEGs to the same pixels (both bundle libjpeg-turbo; test_system_noise.py)
    "system": {"formats": ("jpeg",), "decoders": ("pil", "opencv"), "resizers": ("pil_bilinear", "opencv_area")},
}


def test_switches_default_from_the_environment(monkeypatch, data):
    def ctx() -> EvalContext:
        return EvalContext(data=data, images=torch.zeros(1, 1, 28, 28), labels=torch.zeros(1, dtype=torch.long),
                           cache_dir=Path("."), device=torch.device("cpu"))

    assert ctx().share_clean and ctx().dedupe_inputs
    monkeypatch.setenv("NASROBUST_NO_SHARED_CLEAN", "1")
    monkeypatch.setenv("NASROBUST_NO_INPUT_DEDUPE", "1")
    assert not ctx().share_clean and not ctx().dedupe_inputs
    monkeypatch.setenv("NASROBUST_NO_SHARED_CLEAN", "0")
    assert ctx().share_clean


def test_shared_clean_pass_same_records_fewer_forwards(tmp_path, data):
    on, m_on, ev = _run(tmp_path, data, "on", ("adversarial", "natural"))
    off, m_off, _ = _run(tmp_path, data, "off", ("adversarial", "natural"), share_clean=False)
    assert on == off and len(on) > 10
    assert len({h for _, h in on.values()}) == 2  # one protocol per suite, the same whichever switch
    batches = math.ceil(N / BATCH)
    # off: the adversarial and the natural suite each run the clean images; on: once for both
    assert m_off.calls_on(ev.ctx.images) == 2 * batches
    assert m_on.calls_on(ev.ctx.images) == batches
    assert len(m_off.inputs) - len(m_on.inputs) == batches
    assert ev.ctx._clean is None  # the scope closed with the model's evaluation: no logits outlive it


def test_clean_logits_are_the_suites_own_pass_and_follow_in_place_changes(data):
    model = trained_mnist_model()
    images, labels = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.zeros(40, dtype=torch.long)
    ctx = EvalContext(data=data, images=images, labels=labels, cache_dir=Path("."),
                      device=torch.device("cpu"), batch_size=16)
    counted = Counting(model)
    assert torch.equal(ctx.clean_logits(counted), predict(model, images, 16))
    ctx.clean_logits(counted)
    assert len(counted.inputs) == 2 * 3  # outside a scope every call computes
    with ctx.clean_scope():
        first = ctx.clean_logits(counted)
        assert ctx.clean_logits(counted) is first and len(counted.inputs) == 3 * 3
        with torch.no_grad():  # an in-place write to a parameter bumps its version: recomputed
            p = next(model.parameters())
            p.add_(1.0)
            changed = ctx.clean_logits(counted)
            p.sub_(1.0)
        assert len(counted.inputs) == 4 * 3 and not torch.equal(changed, first)
        other = Counting(model)
        ctx.clean_logits(other)
        assert len(other.inputs) == 3  # another model is its own pass
    ctx.share_clean = False
    with ctx.clean_scope():
        ctx.clean_logits(counted)
        ctx.clean_logits(counted)
    assert len(counted.inputs) == 6 * 3


def test_system_batch_memo_same_records_fewer_forwards(tmp_path, data):
    on, m_on, _ = _run(tmp_path, data, "on", ("system",))
    off, m_off, _ = _run(tmp_path, data, "off", ("system",), dedupe_inputs=False)
    assert on == off and len(on) == 4 + 6  # 4 pairs, mean/std/worst of jpeg and of all
    batches = math.ceil(N / BATCH)
    assert len(m_off.inputs) == 4 * batches  # every (format, decoder, resizer) pair runs every batch
    assert len(m_on.inputs) == 2 * batches  # opencv's decode equals pil's: its two pairs reuse pil's predictions


def test_identity_resize_grid_runs_the_images_once(tmp_path, data):
    """At the image's own size (source_scale 1, PNG) every decoder x resizer gives the stored pixels: one pass."""
    suite = SUITES.create("system", formats=("png",), decoders=("pil", "opencv"),
                          resizers=("pil_bilinear", "opencv_linear", "pil_lanczos"), source_scale=1)
    ev = Evaluator(open_results(tmp_path / "r.db", create=True), data, [suite], n_examples=N, cache_dir=tmp_path / "cache",
                   batch_size=BATCH, progress=False)
    results = {}
    for dedupe in (True, False):
        ev.ctx.dedupe_inputs = dedupe
        model = Counting(trained_mnist_model())
        results[dedupe] = list(suite.run(model, ev.ctx)), len(model.inputs)
    batches = math.ceil(N / BATCH)
    assert results[True][0] == results[False][0]
    assert results[False][1] == 6 * batches and results[True][1] == batches
    # and the memo's accuracy is accuracy_u8's on each image set
    memo = S.BatchMemo(trained_mnist_model(), torch.device("cpu"), BATCH)
    u8 = suite.images(ev.ctx, "png", "pil", "pil_bilinear", 28)
    labels = ev.ctx.labels
    assert memo.accuracy(u8, labels) == S.accuracy_u8(trained_mnist_model(), u8, labels, torch.device("cpu"), BATCH)
    assert memo.accuracy(u8.clone(), labels) == memo.accuracy(u8, labels) and memo.forwards == batches


class _Refusing:
    """Claims held by another worker: every claim fails; a second try on one unit means the evaluator waited."""

    def __init__(self):
        self.tries: dict[str, int] = {}

    def claim(self, key: str) -> bool:
        self.tries[key] = self.tries.get(key, 0) + 1
        if self.tries[key] > 1:
            raise AssertionError(f"waited for {key}")
        return False


def test_workers_wait_only_for_reference_units_that_relative_metrics_read(tmp_path, data, monkeypatch):
    """A worker leaves the reference's units of suites without relative metrics to their owner and moves on;
    it waits only for those a suite reads back (natural's mCE), as before."""
    from nasrobust.evaluator import Reference

    assert [n for n in ("adversarial", "natural", "system", "certified") if SUITES.get_class(n).reads_reference] == ["natural"]
    store = open_results(tmp_path / "r.db", create=True)
    ev = Evaluator(store, data, make_suites(("system", "adversarial", "natural"), OPTIONS), n_examples=N,
                   cache_dir=tmp_path / "cache", batch_size=BATCH, progress=False, reference=Reference(ARCH.encoding, "w0"))
    ev.claims = _Refusing()
    monkeypatch.setattr("nasrobust.evaluator.time.sleep", lambda s: None)
    with pytest.raises(AssertionError, match=r"waited for .*\|natural\|"):
        ev.evaluate(trained_mnist_model(), ARCH, "w0")
    assert sorted(k.rsplit("|", 2)[1] for k in ev.claims.tries) == ["adversarial", "natural", "system"]
    ev.claims = _Refusing()  # another model than the reference: nothing is waited for
    report = ev.evaluate(trained_mnist_model(), get_space("nb201").sample(2, seed=0)[1], "w0")
    assert report.shared == {"system", "adversarial", "natural"} and not report.written
