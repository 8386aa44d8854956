"""NNI 3.0 strategies on nasrobust spaces, with a nasrobust metric as the reward (optional extra ``nni``).

NNI's discrete strategies (``nni.nas.strategy.RegularizedEvolution``, ``Random``, ``TPE``, ...)
search a *simplified* space: a dict of labelled categorical dimensions. :class:`GenomeLayout`
derives those dimensions from a space's genomes without knowing the space: a genome is
flattened (frozen dataclasses and tuples, recursively) into leaves, and each leaf's choices
are the values seen in ``probes`` random genomes drawn with an explicit generator. This needs
every genome of the space to have the same shape (nb201, darts, robarch, bignas, zoo do;
``ofa-mbv3``'s per-stage block lists do not, and get a clear error). A sample NNI proposes is
rebuilt into a genome and canonicalised by ``space.arch``; one the space rejects (e.g. a
violated width ordering) is reported to NNI as invalid, and NNI draws again.

The model space is NNI's ``RawFormatModelSpace`` whose frozen "model" is our :class:`Arch`;
the evaluator is a ``FunctionalEvaluator`` that scores it through
:class:`~nasrobust.search.SearchRun` (budget, history, state file and resume as for every
searcher) and reports the oriented score with ``nni.report_final_result``. Models run in this
process on NNI's ``SequentialExecutionEngine``, whose budget is ours. Registered searchers:
``nni-evolution`` (NNI's ``RegularizedEvolution``) and ``nni-random``.

``nni==3.0`` imports under torch 2.x with warnings about unknown module classes; it is an
optional dependency (``pip install nasrobust[nni]``) and is imported only when such a
searcher runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from nasrobust.errors import SpaceError
from nasrobust.search import BudgetExhausted, SearchError, Searcher, SearchRun, register_searcher
from nasrobust.space import Arch, SearchSpace

log = logging.getLogger(__name__)

LEAF = ("leaf",)


def genome_shape(genome: Any) -> tuple:
    """The structure of a genome: dataclass fields and tuple lengths, recursively; scalars are leaves."""
    if dataclasses.is_dataclass(genome) and not isinstance(genome, type):
        return ("dataclass", type(genome), tuple((f.name, genome_shape(getattr(genome, f.name)))
                                                 for f in dataclasses.fields(genome)))
    if isinstance(genome, tuple):
        return ("tuple", tuple(genome_shape(g) for g in genome))
    return LEAF


def flatten_genome(genome: Any) -> list[Hashable]:
    """The leaves of a genome in a fixed order."""
    if dataclasses.is_dataclass(genome) and not isinstance(genome, type):
        return [leaf for f in dataclasses.fields(genome) for leaf in flatten_genome(getattr(genome, f.name))]
    if isinstance(genome, tuple):
        return [leaf for g in genome for leaf in flatten_genome(g)]
    return [genome]


def rebuild_genome(shape: tuple, leaves: Iterator[Hashable]) -> Any:
    """Inverse of :func:`flatten_genome` for a genome of ``shape``."""
    if shape[0] == "dataclass":
        return shape[1](**{name: rebuild_genome(sub, leaves) for name, sub in shape[2]})
    if shape[0] == "tuple":
        return tuple(rebuild_genome(sub, leaves) for sub in shape[1])
    return next(leaves)


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


@dataclass(frozen=True)
class GenomeLayout:
    """A space's genomes as categorical dimensions: ``choices[i]`` for leaf ``i`` (constants dropped)."""

    shape: tuple
    choices: tuple[tuple[Hashable, ...], ...]
    constants: tuple[tuple[int, Hashable], ...]  # (leaf index, value) of leaves that never vary

    @classmethod
    def discover(cls, space: SearchSpace, rng: np.random.Generator, probes: int = 2000) -> "GenomeLayout":
        """Dimensions seen in ``probes`` random genomes of ``space`` (all must have one shape)."""
        genomes = [space.random_genome(rng) for _ in range(probes)]
        shapes = {genome_shape(g) for g in genomes}
        if len(shapes) != 1:
            raise SearchError(
                f"space {space.name!r} has genomes of {len(shapes)} different shapes (e.g. variable-length "
                "block lists), which NNI's categorical dimensions cannot express; use a nasrobust searcher")
        values: list[dict[Hashable, None]] = []
        for g in genomes:
            for i, leaf in enumerate(flatten_genome(g)):
                if i == len(values):
                    values.append({})
                values[i].setdefault(leaf, None)
        choices, constants = [], []
        for i, seen in enumerate(values):
            ordered = tuple(sorted(seen, key=_sort_key))
            if len(ordered) == 1:
                constants.append((i, ordered[0]))
            else:
                choices.append(ordered)
        return cls(shapes.pop(), tuple(choices), tuple(constants))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f"g{i:03d}" for i in range(len(self.choices)))

    def genome(self, sample: dict[str, Hashable]) -> Any:
        """The genome of an NNI sample (``label -> value``)."""
        varying = iter(sample[label] for label in self.labels)
        fixed = dict(self.constants)
        n = len(self.choices) + len(self.constants)
        return rebuild_genome(self.shape, iter(fixed[i] if i in fixed else next(varying) for i in range(n)))


def _import_nni() -> Any:
    try:
        import nni
        import nni.nas.strategy  # noqa: F401  (fails on a broken install, not only a missing one)
    except ImportError as exc:
        raise SearchError(f"NNI searchers need NNI 3.0: pip install 'nasrobust[nni]' ({exc})") from None
    return nni


@contextmanager
def _quiet_nni() -> Iterator[None]:
    """NNI logs every trial at INFO with its own handlers; keep only its warnings during a search."""
    logger = logging.getLogger("nni")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def nni_model_space(space: SearchSpace, layout: GenomeLayout, evaluate: Callable[[Arch], None]) -> Any:
    """NNI's ``RawFormatModelSpace`` over ``layout`` whose models are :class:`Arch` s scored by ``evaluate``."""
    from nni.mutable import Categorical, MutableDict, SampleValidationError
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.space import BaseModelSpace, RawFormatModelSpace

    class ArchSpace(BaseModelSpace):
        """The space's genomes as NNI categorical dimensions; freezing a sample gives an Arch."""

        def __init__(self) -> None:
            self.dims = MutableDict({label: Categorical(list(c), label=label) for label, c in zip(layout.labels, layout.choices)})

        def leaf_mutables(self, is_leaf):
            yield from self.dims.leaf_mutables(is_leaf)

        def check_contains(self, sample):
            problem = self.dims.check_contains(sample)
            if problem is not None:
                return problem
            try:
                space.arch(layout.genome(sample))
            except SpaceError as exc:
                return SampleValidationError(f"not an architecture of {space.name}: {exc}")
            return None

        def freeze(self, sample) -> Arch:
            return space.arch(layout.genome(sample))

    return RawFormatModelSpace(ArchSpace(), FunctionalEvaluator(evaluate))


class NNIStrategySearcher(Searcher):
    """Base of the searchers that run an NNI strategy; subclasses build the strategy."""

    def _strategy(self, seed: int, layout: GenomeLayout) -> Any:
        raise NotImplementedError

    def _search(self, run: SearchRun, rng: np.random.Generator) -> None:
        nni = _import_nni()
        from nni.nas.execution import SequentialExecutionEngine

        layout = GenomeLayout.discover(self.space, rng, self.options.probes)
        stop: list[str] = []

        def evaluate(arch: Arch) -> None:
            try:
                nni.report_final_result(run.evaluate(arch).score)
            except BudgetExhausted as exc:
                stop.append(exc.reason)
                nni.report_final_result(float("-inf"))

        class Engine(SequentialExecutionEngine):
            """NNI's in-process engine, with the search's budget."""

            def budget_available(self) -> bool:
                return not stop and run.remaining > 0

        with _quiet_nni():
            self._strategy(int(rng.integers(2**31 - 1)), layout)(nni_model_space(self.space, layout, evaluate), Engine())
        raise BudgetExhausted(stop[0] if stop else ("budget" if run.remaining <= 0 else "stalled"))


@dataclass(frozen=True)
class NNIEvolutionOptions:
    #: NNI's own defaults (population 100, sample 25) would spend a budget of 100 on random
    #: sampling alone; these match nasrobust's ``evolution`` scale so budgets of 50-200 evolve.
    population_size: int = 20
    sample_size: int = 5
    #: Probability to redraw each dimension of a child; ``None``: 1 / number of dimensions.
    mutation_prob: float | None = None
    probes: int = 2000

    def __post_init__(self) -> None:
        if not 1 <= self.sample_size <= self.population_size:
            raise ValueError(f"need 1 <= sample_size ({self.sample_size}) <= population_size ({self.population_size})")
        if self.mutation_prob is not None and not 0 < self.mutation_prob <= 1:
            raise ValueError(f"mutation_prob must be in (0, 1], got {self.mutation_prob}")


@register_searcher("nni-evolution", "NNI 3.0's RegularizedEvolution on the space's genome dimensions (extra: nni)")
class NNIRegularizedEvolution(NNIStrategySearcher):
    """NNI's aging evolution (Real et al. 2019) with our space, metric, budget and history."""

    name = "nni-evolution"
    Options = NNIEvolutionOptions

    def _strategy(self, seed: int, layout: GenomeLayout) -> Any:
        from nni.nas.strategy import RegularizedEvolution

        o: NNIEvolutionOptions = self.options
        prob = o.mutation_prob if o.mutation_prob is not None else 1.0 / max(1, len(layout.choices))
        return RegularizedEvolution(population_size=o.population_size, sample_size=o.sample_size,
                                    mutation_prob=prob, dedup=True, seed=seed)


@dataclass(frozen=True)
class NNIRandomOptions:
    probes: int = 2000


@register_searcher("nni-random", "NNI 3.0's Random strategy on the space's genome dimensions (extra: nni)")
class NNIRandom(NNIStrategySearcher):
    """NNI's random strategy (deduplicated samples)."""

    name = "nni-random"
    Options = NNIRandomOptions

    def _strategy(self, seed: int, layout: GenomeLayout) -> Any:
        from nni.nas.strategy import Random

        return Random(dedup=True, seed=seed)


__all__ = ["GenomeLayout", "NNIRandom", "NNIRegularizedEvolution", "NNIStrategySearcher", "flatten_genome",
           "genome_shape", "nni_model_space", "rebuild_genome"]
