"""Random search: draw architectures uniformly from the space and keep the best.

The baseline every NAS paper reports (Li & Talwalkar, "Random Search and Reproducibility for
Neural Architecture Search", UAI 2019; NAS-Bench-201's "REA vs RS" table draws the same way:
uniform over genomes, then canonicalised). Repeats cost nothing (:class:`~nasrobust.search.SearchRun`
answers them from the history), so ``budget`` distinct architectures are scored.
"""

from __future__ import annotations

import numpy as np

from nasrobust.search import Searcher, SearchRun, register_searcher


@register_searcher("random", "uniform random search (Li & Talwalkar 2019)")
class RandomSearch(Searcher):
    """Uniform random search over the space's genomes."""

    name = "random"

    def _search(self, run: SearchRun, rng: np.random.Generator) -> None:
        while True:
            run.evaluate(run.random_arch(rng))
