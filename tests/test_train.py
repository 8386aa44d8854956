"""The training engine: recipes, schedules, adversarial examples, checkpoints and resuming."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from nasrobust import checkpoint, get_space
from nasrobust.data import load_dataset
from nasrobust.errors import NasRobustError
from nasrobust.train import Recipe, get_preset
from nasrobust.train.adversarial import EXAMPLE_MAKERS, trades_loss
from nasrobust.train.api import train_standalone
from nasrobust.train.engine import Trainer
from nasrobust.train.losses import distillation_loss
from nasrobust.train.schedule import lr_factor

SMALLEST = get_space("bignas-small").smallest()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_recipe(**kw) -> Recipe:
    return Recipe(**{"epochs": 2, "batch_size": 64, "lr": 0.1, "warmup_epochs": 0.2, **kw})


# ----------------------------------------------------------------------------- recipe
def test_recipe_validates_and_round_trips():
    with pytest.raises(NasRobustError, match="optimizer"):
        Recipe(optimizer="lamb")
    with pytest.raises(NasRobustError, match="even batch"):
        Recipe(mixup=0.2, batch_size=33)
    r = get_preset("quick").replace(epochs=3, sandwich_num_random=4, lr=None)
    assert r.epochs == 3 and r.sandwich.num_random == 4 and r.lr == get_preset("quick").lr
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(NasRobustError, match="unknown recipe fields"):
        Recipe.from_dict({"epochs": 1, "bogus": 2})


def test_schedules():
    r = Recipe(epochs=10, warmup_epochs=1, schedule="cosine", min_lr_ratio=0.0)
    f = lr_factor(r, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) < 0.01
    assert all(f(t) >= f(t + 1) for t in range(10, 99))
    b = lr_factor(Recipe(epochs=100, schedule="bignas", min_lr_ratio=0.05), 1)
    assert b(0) == 1.0 and b(75) == pytest.approx(0.05) and b(99) == pytest.approx(0.05)
    assert b(40) == pytest.approx(0.05 ** (40 / 75))


def test_step_schedule_is_piecewise_constant():
    # 40 epochs of 7 iterations: milestones 0.5 and 0.75 fall on iterations 140 and 210 (epochs 21 and 31 start)
    f = lr_factor(Recipe(epochs=40, schedule="step"), 7)
    assert [f(t) for t in (0, 139, 140, 209, 210, 279)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    g = lr_factor(Recipe(epochs=10, schedule="step", warmup_epochs=1, lr_milestones=(0.05, 0.3), lr_decay=0.5), 10)
    assert g(0) == pytest.approx(0.1) and g(9) == pytest.approx(1.0)  # warm-up wins over the milestone at t = 5
    assert [g(t) for t in (10, 29, 30, 99)] == pytest.approx([0.5, 0.5, 0.25, 0.25])
    assert Recipe.from_dict(Recipe(schedule="step", lr_milestones=[0.3]).to_dict()).lr_milestones == (0.3,)


def test_step_schedule_resumes_with_the_same_lr_sequence():
    from nasrobust.train.schedule import make_scheduler

    recipe = Recipe(epochs=4, schedule="step", warmup_epochs=0.5, lr_milestones=(0.25, 0.6))

    def lrs(scheduler, optimizer, n):
        out = []
        for _ in range(n):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    def fresh():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        return make_scheduler(opt, recipe, 10), opt

    sched, opt = fresh()
    full = lrs(sched, opt, 40)
    sched, opt = fresh()
    first = lrs(sched, opt, 17)
    state = (sched.state_dict(), opt.state_dict())
    sched, opt = fresh()
    opt.load_state_dict(state[1])
    sched.load_state_dict(state[0])
    assert first + lrs(sched, opt, 23) == full
    assert full[9] == pytest.approx(0.1) and full[10] == pytest.approx(0.01) and full[24] == pytest.approx(0.001)


@pytest.mark.parametrize("bad, phrase", [
    ({"lr_milestones": (0.75, 0.5)}, "increasing fractions"), ({"lr_milestones": (0.0, 0.5)}, "strictly between 0 and 1"),
    ({"lr_milestones": (0.5, 1.5)}, "strictly between 0 and 1"), ({"lr_milestones": 0.5}, "must be a list of numbers"),
    ({"lr_decay": 0.0}, "lr_decay=0.0 must be in"), ({"lr_decay": 2.0}, "lr_decay=2.0 must be in"),
])
def test_bad_step_schedules_are_one_line_errors(bad, phrase):
    with pytest.raises(NasRobustError, match=phrase) as err:
        Recipe(schedule="step", **bad)
    assert "\n" not in str(err.value)
    with pytest.raises(NasRobustError, match="lr_milestones"):
        Recipe.from_dict({"lr_milestones": "0.5, 0.75"})


# ----------------------------------------------------------------------------- adversarial examples
def _linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.mark.parametrize("kind", ["pgd", "fgsm-rs", "trades"])
def test_examples_stay_in_the_ball_and_hurt(kind):
    model = _linear_model()
    x = torch.rand(32, 1, 8, 8)
    y = model(x).argmax(1)
    r = Recipe(adversarial=kind, adv_eps=0.1, adv_steps=5)
    x_adv = EXAMPLE_MAKERS[kind](model, x, y, r, torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training  # mode restored
    if kind != "trades":
        assert (model(x_adv).argmax(1) == y).float().mean() < 1.0
    again = EXAMPLE_MAKERS[kind](model, x, y, r, torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, again)


def test_losses():
    logits = torch.randn(8, 10)
    assert distillation_loss(logits, logits).abs() < 1e-6
    y = torch.randint(0, 10, (8,))
    assert trades_loss(logits, logits, y, 6.0) == pytest.approx(float(nn.functional.cross_entropy(logits, y)))


# ----------------------------------------------------------------------------- end-to-end runs
def test_standalone_training_learns_and_checkpoints(tmp_path, digits):
    result = train_standalone("bignas", SMALLEST, digits, tiny_recipe(), tmp_path / "run", progress=False,
                              keep_epochs=True)
    assert result.history[-1]["test_acc"] > 0.5
    model, payload = checkpoint.load_model(tmp_path / "run")
    # keep_epochs: every epoch's weights as a loadable checkpoint; the last one is the final model
    first, _ = checkpoint.load_model(checkpoint.epoch_path(tmp_path / "run", 1))
    last, last_payload = checkpoint.load_model(checkpoint.epoch_path(tmp_path / "run", 2))
    assert last_payload["weights_id"] == result.weights_id and last_payload["epoch"] == 2
    assert checkpoint.weights_id(first.state_dict()) != result.weights_id
    meta = checkpoint.meta_of(payload)
    assert meta.space == "bignas-small" and meta.arch == SMALLEST.encoding and meta.dataset["name"] == "digits"
    assert Recipe.from_dict(meta.recipe) == tiny_recipe()
    assert payload["weights_id"] == result.weights_id == checkpoint.weights_id(model.state_dict())
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 3


@pytest.mark.parametrize("options", [{"label_smoothing": 0.1}, {"schedule": "step", "lr_milestones": (0.25, 0.75)}])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, digits, monkeypatch, options):
    recipe = tiny_recipe(**options)
    full = train_standalone("bignas", SMALLEST, digits, recipe, tmp_path / "full", progress=False)

    original = Trainer._train_epoch

    def dies_in_epoch_two(self, *args, **kwargs):
        if args[-1] == 1:  # the epoch index
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_standalone("bignas", SMALLEST, digits, recipe, tmp_path / "cut", progress=False)
    assert checkpoint.read(tmp_path / "cut")["epoch"] == 1
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    resumed = train_standalone("bignas", SMALLEST, digits, recipe, tmp_path / "cut", progress=False)
    assert resumed.resumed_from_epoch == 1
    assert resumed.weights_id == full.weights_id
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in full.history])
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]


def test_checkpoint_from_before_a_new_recipe_field_still_resumes(tmp_path, digits, monkeypatch):
    """A run written before ``lr_milestones`` / ``lr_decay`` existed is the same run when they are at their defaults."""
    recipe = tiny_recipe()
    original = Trainer._train_epoch

    def dies_in_epoch_two(self, *args, **kwargs):
        if args[-1] == 1:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_standalone("bignas", SMALLEST, digits, recipe, tmp_path / "old", progress=False)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    file = checkpoint.checkpoint_path(tmp_path / "old")
    payload = torch.load(file, map_location="cpu", weights_only=True)
    for name in ("lr_milestones", "lr_decay"):
        del payload["meta"]["recipe"][name]
    torch.save(payload, file)
    assert train_standalone("bignas", SMALLEST, digits, recipe, tmp_path / "old", progress=False).resumed_from_epoch == 1
    with pytest.raises(NasRobustError, match="differs in: recipe"):
        train_standalone("bignas", SMALLEST, digits, tiny_recipe(schedule="step"), tmp_path / "old", progress=False)


def test_other_run_in_out_folder_is_refused(tmp_path, digits):
    train_standalone("bignas", SMALLEST, digits, tiny_recipe(), tmp_path / "run", progress=False)
    with pytest.raises(NasRobustError, match="differs in: recipe"):
        train_standalone("bignas", SMALLEST, digits, tiny_recipe(lr=0.05), tmp_path / "run", progress=False)


def test_adversarial_training_runs(tmp_path, digits):
    recipe = tiny_recipe(adversarial="pgd", adv_eps=0.1, adv_steps=3, epochs=1)
    result = train_standalone("bignas", SMALLEST, digits, recipe, tmp_path / "adv", progress=False)
    assert math.isfinite(result.history[-1]["train_loss"])


def test_checkpoint_errors_name_the_fix(tmp_path, digits):
    with pytest.raises(NasRobustError, match="nasrobust train"):
        checkpoint.load_model(tmp_path / "missing")
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(NasRobustError, match="not a nasrobust checkpoint"):
        checkpoint.read(bad)
    train_standalone("bignas", SMALLEST, digits, tiny_recipe(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(NasRobustError, match="supernet"):
        checkpoint.load_supernet(tmp_path / "run")
    with pytest.raises(NasRobustError, match="--space bignas-small"):
        checkpoint.expect(checkpoint.meta_of(checkpoint.read(tmp_path / "run")), space="nb201", path=tmp_path / "run")


# ----------------------------------------------------------------------------- fine-tuning from a supernet
def test_finetuning_from_a_supernet_with_its_largest_subnet_as_teacher(tmp_path, digits):
    """`train --from-supernet S --kd-teacher S`: starts from the extracted subnet, learns from the largest."""
    from nasrobust.supernet import recalibrate, recalibrated_subnet
    from nasrobust.train.api import _teacher, train_supernet

    sizes = {"channels": 4, "cells_per_stage": 1}
    parent = train_supernet("nb201", digits, tiny_recipe(epochs=1, bn_recalib_images=200), tmp_path / "super",
                            progress=False, **sizes)
    supernet, _ = checkpoint.load_supernet(parent.checkpoint)
    recipe = tiny_recipe(epochs=1, bn_recalib_images=200, kd_teacher=str(parent.checkpoint), kd_alpha=0.5)

    teacher = _teacher(checkpoint.read(recipe.kd_teacher), recipe, digits, torch.device("cpu"))
    largest = recalibrated_subnet(supernet, supernet.supernet.largest(), digits, 200, seed=recipe.seed)
    x = torch.stack([digits.test[i][0] for i in range(16)])
    torch.testing.assert_close(teacher(x), largest(x))
    assert not any(p.requires_grad for p in teacher.parameters())

    arch = supernet.supernet.smallest()
    result = train_standalone("nb201", arch, digits, recipe, tmp_path / "tune", from_supernet=parent.checkpoint,
                              progress=False)
    tuned, payload = checkpoint.load_model(result.checkpoint)
    meta = checkpoint.meta_of(payload)
    assert meta.parent == parent.weights_id and meta.arch == arch.encoding
    assert result.history[-1]["test_acc"] > 0.3  # chance is 0.1
    # precise BN (on by default when fine-tuning): the saved statistics are the re-estimated ones
    again = copy.deepcopy(tuned)
    recalibrate(again, digits, 200, seed=recipe.seed)
    for a, b in zip(tuned.modules(), again.modules()):
        if isinstance(a, nn.BatchNorm2d):
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)


def test_logged_lr_is_the_rate_the_epoch_ran_at(tmp_path, digits):
    """The log's lr is the rate of the epoch's last step, not the next epoch's (the scheduler steps after each step)."""
    recipe = tiny_recipe(schedule="step", lr_milestones=(0.5,), warmup_epochs=0.0)
    result = train_standalone("bignas", SMALLEST, digits, recipe, tmp_path / "run", progress=False)
    assert [r["lr"] for r in result.history] == pytest.approx([0.1, 0.01])
