"""NASLib's optimizer protocol on nasrobust spaces and metrics, so NASLib users can drop our spaces in.

NASLib's discrete optimizers (``naslib/optimizers/discrete/re/optimizer.py``, ``ls/optimizer.py``,
``rs``, ``npenas``, ``bananas``) never touch a network: they drive a *search-space object*
through a small protocol, read here from NASLib's ``search_spaces/nasbench201/graph.py``:

* ``clone()`` -- an independent copy (NASLib: ``copy.deepcopy`` of the graph);
* ``sample_random_architecture(dataset_api=None)`` -- set this object to a random architecture;
* ``mutate(parent, dataset_api=None)`` -- set this object to a one-choice mutation of ``parent``;
* ``get_nbhd(dataset_api=None)`` -- every neighbour, each wrapped as a ``torch.nn.Module`` with
  an ``.arch`` attribute (LS appends them to an ``nn.ModuleList`` history), shuffled;
* ``query(metric=None, dataset=None, path=None, epoch=-1, full_lc=False, dataset_api=None)``
  -- the number the optimizer maximises;
* ``get_hash()``, ``get_type()``, ``set_spec(spec, dataset_api=None)``,
  ``get_arch_iterator(dataset_api=None)``, ``encode(encoding_type=None)`` (predictor-based
  optimizers), and the class attributes ``QUERYABLE`` and ``OPTIMIZER_SCOPE``.

:class:`NASLibArch` implements it on (space, architecture, metric). ``query`` returns the
metric's oriented *score* (higher is better, as NASLib maximises ``Metric.VAL_ACCURACY``) for
accuracy-like NASLib metrics and the measured seconds for time-like ones; the ``metric``,
``dataset`` and ``dataset_api`` arguments are accepted and otherwise ignored (the metric is
ours, not NASLib's benchmark table). Randomness comes from one explicit ``np.random.Generator``
shared by all clones (NASLib uses the global ``np.random``). :func:`run_naslib_optimizer`
drives any NASLib-style optimizer the way NASLib's trainer does for discrete optimizers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from nasrobust.errors import NasRobustError
from nasrobust.metrics import RobustnessMetric, as_metric
from nasrobust.space import Arch, SearchSpace, get_space

#: NASLib ``Metric`` names answered with the measured wall time instead of the score.
TIME_METRICS = frozenset({"TRAIN_TIME", "VAL_TIME", "TEST_TIME"})


def _metric_name(metric: Any) -> str:
    return str(getattr(metric, "name", metric) or "VAL_ACCURACY").upper()


class NASLibArch:
    """One architecture of a nasrobust space behind NASLib's search-space protocol."""

    QUERYABLE = True
    OPTIMIZER_SCOPE: tuple[str, ...] = ()
    #: NPENAS/BANANAS call ``parse()`` (build a network) only when this is True; the metric
    #: builds what it needs itself, so the optimizers never have to.
    instantiate_model = False
    #: Encodings :meth:`encode` produces on every space: the space's numeric vector
    #: (:meth:`SearchSpace.to_vector`), which is NASLib's ``adjacency_one_hot`` layout on nb201.
    ENCODINGS: tuple[str, ...] = ("adjacency_one_hot",)

    def __init__(self, space: SearchSpace | str, metric: RobustnessMetric | Any, arch: Arch | None = None,
                 rng: np.random.Generator | None = None, seed: int = 0):
        self.space = get_space(space) if isinstance(space, str) else space
        self.metric = as_metric(metric)
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self._arch = arch

    # ------------------------------------------------------------------ state
    @property
    def arch(self) -> Arch:
        if self._arch is None:
            raise NasRobustError("this NASLibArch holds no architecture yet: call sample_random_architecture() or set_spec()")
        return self._arch

    def clone(self) -> "NASLibArch":
        return NASLibArch(self.space, self.metric, self._arch, self.rng)

    def set_spec(self, spec: Arch | str, dataset_api: Any = None) -> None:
        """Set the architecture from an :class:`Arch` or an encoding."""
        self._arch = spec if isinstance(spec, Arch) else self.space.decode(spec)
        if self._arch.space != self.space.name:
            raise NasRobustError(f"{self._arch.encoding} is not in space {self.space.name!r}")

    def get_hash(self) -> str:
        return self.arch.encoding

    def get_type(self) -> str:
        return f"nasrobust:{self.space.name}"

    @property
    def space_name(self) -> str:
        """NASLib branches on this (e.g. ``!= "nasbench301"``); ours is the nasrobust space name."""
        return f"nasrobust:{self.space.name}"

    def get_model_size(self) -> float:
        """Parameters held, in MB: none, the adapter holds a genome, not weights."""
        return 0.0

    # ------------------------------------------------------------------ the optimizer protocol
    def sample_random_architecture(self, dataset_api: Any = None, load_labeled: bool = False) -> None:
        self._arch = self.space.arch(self.space.random_genome(self.rng))

    def mutate(self, parent: "NASLibArch", dataset_api: Any = None) -> None:
        self._arch = self.space.mutate(parent.arch, self.rng)

    def get_nbhd(self, dataset_api: Any = None) -> list[Any]:
        """Every neighbour as an ``nn.Module`` container with ``.arch``, shuffled (NASLib's format)."""
        import torch.nn as nn

        neighbours = self.space.neighbors(self.arch)
        out = []
        for i in self.rng.permutation(len(neighbours)):
            holder = nn.Module()
            holder.arch = NASLibArch(self.space, self.metric, neighbours[int(i)], self.rng)
            out.append(holder)
        return out

    def get_arch_iterator(self, dataset_api: Any = None) -> Iterator[Arch]:
        return self.space.enumerate()

    def query(self, metric: Any = None, dataset: str | None = None, path: str | None = None, epoch: int = -1,
              full_lc: bool = False, dataset_api: Any = None) -> float:
        """The oriented metric score (higher is better), or the call's seconds for a time metric."""
        value = self.metric.measure(self.arch)
        if _metric_name(metric) in TIME_METRICS:
            return float(value.seconds)
        return self.metric.orient(value.value)

    @property
    def encodings(self) -> tuple[str, ...]:
        """What :meth:`encode` produces on this space: ``adjacency_one_hot``, and ``path`` (BANANAS'
        path encoding) where the space declares ``path_vector`` (nb201, darts)."""
        return self.ENCODINGS + (("path",) if callable(getattr(self.space, "path_vector", None)) else ())

    def encode(self, encoding_type: Any = None) -> np.ndarray:
        """The architecture as NASLib's predictors read it; an encoding the space lacks fails loudly."""
        name = str(getattr(encoding_type, "value", encoding_type) or "adjacency_one_hot").lower()
        if name not in self.encodings:
            raise NasRobustError(f"NASLibArch cannot produce encoding {name!r} on space {self.space.name!r}; supported: "
                                 f"{', '.join(self.encodings)} (set the predictor's encoding_type to one of these)")
        if name == "path":
            return np.asarray(self.space.path_vector(self.arch))  # type: ignore[attr-defined]
        return self.space.to_vector(self.arch)

    def __repr__(self) -> str:
        return f"NASLibArch({self._arch.encoding if self._arch else None!r})"


def run_naslib_optimizer(optimizer: Any, space: SearchSpace | str, metric: RobustnessMetric | Any, epochs: int,
                         seed: int = 0, stop: Callable[[], bool] | None = None) -> NASLibArch:
    """Drive a NASLib discrete optimizer as NASLib's trainer does and return its final architecture.

    ``optimizer.adapt_search_space(NASLibArch(...))``, then ``optimizer.new_epoch(e)`` for
    ``e < epochs``, then ``optimizer.get_final_architecture()`` -- the calls NASLib's
    ``Trainer.search`` makes when ``optimizer.using_step_function`` is False. ``stop()``, checked
    after each epoch, ends the search early (NASLib counts epochs, which re-query repeats; a
    caller can stop at a number of *distinct* architectures instead, as nasrobust's budget does).
    """
    optimizer.adapt_search_space(NASLibArch(space, metric, seed=seed))
    for epoch in range(epochs):
        optimizer.new_epoch(epoch)
        if stop is not None and stop():
            break
    return optimizer.get_final_architecture()


__all__ = ["NASLibArch", "TIME_METRICS", "run_naslib_optimizer"]
