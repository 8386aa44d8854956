"""The adversarial suite on a small NAS-Bench-201 network trained on real MNIST digits.

References the tests check against: the formulas (Duchi's L1 projection vs a bisection
solver, AR/WCAR arithmetic on hand-made masks), a second implementation (APGD-L1 from the
official ``pyautoattack``; the official AutoAttack "standard" object's configuration and, in
the slow test, its robust accuracy), and the threat models themselves (norm budgets, box).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nasrobust.data import DatasetInfo, ImageData, load_dataset, stack
from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.models import ImageClassifier
from nasrobust.noise import attacks as A
from nasrobust.noise.adversarial import (
    AdversarialSettings, GradientMaskingWarning, Run, attack_run, finite_median, minimal_distances, robust_metrics,
    sanity_checks, transfer_examples, worst_case,
)
from nasrobust.noise.attacks.autoattack import AUTOATTACK_STAGES, autoattack_stages
from nasrobust.noise.attacks.cw import MinNormCW
from nasrobust.options import OptionError
from nasrobust.noise.base import SUITES, EvalContext
from nasrobust.space import get_space

ARCH = "nb201:|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
N_TEST = 40  # class-balanced (mnist5k's test set is interleaved by class)
CPU = torch.device("cpu")
#: Cheaper than the defaults (20 steps, CW 100 steps) so the module runs in well under a minute.
FAST = dict(steps=10, cw_steps=40)


def _train(data: ImageData, epochs: int = 2, seed: int = 0) -> nn.Module:
    """A 4-channel, one-cell-per-stage NB201 net at 16 px, Adam, a couple of epochs (~94% on mnist5k)."""
    space = get_space("nb201")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = space.build(space.resolve(ARCH), num_classes=10, input_size=16, channels=4, cells_per_stage=1)
        model = ImageClassifier(net, 16, data.info.mean, data.info.std)
    x, y = stack(data.train)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class Quantised(nn.Module):
    """Gradient masking by construction: inputs rounded to quarters (``torch.round`` has zero gradient)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def data() -> ImageData:
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def model(data):
    m = _train(data)
    x, y = stack(data.test)
    assert (A.predict_labels(m, x, CPU, 500) == y).double().mean() > 0.85
    return m


def _ctx(data: ImageData, tmp_path, n: int = N_TEST, seed: int = 0) -> EvalContext:
    x, y = stack(data.test)
    return EvalContext(data=data, images=x[:n], labels=y[:n], cache_dir=tmp_path, device=CPU, batch_size=32, seed=seed)


def _by_key(measurements):
    out = {}
    for m in measurements:
        key = (m.noise, m.level, m.metric)
        assert key not in out, f"duplicate measurement {key}"
        out[key] = m.value
    return out


@pytest.fixture(scope="module")
def suite_run(data, model, tmp_path_factory):
    ctx = _ctx(data, tmp_path_factory.mktemp("adv"))
    suite = SUITES.create("adversarial", attacks="fgsm,pgd_linf,pgd_l2,pgd_l1,mim,cw_l2", **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = _by_key(suite.run(model, ctx))
    return suite, ctx, values, caught


# ----------------------------------------------------------------------------- options and protocol
def test_bad_options_raise_user_errors():
    with pytest.raises(UnknownNameError) as err:
        SUITES.create("adversarial", attacks="pgd_linf,pgd_l3")
    assert isinstance(err.value, NasRobustError)
    for name in A.attack_names():
        assert name in str(err.value)
    for bad in (dict(eps_linf=-0.1), dict(eps_l2="abc"), dict(eps_l1=[]), dict(steps=0), dict(restarts="x"),
                dict(eps_autoattack=(0.1, 0.2)), dict(sanity_tolerance=1.5), dict(transfer_from=42)):
        with pytest.raises(OptionError):
            SUITES.create("adversarial", **bad)
    with pytest.raises(NasRobustError, match="no checkpoint"):
        SUITES.create("adversarial", transfer_from="/nonexistent/source.pt")
    suite = SUITES.create("adversarial", attacks=["mim", "fgsm"], eps_linf="8/255,1/255", steps="5")
    o = suite.options
    assert o.attacks == ("fgsm", "mim") and o.eps_linf == (1 / 255, 8 / 255) and o.steps == 5


def _fake_ctx(name: str, num_classes: int, tmp_path) -> EvalContext:
    family = {"cifar100": "cifar", "imagefolder": "imagenet"}[name]
    info = DatasetInfo(name, num_classes, 32, 3, (0.5,) * 3, (0.25,) * 3, "fabricated", family=family)
    ds = TensorDataset(torch.rand(4, 3, 32, 32), torch.arange(4) % num_classes)
    x, y = ds.tensors
    return EvalContext(data=ImageData(info, ds, ds), images=x, labels=y, cache_dir=tmp_path, device=CPU)


def test_family_defaults_and_protocol(tmp_path, data):
    suite = SUITES.create("adversarial")
    s = suite.settings(_ctx(data, tmp_path))
    assert (s.eps_linf, s.eps_l2, s.eps_l1, s.eps_autoattack) == ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0), (5.0, 10.0, 15.0), 0.3)
    cifar = suite.settings(_fake_ctx("cifar100", 100, tmp_path))
    assert cifar.eps_linf == (1 / 255, 4 / 255, 8 / 255) and cifar.eps_l2 == (0.25, 0.5, 1.0) and cifar.eps_autoattack == 8 / 255
    imnet = suite.settings(_fake_ctx("imagefolder", 1000, tmp_path))
    assert imnet.eps_linf == (0.5 / 255, 2 / 255, 8 / 255) and imnet.eps_l1 == (100.0, 400.0, 1600.0)
    assert imnet.eps_autoattack == 4 / 255
    # PGD and FGSM also run at AutoAttack's eps so the three can be compared; PGD also at eps 0
    pgd = [r.eps for r in imnet.white_box_runs() if r.attack == "pgd_linf"]
    assert pgd == [0.0, 0.5 / 255, 2 / 255, 4 / 255, 8 / 255]
    # AutoAttack at 4/255 sits only in tier 3 (Linf 8/255)
    tiers = imnet.tiers()
    aa = Run("autoattack", "autoattack", "linf", 4 / 255)
    assert [aa.eps <= t["linf"] for t in tiers] == [False, False, True]

    p = suite.protocol(_fake_ctx("cifar100", 100, tmp_path))
    assert p.steps == 20 and p.restarts == 1 and p.seed == 0 and p.n_examples == 4
    assert p.param("eps_linf") == (1 / 255, 4 / 255, 8 / 255) and p.param("attacks") == A.attack_names(default_only=True)
    assert p.param("autoattack_targets") == 9 and p.param("square_queries") == 5000 and p.param("apgd_iters") == 100
    assert p.param("step_size") == "0.25 * eps"
    assert p.hash == suite.protocol(_fake_ctx("cifar100", 100, tmp_path)).hash


def test_autoattack_configuration_matches_official(model):
    """Our stages carry the official 'standard' settings; torchattacks' own AutoAttack does not."""
    from pyautoattack import AutoAttack

    official = AutoAttack(model, norm="Linf", eps=0.1, version="standard", seed=0)
    stages = dict(autoattack_stages(model, 0.1, num_classes=10, seed=0))
    assert list(stages) == list(AUTOATTACK_STAGES) == official.attacks_to_run
    apgd, apgdt, fab, square = (stages[k] for k in AUTOATTACK_STAGES)
    assert (apgd.steps, apgd.n_restarts, apgd.thr_decr, apgd.loss) == (official.apgd.n_iter, official.apgd.n_restarts, official.apgd.thr_decr, "ce")
    assert (apgdt.steps, apgdt.n_restarts, apgdt.n_target_classes) == (official.apgd_targeted.n_iter, official.apgd_targeted.n_restarts, official.apgd_targeted.n_target_classes)
    assert (fab.steps, fab.n_restarts, fab.n_target_classes, fab.multi_targeted) == (official.fab.n_iter, official.fab.n_restarts, official.fab.n_target_classes, True)
    assert (fab.alpha_max, fab.eta, fab.beta) == (official.fab.alpha_max, official.fab.eta, official.fab.beta)
    assert (square.n_queries, square.p_init, square.rescale_schedule, square.loss) == (official.square.n_queries, official.square.p_init, official.square.rescale_schedule, official.square.loss)
    assert (apgd.steps, apgdt.n_target_classes, fab.n_target_classes, square.n_queries) == (100, 9, 9, 5000)
    # 9 targets for 100 classes too (torchattacks would attack n_classes - 1 = 99); 4 with 5 classes
    assert dict(autoattack_stages(model, 0.1, 100, 0))["apgd-t"].n_target_classes == 9
    assert dict(autoattack_stages(model, 0.1, 5, 0))["fab-t"].n_target_classes == 4


# ----------------------------------------------------------------------------- projections
def _l1_projection_by_bisection(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Second implementation: find theta with sum(max(|v| - theta, 0)) = eps by bisection (float64)."""
    out = v.clone().double()
    for i, row in enumerate(v.double()):
        a = row.abs()
        if a.sum() <= eps:
            continue
        lo, hi = 0.0, float(a.max())
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if (a - mid).clamp_min(0).sum() > eps else (lo, mid)
        out[i] = torch.sign(row) * (a - hi).clamp_min(0)
    return out


def test_l1_projection_matches_bisection_and_is_a_projection():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(16, 3, 5, 5, generator=g) * torch.rand(16, 1, 1, 1, generator=g) * 4
    eps = 7.0
    p = A.project_l1(v, eps)
    ref = _l1_projection_by_bisection(v.reshape(16, -1), eps).reshape(v.shape)
    assert torch.allclose(p.double(), ref, atol=1e-5)
    norms = A.lp_norms(p, "l1")
    inside = A.lp_norms(v, "l1") <= eps
    assert inside.any() and (~inside).any()
    assert torch.equal(p[inside], v[inside])
    assert torch.all(norms[~inside] <= eps + 1e-5) and torch.allclose(norms[~inside], torch.full_like(norms[~inside], eps), atol=1e-4)
    # Euclidean projection onto a convex set: <v - p, q - p> <= 0 for any q in the ball
    q = A.project_l1(torch.randn(16, 3, 5, 5, generator=g) * 3, eps)
    inner = ((v - p) * (q - p)).reshape(16, -1).sum(dim=1)
    assert torch.all(inner <= 1e-4)


# ----------------------------------------------------------------------------- the suite on a trained model
def test_each_attack_reduces_accuracy_and_sanity_passes(suite_run):
    suite, ctx, v, caught = suite_run
    clean = v["clean", 0.0, "accuracy"]
    assert clean > 0.85
    s = suite.settings(ctx)
    for attack in ("fgsm", "pgd_linf", "pgd_l2", "pgd_l1", "mim", "cw_l2"):
        top = s.eps_of(A.attack_spec(attack).norm)[-1]
        assert v[attack, top, "accuracy"] < clean - 0.3, attack
        for e in s.eps_of(A.attack_spec(attack).norm):
            acc, ar = v[attack, e, "accuracy"], v[attack, e, "ar"]
            assert 0.0 <= acc <= clean and ar == pytest.approx(acc / clean)
        curve = [v[attack, e, "accuracy"] for e in s.eps_of(A.attack_spec(attack).norm)]
        assert all(b <= a + 2 / N_TEST for a, b in zip(curve, curve[1:])), (attack, curve)  # falls with eps
    # PGD is at least as strong as FGSM, and eps 0 reproduces clean accuracy exactly
    assert v["pgd_linf", 0.0, "accuracy"] == clean and v["pgd_linf", 0.0, "ar"] == 1.0
    for e in s.eps_linf:
        assert v["pgd_linf", e, "accuracy"] <= v["fgsm", e, "accuracy"]
    for check in ("eps0_equals_clean", "monotonic_in_eps", "aa_le_pgd_le_fgsm", "no_zero_gradients"):
        assert v["sanity", 0.0, check] == 1.0
    assert not [w for w in caught if issubclass(w.category, GradientMaskingWarning)]
    # WCAR: at most every member's AR, non-increasing in the tier
    wcar = [v["worst_case", float(t), "wcar"] for t in (1, 2, 3)]
    assert wcar == sorted(wcar, reverse=True)
    for t, e in enumerate(s.eps_linf, start=1):
        assert wcar[t - 1] <= min(v["pgd_linf", e, "ar"], v["pgd_l2", s.eps_l2[t - 1], "ar"], v["pgd_l1", s.eps_l1[t - 1], "ar"])
        assert v["worst_case", float(t), "accuracy"] == pytest.approx(wcar[t - 1] * clean)
    # CW: accuracy at eps is the fraction with minimal distance > eps; the median is consistent with it
    med = v["cw_l2", 0.0, "median_l2"]
    assert 0 < med < s.eps_l2[-1]
    below = [e for e in s.eps_l2 if e < med]
    assert all(v["cw_l2", e, "accuracy"] >= 0.5 - 1 / N_TEST for e in below)


@pytest.mark.parametrize("attack", ["fgsm", "pgd_linf", "pgd_l2", "pgd_l1", "mim"])
def test_norms_and_box_respected(attack, model, data):
    x, y = stack(data.test)
    x, y = x[:N_TEST], y[:N_TEST]
    eps = {"linf": 0.2, "l2": 1.5, "l1": 8.0}[A.attack_spec(attack).norm]
    seen = []
    correct = A.predict_labels(model, x, CPU, 64) == y
    res = attack_run(model, x, y, correct, attack, eps, batch_size=16, seed=3, settings=A.AttackSettings(steps=10),
                     on_batch=lambda idx, adv: seen.append((idx, adv)))
    assert sum(len(i) for i, _ in seen) == int(correct.sum())
    for idx, adv in seen:
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        norms = A.lp_norms(adv - x[idx], A.attack_spec(attack).norm)
        assert torch.all(norms <= eps + 1e-5 * max(1.0, eps)), (attack, norms.max().item())
    assert res.outside_budget == 0 and res.robust.sum() < correct.sum()


def test_success_outside_the_ball_is_never_counted(model, data):
    x, y = stack(data.test)
    x, y = x[:8], y[:8]
    correct = torch.ones(8, dtype=torch.bool)
    cheat = lambda xb, yb: torch.zeros_like(xb)  # noqa: E731  -- a blank image: misclassified, far outside the ball
    with A.attack_mode(model):
        res = A.run_cascade(model, [cheat], x, y, correct, "linf", 0.1, CPU, 4)
    assert torch.equal(res.robust, correct) and res.outside_budget > 0


def test_pgd_l1_agrees_with_apgd_l1(model, data):
    """Sparse L1 descent vs the official APGD-L1 (Croce & Hein 2021): same ballpark, APGD the stronger."""
    from pyautoattack.autopgd_base import APGDAttack

    x, y = stack(data.test)
    x, y = x[:60], y[:60]
    eps = 6.0
    correct = A.predict_labels(model, x, CPU, 64) == y
    ours = float(attack_run(model, x, y, correct, "pgd_l1", eps, seed=0).robust.double().mean())
    with A.attack_mode(model):
        adv = APGDAttack(model, n_iter=100, norm="L1", eps=eps, seed=0, device="cpu").perturb(x[correct], y[correct])
        theirs = float((model(adv).argmax(1) == y[correct]).sum()) / len(x)
    clean = float(correct.double().mean())
    assert theirs < clean - 0.3 and ours < clean - 0.3  # both attacks work at this budget
    assert theirs - 2 / len(x) <= ours <= theirs + 0.2, (ours, theirs)


def test_cw_distances_are_real_adversarial_distances(model, data):
    x, y = stack(data.test)
    x, y = x[:16], y[:16]
    correct = A.predict_labels(model, x, CPU, 64) == y
    with A.attack_mode(model):
        adv, d = MinNormCW(model, steps=40).distances(x[correct], y[correct])
    found = torch.isfinite(d)
    assert found.float().mean() > 0.8
    assert torch.all(model(adv[found]).argmax(1) != y[correct][found])
    assert torch.allclose(A.lp_norms(adv[found] - x[correct][found], "l2"), d[found])
    dist = minimal_distances(model, x[:6], y[:6], correct[:6], attack="cw_l2", batch_size=4,
                             settings=A.AttackSettings(cw_steps=10, cw_search_steps=0))
    assert torch.all(dist[~correct[:6]] == 0) and torch.all(dist[correct[:6]] > 0)
    assert finite_median(torch.tensor([0.0, 1.0, 3.0, math.inf])) == 2.0
    assert finite_median(torch.tensor([1.0, math.inf, math.inf])) is None


# ----------------------------------------------------------------------------- metrics arithmetic
def test_ar_and_wcar_arithmetic_on_hand_made_masks():
    clean = torch.tensor([1, 1, 1, 1, 0, 1, 0, 1], dtype=torch.bool)  # 6 of 8 correct
    pgd = torch.tensor([1, 0, 1, 1, 0, 0, 0, 1], dtype=torch.bool)  # 4 survive
    fgsm = torch.tensor([1, 1, 1, 0, 1, 0, 0, 1], dtype=torch.bool)  # index 4 is clean-wrong: never robust
    assert robust_metrics(pgd, clean) == {"accuracy": 4 / 8, "ar": 4 / 6}
    assert robust_metrics(fgsm, clean) == {"accuracy": 4 / 8, "ar": 4 / 6}
    assert worst_case([pgd, fgsm], clean) == {"accuracy": 3 / 8, "wcar": 3 / 6}
    assert robust_metrics(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == {"accuracy": 0.0}


def test_sanity_checks_fire_on_inconsistent_results():
    s = AdversarialSettings(("fgsm", "pgd_linf", "autoattack"), (0.1, 0.2), (1.0,), (5.0,), 0.2, 1, 0.005, 10)
    n = 100
    mask = lambda k: torch.arange(n) < k  # noqa: E731
    results = {Run("pgd_linf", "pgd_linf", "linf", 0.0): mask(90), Run("pgd_linf", "pgd_linf", "linf", 0.1): mask(30),
               Run("pgd_linf", "pgd_linf", "linf", 0.2): mask(50), Run("fgsm", "fgsm", "linf", 0.1): mask(20),
               Run("fgsm", "fgsm", "linf", 0.2): mask(10), Run("autoattack", "autoattack", "linf", 0.2): mask(40)}
    checks = {c.name: c for c in sanity_checks(results, 0.92, n, s, {"autoattack_survivors": (90, 60, 50, 50, 40), "zero_gradients": 0})}
    assert not checks["eps0_equals_clean"].passed  # 0.90 vs 0.92
    assert not checks["monotonic_in_eps"].passed and "pgd_linf" in checks["monotonic_in_eps"].detail
    assert not checks["aa_le_pgd_le_fgsm"].passed
    assert not checks["square_gain_small"].passed  # Square broke 10% after the gradient stages
    assert checks["no_zero_gradients"].passed
    assert "whitebox_le_transfer" not in checks  # no transfer runs


def test_gradient_masking_model_is_flagged(model, data, tmp_path):
    """A quantised-input model: zero gradients, white-box PGD stalls, transfer from the plain model does not."""
    ctx = _ctx(data, tmp_path)
    suite = SUITES.create("adversarial", attacks="fgsm,pgd_linf", eps_linf=(0.1, 0.2), transfer_from=model, steps=10)
    with pytest.warns(GradientMaskingWarning, match="possible gradient masking") as record:
        v = _by_key(suite.run(Quantised(model), ctx))
    failed = {str(w.message).split()[3] for w in record if issubclass(w.category, GradientMaskingWarning)}
    assert {"no_zero_gradients", "whitebox_le_transfer"} <= failed
    assert v["sanity", 0.0, "no_zero_gradients"] == 0.0 and v["sanity", 0.0, "whitebox_le_transfer"] == 0.0
    assert v["transfer/pgd_linf", 0.2, "accuracy"] < v["pgd_linf", 0.2, "accuracy"] - 0.3
    # transfer examples are cached per source and reused: a second run does not attack the source again
    assert list(tmp_path.rglob("*.pt"))
    import nasrobust.noise.adversarial as adv

    def fail(*a, **k):
        raise AssertionError("transfer examples regenerated")

    original, adv.transfer_examples = adv.transfer_examples, fail
    try:
        with pytest.warns(GradientMaskingWarning):
            again = _by_key(suite.run(Quantised(model), ctx))
    finally:
        adv.transfer_examples = original
    assert again["transfer/pgd_linf", 0.2, "accuracy"] == v["transfer/pgd_linf", 0.2, "accuracy"]


def test_transfer_helper_stays_in_the_ball(model, data):
    x, y = stack(data.test)
    x, y = x[:16], y[:16]
    for attack, eps in (("pgd_l1", 5.0), ("pgd_l2", 1.0), ("fgsm", 0.1)):
        adv = transfer_examples(model, x, y, attack, eps, batch_size=8, settings=A.AttackSettings(steps=5))
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        assert torch.all(A.lp_norms(adv - x, A.attack_spec(attack).norm) <= eps + 1e-5 * max(1.0, eps))
    with pytest.raises(UnknownNameError):
        transfer_examples(model, x, y, "cw_l2", 1.0)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_numbers_and_global_rng_untouched(model, data, tmp_path):
    suite = SUITES.create("adversarial", attacks="pgd_linf,pgd_l2,pgd_l1", eps_linf=0.1, eps_l2=1.0, eps_l1=5.0,
                          steps=5, restarts=2)
    ctx = _ctx(data, tmp_path, n=24)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = _by_key(suite.run(model, ctx))
    assert torch.equal(torch.get_rng_state(), before)
    assert first == _by_key(suite.run(model, ctx))
    x, y = ctx.images, ctx.labels
    correct = A.predict_labels(model, x, CPU, 64) == y
    advs = [[], [], []]
    for seed, out in zip((1, 1, 2), advs):
        attack_run(model, x, y, correct, "pgd_linf", 0.1, seed=seed, settings=A.AttackSettings(steps=2),
                   on_batch=lambda i, a, out=out: out.append(a))
    assert all(torch.equal(a, b) for a, b in zip(advs[0], advs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(advs[0], advs[2]))  # the seed does matter


# ----------------------------------------------------------------------------- AutoAttack vs the official one
@pytest.mark.slow
def test_autoattack_matches_official_autoattack(model, data):
    """Our torchattacks-built AutoAttack-standard vs ``pyautoattack`` at a mid-range eps (a few minutes on CPU)."""
    from pyautoattack import AutoAttack

    x, y = stack(data.test)
    x, y = x[:30], y[:30]
    eps = 0.03
    correct = A.predict_labels(model, x, CPU, 64) == y
    res = attack_run(model, x, y, correct, "autoattack", eps, seed=0, batch_size=64)
    ours = float(res.robust.double().mean())
    with A.attack_mode(model):
        adv, _ = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0).run_standard_evaluation(x, y, batch_size=64)
        official = float((model(adv).argmax(1) == y).double().mean())
    assert 0.15 < official < 0.85, official  # mid-range, so the comparison means something
    assert abs(ours - official) <= 1 / len(x) + 1e-9, (ours, official)
    assert res.survivors[0] == int(correct.sum()) and list(res.survivors) == sorted(res.survivors, reverse=True)


def test_minimal_attack_radius_distribution(model, data, tmp_path):
    """minnorm_linf in the suite: ordered quantiles, a non-increasing curve that equals the fixed-eps
    accuracy at a shared eps, and the grid recorded in the protocol."""
    grid = (0.02, 0.05, 0.1, 0.2)
    suite = SUITES.create("adversarial", attacks="minnorm_linf", eps_linf=(0.1,), radius_grid_linf=grid)
    ctx = _ctx(data, tmp_path, n=24)
    values = _by_key(suite.run(model, ctx))
    q = [values["minnorm_linf", 0.0, m] for m in ("radius_q10", "radius_q25", "radius_median", "radius_q75")]
    assert q == sorted(q) and q[0] > 0
    assert values["minnorm_linf", 0.0, "radius_median"] == values["minnorm_linf", 0.0, "median_linf"]
    assert values["minnorm_linf", 0.0, "radius_median_correct"] >= values["minnorm_linf", 0.0, "radius_median"]
    curve = [values["minnorm_linf", e, "robust_accuracy_curve"] for e in grid]
    assert curve == sorted(curve, reverse=True) and curve[0] > curve[-1]
    assert values["minnorm_linf", 0.1, "robust_accuracy_curve"] == values["minnorm_linf", 0.1, "accuracy"]
    assert tuple(dict(suite.protocol(ctx).params)["radius_grid_linf"]) == grid


def test_finite_quantile_matches_torch_and_refuses_inf():
    from nasrobust.noise.adversarial import finite_quantile

    v = torch.tensor([0.3, 0.0, 0.1, 0.7, 0.2], dtype=torch.float64)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert finite_quantile(v, q) == pytest.approx(float(v.quantile(q)))
    w = torch.tensor([0.1, 0.2, math.inf, math.inf], dtype=torch.float64)
    assert finite_quantile(w, 0.25) == pytest.approx(0.175) and finite_quantile(w, 0.75) is None
