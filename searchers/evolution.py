"""Regularized (aging) evolution: Real, Aggarwal, Huang & Le, "Regularized Evolution for Image
Classifier Architecture Search", AAAI 2019, Algorithm 1.

Fill a population of ``population_size`` random architectures; then repeatedly draw
``sample_size`` members uniformly *with replacement*, mutate the best of them (one choice
changed, :meth:`SearchSpace.mutate`), add the child and remove the *oldest* member. Ageing
instead of killing the worst is the "regularization". The same loop as NASLib's
``optimizers/discrete/re/optimizer.py`` and NNI's ``RegularizedEvolution``, with an explicit
generator. Defaults (20, 5) suit budgets of about 100 evaluations; the paper used P=100,
S=25 over 20,000 models.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from nasrobust.search import Evaluation, Searcher, SearchRun, register_searcher
from nasrobust.space import Arch


@dataclass(frozen=True)
class EvolutionOptions:
    population_size: int = 20
    sample_size: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.sample_size <= self.population_size:
            raise ValueError(f"need 1 <= sample_size ({self.sample_size}) <= population_size ({self.population_size})")


@register_searcher("evolution", "regularized (aging) evolution (Real et al. 2019)")
class RegularizedEvolution(Searcher):
    """Aging evolution with tournament selection and single-choice mutation."""

    name = "evolution"
    Options = EvolutionOptions

    def _search(self, run: SearchRun, rng: np.random.Generator) -> None:
        opts: EvolutionOptions = self.options
        population: deque[tuple[Arch, Evaluation]] = deque()
        while len(population) < opts.population_size:
            arch = run.random_arch(rng)
            population.append((arch, run.evaluate(arch)))
        while True:
            sample = [population[int(i)] for i in rng.integers(len(population), size=opts.sample_size)]
            parent = max(sample, key=lambda member: member[1].score)  # the first of equals
            child = self.space.mutate(parent[0], rng)
            population.append((child, run.evaluate(child)))
            population.popleft()
