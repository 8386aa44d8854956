"""Differentiable (DARTS-style) architecture search: the bilevel loop, regularisers, state and resume.

DARTS (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019) relaxes
the choice of op on every edge of a one-shot supernet to ``softmax(alpha)`` and solves

    min_alpha  F(w*(alpha), alpha)    s.t.  w*(alpha) = argmin_w L_train(w, alpha)

by alternating one Adam step on ``alpha`` (on a validation batch) and one SGD step on ``w`` (on a
training batch); the training set is split 50/50 into the two (DARTS Sec. 3, ``train_search.py``).
Here the upper objective is ``F = L_val - gamma * R`` with ``R`` a differentiable robustness
measure (DSRNA, Hosseini, Yang & Xie, CVPR 2021; ``R = 0`` is plain DARTS).

* **First order**: ``grad_alpha F(w, alpha)``.
* **Second order** (DARTS eq. 7-8): one virtual SGD step
  ``w' = w - xi (mu * m + grad_w L_train(w, alpha) + wd * w)`` (``xi`` = the weight learning rate,
  ``m`` the SGD momentum buffer, as in DARTS' ``_compute_unrolled_model``), then
  ``grad_alpha F(w', alpha) - xi * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 r)``
  with ``w+- = w +- r v``, ``v = grad_w' F(w', alpha)`` and ``r = 0.01 / ||v||`` (the central
  finite-difference Hessian-vector product of DARTS eq. 8). The virtual steps run through
  ``torch.func.functional_call`` on copies of the BN buffers, so only real steps touch the model.
* **Warm-up**: for the first ``warmup_epochs`` only the weights are trained (DSRNA, AdvRush and
  PC-DARTS all warm the supernet up before updating alpha).
* **Regularisers** (:class:`Regularizer`) are evaluated in eval mode (BN running statistics), so
  examples are independent, as the Jacobian and bound computations of :mod:`nasrobust.bounds`
  require; the losses run in train mode as in DARTS.
* **Determinism and resume**: each epoch's batch order is drawn from a ``torch.Generator`` seeded
  by ``(seed, epoch)``, learning rates are a closed-form cosine of the epoch, and after every epoch
  the supernet (weights, alphas, BN statistics), both optimisers' states, the epoch and the
  trajectory are saved atomically; a rerun with the same settings continues from there and
  gives the result of an uninterrupted run.

The searchers (``searchers/darts_search.py``, ``dsrna.py``, ``advrush.py``) are thin: a name,
the default options and a regulariser factory.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from nasrobust.search import Evaluation, ObjectiveInfo, Searcher, SearchError, SearchResult, searcher_options
from nasrobust.space import Arch, SearchSpace, get_space, list_spaces

log = logging.getLogger(__name__)

DIFF_STATE_FORMAT = "nasrobust-diffsearch/1"
#: The file a differentiable search keeps its resumable state in (inside the CLI's --out folder).
DIFF_STATE_FILE = "diffsearch_state.pt"

Params = Mapping[str, torch.Tensor]


# ----------------------------------------------------------------------------- regularisers
class Regularizer(abc.ABC):
    """A differentiable robustness measure ``R(model; x, y)`` (a scalar, higher = more robust).

    ``params`` (names of ``model.named_parameters()``) replace the module's parameters, for the
    virtual steps of second-order DARTS. The caller puts the model in eval mode.
    """

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """``R`` averaged over the batch, differentiable w.r.t. the parameters (alphas included)."""


class _Functional(nn.Module):
    """``model`` with some parameters replaced (``functional_call``), usable where a module is expected."""

    def __init__(self, model: nn.Module, params: Params):
        super().__init__()
        self.inner = [model]  # a list: not registered as a submodule
        self.params = dict(params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.inner[0], self.params, (x,), strict=False)


def with_params(model: nn.Module, params: Params | None) -> nn.Module:
    """``model`` itself, or a view of it computing with ``params`` instead of its own parameters."""
    return model if not params else _Functional(model, params)


@dataclass(frozen=True)
class RegularizerSum(Regularizer):
    """``sum_i weight_i * R_i`` (DSRNA-Combined uses the CB and Jacobian measures together)."""

    terms: tuple[tuple[float, Regularizer], ...]
    name: ClassVar[str] = "sum"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        return sum(w * r(model, x, y, params) for w, r in self.terms)


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class DiffOptions:
    """Options of every differentiable searcher (DARTS' defaults unless noted; sized by the user for CPU).

    The search network: ``channels`` and ``cells_per_stage`` (nb201; darts uses ``layers = 3 *
    cells_per_stage + 2`` unless ``layers`` is given), PC-DARTS' ``partial_channels`` (and
    ``edge_normalization`` on darts), ``affine=False`` (the papers' search BN). Data: the registered
    ``dataset``'s training split, optionally its first ``n_train`` examples (class-interleaved),
    halved into weight / architecture batches; ``steps_per_epoch`` caps an epoch. ``gamma`` weighs
    the regulariser (ignored by plain DARTS); ``reg_start_epoch`` delays it (AdvRush); ``eps`` is the
    regularisers' perturbation radius (``cb_eps``, when set, the certified bound's); ``bound_method`` is the
    certified bound's (CROWN-IBP is vacuous on a naturally trained supernet; crown-zono is tight but costs seconds
    an image, hence ``cb_examples``: the bound on the first that many images of each architecture batch).
    """

    dataset: str = "mnist5k"
    channels: int = 16
    cells_per_stage: int = 1
    layers: int | None = None
    partial_channels: int = 1
    edge_normalization: bool = False
    affine: bool = False
    order: int = 1
    warmup_epochs: int = 0
    batch_size: int = 64
    n_train: int | None = None
    steps_per_epoch: int | None = None
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_weight_decay: float = 1e-3
    hvp_r: float = 0.01
    gamma: float = 0.01
    reg_start_epoch: int = 0
    eps: float = 0.1
    cb_eps: float | None = None
    norm: str = "linf"
    bound_method: str = "crown-ibp"
    cb_examples: int | None = None
    curvature_h: float = 3.0
    n_score: int = 256
    recalib_images: int = 500

    def __post_init__(self) -> None:
        positive = {"channels": self.channels, "cells_per_stage": self.cells_per_stage, "batch_size": self.batch_size,
                    "partial_channels": self.partial_channels, "n_score": self.n_score}
        bad = [k for k, v in positive.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive integers")
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 (first-order DARTS) or 2 (the unrolled approximation), got {self.order}")
        if self.warmup_epochs < 0 or self.reg_start_epoch < 0:
            raise ValueError("warmup_epochs and reg_start_epoch must be >= 0")
        if min(self.w_lr, self.a_lr, self.hvp_r) <= 0 or self.eps < 0 or self.gamma < 0:
            raise ValueError("learning rates and hvp_r must be positive, eps and gamma non-negative")
        if self.cb_examples is not None and (not isinstance(self.cb_examples, int) or self.cb_examples < 1):
            raise ValueError(f"cb_examples must be a positive integer (or unset: the whole batch), got {self.cb_examples!r}")
        if self.n_train is not None and self.n_train < 4:
            raise ValueError("n_train must be at least 4 (it is halved into weight and architecture data)")


def build_search_model(space: SearchSpace, options: DiffOptions, num_classes: int, image_size: int,
                       mean: tuple[float, ...], std: tuple[float, ...], alpha_seed: int) -> nn.Module:
    """The soft-mode supernet of ``space`` (its :meth:`~nasrobust.space.SearchSpace.search_supernet`) inside a
    ``[0, 1]``-image classifier (normalisation inside)."""
    from nasrobust.supernet import SupernetClassifier

    if not space.has_search_supernet():
        usable = [n for n in list_spaces() if get_space(n).has_search_supernet()]
        raise SearchError(f"differentiable search needs a one-shot cell supernet; {space.name!r} has none "
                          f"(use one of {', '.join(usable)})")
    o = options
    supernet = space.search_supernet(num_classes=num_classes, channels=o.channels, cells_per_stage=o.cells_per_stage,
                                     layers=o.layers, partial_channels=o.partial_channels,
                                     edge_normalization=o.edge_normalization, affine=o.affine, alpha_seed=alpha_seed)
    supernet.set_mode("soft")
    return SupernetClassifier(supernet, image_size, mean, std)


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DiffSearchResult(SearchResult):
    """A differentiable search's result: ``history`` holds the final derived architecture (its
    scores: the supernet's and the derived subnet's validation accuracy, the regulariser);
    ``trajectory`` one record per epoch (the architecture derived after that epoch)."""

    trajectory: tuple[Evaluation, ...] = ()

    @property
    def best(self) -> Evaluation:
        """The final derived architecture (DARTS keeps the last, not the best-scoring, alphas)."""
        if not self.history:
            raise SearchError("the search has not finished an epoch")
        return self.history[-1]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["trajectory"] = [e.to_dict() for e in self.trajectory]
        return out


@dataclass
class _Progress:
    """What the CLI's progress callback reads (``replaying`` like :class:`~nasrobust.search.SearchRun`)."""

    replaying: bool = False


# ----------------------------------------------------------------------------- the searcher
class DifferentiableSearcher(Searcher):
    """Bilevel DARTS search on a one-shot supernet with an optional robustness regulariser.

    ``budget`` is the number of search epochs (warm-up included). ``objective`` is not used: the
    search optimises ``L_val - gamma * R`` itself (pass ``None``). Subclasses set ``name``,
    ``Options`` (a subclass of :class:`DiffOptions` with their defaults) and :meth:`regularizer`.
    """

    differentiable: ClassVar[bool] = True
    state_file: ClassVar[str] = DIFF_STATE_FILE
    Options: ClassVar[type] = DiffOptions

    def __init__(self, space: SearchSpace | str, objective: Any = None, *, budget: int = 10, seed: int = 0,
                 **options: Any):
        self.space = get_space(space) if isinstance(space, str) else space
        if objective not in (None, [], ()):
            log.warning("%s optimises its own objective (L_val - gamma * R); the given objective is ignored", self.name)
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise SearchError(f"budget must be a positive number of search epochs, got {budget!r}")
        self.budget, self.seed = int(budget), int(seed)
        self.options = searcher_options(type(self), options)
        if self.options.warmup_epochs >= self.budget:
            log.warning("%s: warmup_epochs=%d >= budget=%d epochs: the alphas will never be updated",
                        self.name, self.options.warmup_epochs, self.budget)

    # ------------------------------------------------------------------ hooks
    def regularizer(self) -> Regularizer | None:
        """The robustness measure ``R`` (``None``: plain DARTS)."""
        return None

    def objective_infos(self) -> tuple[ObjectiveInfo, ...]:
        infos = [ObjectiveInfo("supernet_val_accuracy", True), ObjectiveInfo("derived_val_accuracy", True)]
        if self.regularizer() is not None:
            infos.append(ObjectiveInfo(f"regularizer:{self.regularizer().name}", True))
        return tuple(infos)

    def header(self) -> dict[str, Any]:
        """What makes two runs the same search (the budget included: it sets the lr schedule)."""
        return {"format": DIFF_STATE_FORMAT, "space": self.space.name, "searcher": self.name, "seed": self.seed,
                "budget": self.budget, "options": dataclasses.asdict(self.options)}

    def _search(self, run: Any, rng: np.random.Generator) -> None:  # pragma: no cover - run() is overridden
        raise NotImplementedError

    # ------------------------------------------------------------------ running
    def run(self, state: str | Path | None = None,
            on_evaluation: Callable[[Evaluation, Any], None] | None = None) -> DiffSearchResult:
        """Search for ``budget`` epochs; with ``state`` (a file) checkpoint every epoch and resume from it."""
        return BilevelRun(self, Path(state) if state is not None else None, on_evaluation).run()


def _split(n: int) -> tuple[slice, slice]:
    half = n // 2
    return slice(0, half), slice(half, 2 * half)


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """DARTS' ``CosineAnnealingLR(T_max=epochs, eta_min=lr_min)`` at ``epoch`` (closed form, nothing to save)."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


class BilevelRun:
    """One differentiable search: data, model, optimisers, the epoch loop, checkpoints."""

    def __init__(self, searcher: DifferentiableSearcher, state: Path | None,
                 on_evaluation: Callable[[Evaluation, Any], None] | None):
        from nasrobust.data import load_dataset, stack

        self.s, self.o, self.state, self.on_evaluation = searcher, searcher.options, state, on_evaluation
        data = load_dataset(self.o.dataset)
        x, y = stack(data.train)
        if self.o.n_train is not None:
            x, y = x[: self.o.n_train], y[: self.o.n_train]
        tr, va = _split(len(x))
        self.x_w, self.y_w, self.x_a, self.y_a = x[tr], y[tr], x[va], y[va]
        info = data.info
        torch.manual_seed(searcher.seed)  # the supernet's weight initialisation draws from the global generator
        self.model = build_search_model(searcher.space, self.o, info.num_classes, info.image_size, info.mean, info.std,
                                        alpha_seed=searcher.seed)
        self.supernet = self.model.supernet
        self.alphas = self.supernet.arch_parameters()
        alpha_ids = {id(p) for p in self.alphas}
        self.named_weights = [(n, p) for n, p in self.model.named_parameters() if id(p) not in alpha_ids]
        self.weights = [p for _, p in self.named_weights]
        self.alpha_names = [n for n, p in self.model.named_parameters() if id(p) in alpha_ids]
        self.w_opt = torch.optim.SGD(self.weights, lr=self.o.w_lr, momentum=self.o.w_momentum,
                                     weight_decay=self.o.w_weight_decay)
        self.a_opt = torch.optim.Adam(self.alphas, lr=self.o.a_lr, betas=(0.5, 0.999), weight_decay=self.o.a_weight_decay)
        self.reg = searcher.regularizer()
        self.trajectory: list[Evaluation] = []
        self.epoch = 0
        self.elapsed0 = 0.0

    # ------------------------------------------------------------------ batches
    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Weight and architecture batches of ``epoch``, shuffled by a generator seeded with ``(seed, epoch)``."""
        gen = torch.Generator().manual_seed(self.s.seed * 100003 + epoch)
        pw, pa = torch.randperm(len(self.x_w), generator=gen), torch.randperm(len(self.x_a), generator=gen)
        b = self.o.batch_size
        steps = max(1, len(pw) // b)
        if self.o.steps_per_epoch is not None:
            steps = min(steps, self.o.steps_per_epoch)
        for i in range(steps):
            iw, ia = pw[i * b:(i + 1) * b], pa[i * b:(i + 1) * b]
            yield self.x_w[iw], self.y_w[iw], self.x_a[ia], self.y_a[ia]

    # ------------------------------------------------------------------ objectives
    def train_loss(self, x: torch.Tensor, y: torch.Tensor, params: Params | None = None,
                   buffers: Params | None = None) -> torch.Tensor:
        self.model.train()
        if params is None:
            return F.cross_entropy(self.model(x), y)
        return F.cross_entropy(functional_call(self.model, {**params, **(buffers or {})}, (x,), strict=False), y)

    def reg_active(self) -> bool:
        return self.reg is not None and self.epoch >= self.o.reg_start_epoch

    def regularizer_value(self, x: torch.Tensor, y: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        assert self.reg is not None
        self.model.eval()
        try:
            return self.reg(self.model, x, y, params)
        finally:
            self.model.train()

    def upper_objective(self, x: torch.Tensor, y: torch.Tensor, params: Params | None = None,
                        buffers: Params | None = None) -> tuple[torch.Tensor, float]:
        """``F = L_val - gamma * R`` (and ``R``'s value, NaN without a regulariser)."""
        loss = self.train_loss(x, y, params, buffers)
        if not self.reg_active():
            return loss, float("nan")
        r = self.regularizer_value(x, y, params)
        return loss - self.o.gamma * r, float(r.detach())

    def hypergradient(self, xw: torch.Tensor, yw: torch.Tensor, xa: torch.Tensor, ya: torch.Tensor,
                      lr: float) -> tuple[list[torch.Tensor], float]:
        """``dF/dalpha`` (first order, or DARTS' one-step unrolled approximation) and ``R``."""
        if self.o.order == 1:
            f, r = self.upper_objective(xa, ya)
            return list(torch.autograd.grad(f, self.alphas)), r
        unrolled = self.unrolled_weights(xw, yw, lr)
        leaves = {n: t.detach().requires_grad_(True) for n, t in unrolled.items()}
        f, r = self.upper_objective(xa, ya, leaves, self._buffer_copies())
        g = torch.autograd.grad(f, self.alphas + list(leaves.values()), allow_unused=True)
        g_alpha = [torch.zeros_like(a) if gi is None else gi for a, gi in zip(self.alphas, g[: len(self.alphas)])]
        v = [torch.zeros_like(t) if gi is None else gi for t, gi in zip(leaves.values(), g[len(self.alphas):])]
        implicit = self.hessian_vector(xw, yw, v)
        return [ga - lr * h for ga, h in zip(g_alpha, implicit)], r

    def _buffer_copies(self) -> dict[str, torch.Tensor]:
        return {n: b.clone() for n, b in self.model.named_buffers()}

    def unrolled_weights(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
        """``w' = w - lr * (momentum * m + grad_w L_train + wd * w)``: DARTS' virtual SGD step."""
        loss = self.train_loss(x, y, {n: p for n, p in self.named_weights}, self._buffer_copies())
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True)
        out = {}
        for (n, p), g in zip(self.named_weights, grads):
            d = (torch.zeros_like(p) if g is None else g.detach()) + self.o.w_weight_decay * p.detach()
            buf = self.w_opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                d = d + self.o.w_momentum * buf
            out[n] = p.detach() - lr * d
        return out

    def hessian_vector(self, x: torch.Tensor, y: torch.Tensor, v: list[torch.Tensor]) -> list[torch.Tensor]:
        """``grad^2_{alpha, w} L_train(w, alpha) v`` by DARTS' central difference, ``r = hvp_r / ||v||``."""
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        if float(norm) == 0.0:
            return [torch.zeros_like(a) for a in self.alphas]
        r = self.o.hvp_r / norm
        grads = []
        for sign in (1.0, -1.0):
            params = {n: p.detach() + sign * r * t for (n, p), t in zip(self.named_weights, v)}
            loss = self.train_loss(x, y, params, self._buffer_copies())
            grads.append(torch.autograd.grad(loss, self.alphas))
        return [(gp - gn) / (2 * r) for gp, gn in zip(*grads)]

    # ------------------------------------------------------------------ steps
    def step(self, xw: torch.Tensor, yw: torch.Tensor, xa: torch.Tensor, ya: torch.Tensor, lr: float,
             update_alpha: bool) -> tuple[float, float]:
        """One DARTS step: the architecture step (after warm-up), then the weight step. Returns (loss, R)."""
        r = float("nan")
        if update_alpha:
            grads, r = self.hypergradient(xw, yw, xa, ya, lr)
            for a, g in zip(self.alphas, grads):
                a.grad = g.detach()
            self.a_opt.step()
            self.a_opt.zero_grad(set_to_none=True)
        loss = self.train_loss(xw, yw)
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True)
        for p, g in zip(self.weights, grads):
            p.grad = None if g is None else g.detach()
        nn.utils.clip_grad_norm_(self.weights, self.o.grad_clip)
        self.w_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        return float(loss.detach()), r

    # ------------------------------------------------------------------ scoring
    def _score_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_a[: self.o.n_score], self.y_a[: self.o.n_score]

    @torch.no_grad()
    def accuracy(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256)))
        model.train()
        return correct / max(1, len(y))

    def score_regularizer(self) -> float:
        if self.reg is None:
            return float("nan")
        x, y = self._score_data()
        vals = [float(self.regularizer_value(xb, yb).detach()) * len(yb) for xb, yb in zip(x.split(64), y.split(64))]
        return sum(vals) / max(1, len(y))

    def derived_accuracy(self, arch: Arch) -> float:
        """Validation accuracy of the derived subnet with the supernet's weights, BN re-calibrated (a copy)."""
        from nasrobust.supernet import recalibrate_bn

        if self.o.partial_channels > 1:
            return float("nan")  # a PC-DARTS supernet has no single-path subnet
        model = copy.deepcopy(self.model)
        model.set_active(arch)
        n = min(self.o.recalib_images, len(self.x_w))
        recalibrate_bn(model, self.x_w[:n].split(self.o.batch_size))
        x, y = self._score_data()
        return self.accuracy(model, x, y)

    def evaluation(self, index: int, seconds: float, final: bool) -> Evaluation:
        arch = self.supernet.derive()
        x, y = self._score_data()
        values = [self.accuracy(self.model, x, y), self.derived_accuracy(arch) if final else float("nan")]
        if self.reg is not None:  # R is scored from the end of the warm-up on (the alphas' start); NaN before: it
            # costs a Jacobian / bound pass over the scoring images every epoch and nothing reads it during warm-up
            values.append(self.score_regularizer() if self.epoch >= self.o.warmup_epochs else float("nan"))
        return Evaluation(index, arch.encoding, tuple(values), tuple(values), (False,) * len(values), seconds,
                          self.elapsed0 + seconds)

    # ------------------------------------------------------------------ state
    def _load(self) -> None:
        if self.state is None or not self.state.exists():
            return
        ckpt = torch.load(self.state, map_location="cpu", weights_only=False)
        header = json.loads(json.dumps(self.s.header()))
        if ckpt.get("header") != header:
            old = ckpt.get("header") or {}
            diff = sorted(k for k in set(old) | set(header) if old.get(k) != header.get(k))
            raise SearchError(f"{self.state} holds another differentiable search (different {', '.join(diff)}); "
                              "use another --out, or --fresh to start over")
        self.model.load_state_dict(ckpt["model"])
        self.w_opt.load_state_dict(ckpt["w_opt"])
        self.a_opt.load_state_dict(ckpt["a_opt"])
        self.epoch = int(ckpt["epoch"])
        self.trajectory = [Evaluation.from_dict(d) for d in ckpt["trajectory"]]
        self.elapsed0 = float(ckpt["elapsed"])
        log.info("resuming %s from %s after epoch %d", self.s.name, self.state, self.epoch)

    def _save(self) -> None:
        if self.state is None:
            return
        self.state.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_name(self.state.name + ".tmp")
        torch.save({"header": json.loads(json.dumps(self.s.header())), "model": self.model.state_dict(),
                    "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(), "epoch": self.epoch,
                    "trajectory": [e.to_dict() for e in self.trajectory], "elapsed": self.elapsed0}, tmp)
        os.replace(tmp, self.state)

    # ------------------------------------------------------------------ the loop
    def train_epoch(self) -> tuple[float, list[float], list[float]]:
        """Search epoch ``self.epoch`` (then advanced): the weights' cosine lr, then every weight step and, after the
        warm-up, alpha step. Returns that lr and the steps' losses and regulariser values."""
        lr = cosine_lr(self.epoch, self.s.budget, self.o.w_lr, self.o.w_lr_min)
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        update_alpha = self.epoch >= self.o.warmup_epochs
        losses, regs = [], []
        for xw, yw, xa, ya in self.batches(self.epoch):
            loss, r = self.step(xw, yw, xa, ya, lr, update_alpha)
            losses.append(loss)
            regs.append(r)
        self.epoch += 1
        return lr, losses, regs

    def run(self) -> DiffSearchResult:
        self._load()
        progress = _Progress(replaying=False)
        for ev in self.trajectory:  # epochs already done: report them (replayed)
            if self.on_evaluation is not None:
                progress.replaying = True
                self.on_evaluation(ev, progress)
        progress.replaying = False
        final: Evaluation | None = None
        while self.epoch < self.s.budget:
            t0 = time.perf_counter()
            lr, losses, regs = self.train_epoch()
            last = self.epoch == self.s.budget
            seconds = time.perf_counter() - t0
            ev = self.evaluation(len(self.trajectory), seconds, final=last)
            self.elapsed0 += seconds
            ev = dataclasses.replace(ev, elapsed=self.elapsed0)
            self.trajectory.append(ev)
            log.info("%s epoch %d/%d: lr %.4g, train loss %.4f, R %.4g, supernet val acc %.4f, derived %s",
                     self.s.name, self.epoch, self.s.budget, lr, float(np.mean(losses)), float(np.nanmean(regs)) if
                     not all(math.isnan(r) for r in regs) else float("nan"), ev.values[0], ev.encoding)
            self._save()
            if self.on_evaluation is not None:
                self.on_evaluation(ev, progress)
            if last:
                final = ev
        if final is None and self.trajectory:
            final = self.trajectory[-1]
        if final is not None:
            warn_if_disconnected(self.s.space, final.encoding)
        return DiffSearchResult(self.s.space.name, self.s.name, self.s.seed, self.s.budget,
                                dataclasses.asdict(self.o), self.s.objective_infos(),
                                (final,) if final is not None else (), "budget",
                                trajectory=tuple(self.trajectory))


def warn_if_disconnected(space: SearchSpace, encoding: str) -> bool:
    """Warn when a derived cell has no input->output path without ``none`` (the network ignores its input).

    Regularisers that reward a small input gradient (DSRNA-Jacobian) can be satisfied exactly by
    such a cell, so a robust search can end there; the user should know before re-training it.
    """
    if space.factors(space.decode(encoding)).get("connected", 1.0) != 0:
        return False
    log.warning("the derived architecture %s has no input->output path without 'none': the network's output "
                "does not depend on its input. Try a smaller gamma (--option gamma=0.001), more warm-up "
                "(--option warmup_epochs=N) or another --seed.", encoding)
    return True


__all__ = [
    "BilevelRun", "DIFF_STATE_FILE", "DiffOptions", "DiffSearchResult", "DifferentiableSearcher", "Regularizer", "RegularizerSum",
    "build_search_model", "cosine_lr", "warn_if_disconnected", "with_params",
]
