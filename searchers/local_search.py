"""Local search: White, Nolen & Savani, "Local Search is State of the Art for Neural
Architecture Search Benchmarks" (2020, Algorithm 1), as in NASLib's ``optimizers/discrete/ls``.

Start from the best of ``num_init`` random architectures; evaluate the neighbourhood
(:meth:`SearchSpace.neighbors`, every architecture one choice away) in random order and move to
its best member if it beats the current one (``first_improvement=True`` moves at the first
better neighbour instead). At a local optimum, restart from a new random architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nasrobust.search import Evaluation, Searcher, SearchRun, register_searcher
from nasrobust.space import Arch


@dataclass(frozen=True)
class LocalSearchOptions:
    num_init: int = 10
    first_improvement: bool = False

    def __post_init__(self) -> None:
        if self.num_init < 1:
            raise ValueError(f"num_init must be >= 1, got {self.num_init}")


@register_searcher("local", "local search with restarts (White et al. 2020)")
class LocalSearch(Searcher):
    """Hill climbing over neighbourhoods, restarting at local optima."""

    name = "local"
    Options = LocalSearchOptions

    def _search(self, run: SearchRun, rng: np.random.Generator) -> None:
        opts: LocalSearchOptions = self.options
        starts = [run.random_arch(rng) for _ in range(opts.num_init)]
        current = max(((a, run.evaluate(a)) for a in starts), key=lambda p: p[1].score)
        while True:
            current = self._climb(run, rng, current, opts.first_improvement)
            restart = run.random_unseen(rng)
            current = (restart, run.evaluate(restart))

    def _climb(self, run: SearchRun, rng: np.random.Generator, current: tuple[Arch, Evaluation],
               first_improvement: bool) -> tuple[Arch, Evaluation]:
        """Move to better neighbours until none is better; return the local optimum."""
        while True:
            neighbours = self.space.neighbors(current[0])
            best = current
            for i in rng.permutation(len(neighbours)):
                arch = neighbours[int(i)]
                ev = run.evaluate(arch)
                if ev.score > best[1].score:
                    best = (arch, ev)
                    if first_improvement:
                        break
            if best is current:
                return current
            current = best
