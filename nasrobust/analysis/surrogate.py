"""A surrogate of one robustness metric: predict it from the architecture vector, say how well.

Evaluating every architecture of a space on every suite is out of reach (NAS-Bench-201 has
6,466 cells, BigNAS billions of subnets), so searchers and users need an answer for
architectures never evaluated -- clearly marked as a prediction, with its cross-validated
quality beside it. NAS-Bench-301 (Zela et al., ICLR 2022) argues the same for surrogate
benchmarks and judges surrogates by rank correlation on held-out architectures, which is
what a search needs; so does this module:

* features: ``space.to_vector(arch)`` (one-hot ops for cell spaces, OFA's encoder layout for
  ``ofa-mbv3``, the factors elsewhere); names from ``space.vector_names()`` when a space
  defines it, else the factor names when ``to_vector`` is the default, else ``x0, x1, ...``;
* models: gradient-boosted trees (``"gbt"``, scikit-learn's ``GradientBoostingRegressor``) or
  ridge regression on standardised features with the penalty chosen by leave-one-out
  (``"ridge"``, ``RidgeCV``);
* quality: out-of-fold predictions from seeded K-fold cross-validation; Kendall's tau between
  them and the truth (pooled and per fold), RMSE and R^2; feature importance as the increase of
  held-out MSE when one feature is permuted (Breiman 2001), averaged over folds -- impurity
  importances of the final model are reported too but favour many-valued features.

``Surrogate.query(arch)`` returns the stored value when the architecture was measured
(``predicted=False``) and the model's prediction otherwise; ``Surrogate(arch)`` is a plain
``Callable[[Arch], float]`` objective. Surrogates pickle (:meth:`Surrogate.save` /
:meth:`Surrogate.load`).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd
from scipy import stats as sps

from nasrobust.analysis.table import ResultTable, Source, build_table, matches
from nasrobust.errors import NasRobustError
from nasrobust.space import Arch, SearchSpace, get_space

log = logging.getLogger(__name__)

FORMAT = "nasrobust-surrogate/1"
#: Fewest measured architectures a surrogate is fitted on.
MIN_TRAIN = 8


def _gbt(seed: int):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(n_estimators=100, learning_rate=0.1, max_depth=3, subsample=0.8,
                                     random_state=seed)


def _ridge(seed: int):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


#: Regressors by name: ``seed -> unfitted scikit-learn estimator``.
MODELS: Mapping[str, Callable[[int], Any]] = {"gbt": _gbt, "ridge": _ridge}


def _model_importance(estimator: Any) -> np.ndarray:
    """Impurity importances (trees) or |standardised coefficients| (ridge), normalised to sum 1."""
    last = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    raw = getattr(last, "feature_importances_", None)
    if raw is None:
        raw = np.abs(np.ravel(last.coef_))
    raw = np.asarray(raw, dtype=np.float64)
    total = raw.sum()
    return raw / total if total > 0 else raw


def vector_names(space: SearchSpace, arch: Arch) -> list[str]:
    """Names of the entries of ``space.to_vector(arch)`` (see the module docstring)."""
    size = len(space.to_vector(arch))
    named = getattr(space, "vector_names", None)
    if callable(named):
        names = list(named())
        if len(names) == size:
            return names
    if type(space).to_vector is SearchSpace.to_vector:
        return list(space.factors(arch))
    return [f"x{i}" for i in range(size)]


@dataclass(frozen=True)
class Prediction:
    """A metric value for one architecture: measured (``predicted=False``) or the surrogate's guess."""

    value: float
    predicted: bool
    metric: str
    cv_kendall_tau: float


@dataclass(frozen=True, eq=False)
class Surrogate:
    """A fitted predictor of one metric of one space (build it with :meth:`fit`)."""

    space: str
    dataset: str
    metric: str
    model: str
    estimator: Any
    feature_names: tuple[str, ...]
    n_train: int
    folds: int
    seed: int
    cv_kendall_tau: float
    cv_kendall_tau_folds: tuple[float, ...]
    cv_rmse: float
    cv_r2: float
    cv_predictions: pd.DataFrame  # encoding, measured, predicted (out of fold)
    importance: pd.DataFrame  # feature, permutation_mean, permutation_std, model_importance
    known: Mapping[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, source: Union[ResultTable, Source], space: str | None = None, metric: str = "clean", *,
            dataset: str | None = None, weights_id: str | None = None, model: str = "gbt", folds: int = 5,
            seed: int = 0, permutation_repeats: int = 5) -> "Surrogate":
        """Fit on every architecture that has ``metric`` (a column name, a glob matching one, or ``"clean"``)."""
        if model not in MODELS:
            raise NasRobustError(f"unknown surrogate model {model!r}; use one of {', '.join(MODELS)}")
        if folds < 2:
            raise NasRobustError(f"cross-validation needs at least 2 folds, got {folds}")
        table = source if isinstance(source, ResultTable) else build_table(source, space, dataset=dataset,
                                                                            weights_id=weights_id)
        column = _resolve_metric(table, metric)
        space_obj = get_space(table.space)
        values = table.frame[column]
        ok = values.notna()
        encodings = table.frame.loc[ok, "encoding"].tolist()
        y = values[ok].to_numpy(dtype=np.float64)
        if len(y) < max(MIN_TRAIN, folds):
            raise NasRobustError(
                f"{column}: measured on {len(y)} architectures; a surrogate needs at least {max(MIN_TRAIN, folds)}"
            )
        if np.ptp(y) == 0:
            raise NasRobustError(f"{column}: no variance (every value is {y[0]:.6g}); nothing to predict")
        archs = [space_obj.decode(e) for e in encodings]
        x = np.stack([space_obj.to_vector(a) for a in archs]).astype(np.float64)
        names = tuple(vector_names(space_obj, archs[0]))
        oof, fold_taus, perm = _cross_validate(model, x, y, folds, seed, permutation_repeats)
        estimator = MODELS[model](seed).fit(x, y)
        tau = float(sps.kendalltau(y, oof).statistic)
        rmse = float(np.sqrt(np.mean((oof - y) ** 2)))
        r2 = float(1.0 - np.sum((oof - y) ** 2) / np.sum((y - y.mean()) ** 2))
        importance = pd.DataFrame({
            "feature": names, "permutation_mean": perm.mean(axis=0), "permutation_std": perm.std(axis=0),
            "model_importance": _model_importance(estimator),
        }).sort_values("permutation_mean", ascending=False, kind="mergesort").reset_index(drop=True)
        log.info("surrogate %s of %s (%s, %d archs): CV Kendall tau %.3f", model, column, table.space, len(y), tau)
        return cls(
            space=table.space, dataset=table.dataset, metric=column, model=model, estimator=estimator,
            feature_names=names, n_train=len(y), folds=folds, seed=seed, cv_kendall_tau=tau,
            cv_kendall_tau_folds=tuple(fold_taus), cv_rmse=rmse, cv_r2=r2,
            cv_predictions=pd.DataFrame({"encoding": encodings, "measured": y, "predicted": oof}),
            importance=importance, known=dict(zip(encodings, map(float, y))),
        )

    # ------------------------------------------------------------------ answering
    def _arch(self, arch: Arch | str) -> Arch:
        space = get_space(self.space)
        if isinstance(arch, str):
            return space.decode(arch)
        if arch.space != self.space:
            raise NasRobustError(f"this surrogate predicts {self.metric} for space {self.space!r}, not {arch.space!r}")
        return arch

    def predict(self, arch: Arch | str) -> Prediction:
        """The model's prediction (even for a measured architecture)."""
        a = self._arch(arch)
        value = float(self.estimator.predict(get_space(self.space).to_vector(a)[None, :].astype(np.float64))[0])
        return Prediction(value, True, self.metric, self.cv_kendall_tau)

    def predict_many(self, archs: Sequence[Arch | str]) -> np.ndarray:
        space = get_space(self.space)
        x = np.stack([space.to_vector(self._arch(a)) for a in archs]).astype(np.float64)
        return self.estimator.predict(x)

    def query(self, arch: Arch | str) -> Prediction:
        """The stored value when ``arch`` was measured, else the prediction (``predicted=True``)."""
        a = self._arch(arch)
        if a.encoding in self.known:
            return Prediction(self.known[a.encoding], False, self.metric, self.cv_kendall_tau)
        return self.predict(a)

    def __call__(self, arch: Arch | str) -> float:
        return self.query(arch).value

    def summary(self) -> dict[str, Any]:
        return {"metric": self.metric, "space": self.space, "dataset": self.dataset, "model": self.model,
                "n_train": self.n_train, "folds": self.folds, "seed": self.seed,
                "cv_kendall_tau": self.cv_kendall_tau,
                "cv_kendall_tau_fold_mean": float(np.nanmean(self.cv_kendall_tau_folds)),
                "cv_rmse": self.cv_rmse, "cv_r2": self.cv_r2,
                "top_feature": self.importance["feature"].iloc[0] if len(self.importance) else ""}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump({"format": FORMAT, "surrogate": self}, f)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Surrogate":
        path = Path(path)
        if not path.exists():
            raise NasRobustError(f"no surrogate at {path}; fit one with Surrogate.fit(...).save({str(path)!r})")
        with path.open("rb") as f:
            payload = pickle.load(f)  # a file we wrote ourselves; never load untrusted pickles
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise NasRobustError(f"{path} is not a nasrobust surrogate (expected format {FORMAT})")
        return payload["surrogate"]


def _resolve_metric(table: ResultTable, metric: str) -> str:
    if metric in table.metrics or metric == "clean":
        return table.resolve(metric)
    hits = [m for m in table.metrics if matches(m, [metric])]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise NasRobustError(f"{metric!r} matches {len(hits)} metrics ({', '.join(hits[:5])}...); name one")
    return table.resolve(metric)  # raises with the list of columns


def _cross_validate(model: str, x: np.ndarray, y: np.ndarray, folds: int, seed: int,
                    repeats: int) -> tuple[np.ndarray, list[float], np.ndarray]:
    """Out-of-fold predictions, per-fold Kendall tau and held-out permutation importances (folds x features)."""
    from sklearn.model_selection import KFold

    oof = np.empty_like(y)
    taus: list[float] = []
    perm = []
    rng = np.random.default_rng(seed)
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(x):
        est = MODELS[model](seed).fit(x[train], y[train])
        oof[test] = est.predict(x[test])
        taus.append(float(sps.kendalltau(y[test], oof[test]).statistic) if len(test) > 1 else float("nan"))
        if repeats:
            perm.append(permutation_importance(est, x[test], y[test], repeats, rng))
    perm_arr = np.array(perm) if perm else np.zeros((1, x.shape[1]))
    return oof, taus, perm_arr


def permutation_importance(estimator: Any, x: np.ndarray, y: np.ndarray, repeats: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Mean increase of the MSE on ``(x, y)`` when one feature's column is shuffled (Breiman 2001).

    All ``features x repeats`` shuffled copies are predicted in one call (scikit-learn's
    ``permutation_importance`` makes one call per copy, which dominates the cost on small folds).
    """
    n, d = x.shape
    base = np.mean((estimator.predict(x) - y) ** 2)
    copies = np.repeat(x[None, None], d, axis=0).repeat(repeats, axis=1)  # (d, repeats, n, d)
    for j in range(d):
        for r in range(repeats):
            copies[j, r, :, j] = x[rng.permutation(n), j]
    pred = estimator.predict(copies.reshape(-1, d)).reshape(d, repeats, n)
    return (((pred - y) ** 2).mean(axis=2) - base).mean(axis=1)
