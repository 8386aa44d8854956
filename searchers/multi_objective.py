"""Multi-objective search: NSGA-II (Deb, Pratap, Agarwal & Meyarivan, "A Fast and Elitist
Multiobjective Genetic Algorithm: NSGA-II", IEEE TEC 2002) with mutation as the only variation.

Objectives are the :class:`~nasrobust.metrics.MultiObjective`'s oriented scores (e.g. clean
accuracy, robust accuracy and ``cost:flops``, each with its own direction). Each generation
makes ``population_size`` children by binary tournament on (non-domination rank, crowding
distance) and :meth:`SearchSpace.mutate`; parents and children are merged, sorted into
non-dominated fronts, and the next population is filled front by front, the last front cut by
crowding distance. Crossover is left out because the space API (shared by every space) has no
recombination. The result's ``front`` is the Pareto front of *every* architecture evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nasrobust.search import Evaluation, Searcher, SearchRun, dominates, register_searcher
from nasrobust.space import Arch


def nondominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Deb et al.'s fast non-dominated sort (higher is better): fronts of indices, best first."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    count = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                count[i] += 1
    fronts = [[i for i in range(n) if count[i] == 0]]
    while fronts[-1]:
        nxt = []
        for i in fronts[-1]:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        fronts.append(sorted(nxt))
    return fronts[:-1]


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """Deb et al.'s crowding distance of each member of ``front`` (boundary points: infinity).

    Objectives whose range on the front is zero or not finite (e.g. infeasible ``-inf`` scores)
    add nothing.
    """
    dist = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for k in range(len(points[front[0]])):
        order = sorted(front, key=lambda i: points[i][k])
        lo, hi = points[order[0]][k], points[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = math.inf
        span = hi - lo
        if not math.isfinite(span) or span <= 0:
            continue
        for a, b, c in zip(order, order[1:], order[2:]):
            gap = points[c][k] - points[a][k]
            if math.isfinite(gap):
                dist[b] += gap / span
    return dist


@dataclass(frozen=True)
class NSGA2Options:
    population_size: int = 20

    def __post_init__(self) -> None:
        if self.population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {self.population_size}")


@register_searcher("nsga2", "NSGA-II, mutation only (Deb et al. 2002): Pareto front of several metrics")
class NSGA2(Searcher):
    """Elitist multi-objective evolution: non-dominated sorting and crowding distance."""

    name = "nsga2"
    multi_objective = True
    Options = NSGA2Options

    def _search(self, run: SearchRun, rng: np.random.Generator) -> None:
        size = self.options.population_size
        population: list[tuple[Arch, Evaluation]] = []
        while len(population) < size:
            arch = run.random_unseen(rng)
            population.append((arch, run.evaluate(arch)))
        while True:
            rank, crowd = self._rank(population)
            children = []
            for _ in range(size):
                i, j = (int(v) for v in rng.integers(len(population), size=2))
                win = i if (rank[i], -crowd[i]) <= (rank[j], -crowd[j]) else j
                child = self.space.mutate(population[win][0], rng)
                children.append((child, run.evaluate(child)))
            population = self._select(population + children, size)

    @staticmethod
    def _rank(population: Sequence[tuple[Arch, Evaluation]]) -> tuple[list[int], list[float]]:
        points = [ev.scores for _, ev in population]
        rank, crowd = [0] * len(points), [0.0] * len(points)
        for r, front in enumerate(nondominated_sort(points)):
            for i, d in crowding_distance(points, front).items():
                rank[i], crowd[i] = r, d
        return rank, crowd

    @staticmethod
    def _select(candidates: Sequence[tuple[Arch, Evaluation]], size: int) -> list[tuple[Arch, Evaluation]]:
        unique = list({arch: (arch, ev) for arch, ev in candidates}.values())
        points = [ev.scores for _, ev in unique]
        chosen: list[int] = []
        for front in nondominated_sort(points):
            if len(chosen) + len(front) <= size:
                chosen.extend(front)
                continue
            crowd = crowding_distance(points, front)
            chosen.extend(sorted(front, key=lambda i: -crowd[i])[: size - len(chosen)])
            break
        return [unique[i] for i in chosen]
