"""Parameter and FLOP budgets: sample and search only the architectures inside a cost range.

RobArch (Peng et al., "Robust Principles: Architectural Design Principles for Adversarially
Robust CNNs", BMVC 2023) compares architectures at fixed parameter budgets (its S/M/L points
have 26/46/104M parameters); BigNAS and Once-for-All report subnets by FLOPs. A :class:`Budget`
is an inclusive range of parameters and/or MACs (the toolkit's "FLOPs", see
:mod:`nasrobust.cost`), measured at one cost setting (number of classes, input size).

**Uniform inside the budget.** :func:`sample_in_budget` returns distinct architectures drawn
uniformly from the distinct architectures inside the budget:

* a space of at most :data:`ENUMERATE_MAX` architectures is enumerated, the in-budget ones
  kept and a seeded permutation of them taken (exact; the acceptance rate is the exact
  fraction of the space inside the budget);
* a larger space is sampled by rejection from :meth:`SearchSpace.uniform_genome`, which is
  uniform over the space's distinct architectures: a draw outside the budget, or already
  drawn, is discarded. A uniform distribution conditioned on a subset is uniform on the
  subset, and discarding repeats draws without replacement, so the result is a uniformly
  random ordered subset of the budget (``sample(n)`` is a prefix of ``sample(m)``, ``n < m``).

Draws are bounded (:data:`MAX_DRAWS`). From :data:`PILOT_DRAWS` draws on, the acceptance rate is
estimated at doubling checkpoints, and a request that would need more draws than the bound fails
at once with the estimated rate and the range of cost the space covers; a budget with no draw
inside after :data:`EMPTY_DRAWS` is refused as (nearly) empty.

**Searchers.** :class:`BudgetedSpace` is the space a searcher sees under a budget: its random
draws are rejection-sampled from the space's own ``random_genome`` (so a searcher keeps its
sampling convention, only restricted), its neighbours are filtered to the budget (a mutation is a
uniform in-budget neighbour; with none, a fresh in-budget draw), and ``arch()`` refuses an
out-of-budget genome (adapters such as NNI's see it as an invalid sample). Proposing only
feasible architectures spends no evaluation on infeasible ones, which
:class:`~nasrobust.metrics.Constrained` (score infeasible architectures as worst, or penalise
them) cannot avoid; that metric stays the tool for soft, penalised trade-offs.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from nasrobust.space import Arch
from nasrobust.cost import Cost
from nasrobust.errors import SpaceError
from nasrobust.space import SearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

log = logging.getLogger(__name__)

#: Spaces at most this large are enumerated (exact in-budget set and acceptance rate).
ENUMERATE_MAX = 50_000
#: Draws before the acceptance rate is first judged, and the hard bound on draws per request.
PILOT_DRAWS = 1_000
MAX_DRAWS = 100_000
#: With no draw inside after this many, the budget is refused as (nearly) empty: its acceptance
#: rate is below ~3 / EMPTY_DRAWS (rule of three, 95%).
EMPTY_DRAWS = 16_000
#: Draws a searcher's proposal may reject before the budget is declared (almost) empty.
PROPOSAL_TRIES = 20_000

#: The cost quantities a budget may bound (attributes of :class:`~nasrobust.cost.Cost`) and their display names.
QUANTITIES: Mapping[str, str] = {"params": "params", "flops": "FLOPs"}
_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NUMBER = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([kKmMgGtT]?)")

Range = tuple[float | None, float | None]


class BudgetError(SpaceError):
    """A budget that does not parse, is empty, or is too narrow to sample as asked."""


def human(n: float) -> str:
    """1234567 -> '1.23M' (three significant digits)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def parse_count(text: str) -> float:
    """``"20M"`` -> 2e7; ``"1.5G"``, ``"300k"``, ``"2.5e7"`` and plain integers too (K/M/G/T = 1e3..1e12)."""
    m = _NUMBER.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a count (write e.g. 26M, 1.5G, 300K or 2.5e7)")
    mantissa, exponent, unit = m.groups()
    return float(mantissa) * 10.0 ** int(exponent or 0) * _UNITS[unit.upper()]


def parse_range(text: str, flag: str) -> Range:
    """``"MIN:MAX"`` with either end optional (``"20M:30M"``, ``":5M"``, ``"1.5G:"``) -> ``(lo, hi)``."""
    example = f"{flag} 20M:30M (or {flag} :30M for at most 30M, {flag} 20M: for at least 20M)"
    lo_text, colon, hi_text = text.partition(":")
    if not colon:
        raise BudgetError(f"{flag} {text!r}: expected MIN:MAX, e.g. {example}")
    if not lo_text.strip() and not hi_text.strip():
        raise BudgetError(f"{flag} {text!r}: give at least one end, e.g. {example}")
    try:
        lo = parse_count(lo_text) if lo_text.strip() else None
        hi = parse_count(hi_text) if hi_text.strip() else None
    except ValueError as exc:
        raise BudgetError(f"{flag} {text!r}: {exc}") from None
    if lo is not None and hi is not None and lo > hi:
        raise BudgetError(f"{flag} {text!r}: MIN {human(lo)} is above MAX {human(hi)}; "
                          f"write {flag} {hi_text.strip()}:{lo_text.strip()}")
    return lo, hi


def format_range(r: Range) -> str:
    lo, hi = r
    return f"{'' if lo is None else human(lo)}..{'' if hi is None else human(hi)}"


@dataclass(frozen=True)
class Budget:
    """Inclusive ranges of parameters and MACs (``None``: that end is open), at one cost setting.

    ``num_classes`` / ``input_size`` are passed to :meth:`SearchSpace.cost` (``None``: the
    space's defaults), so a budget means the same numbers ``nasrobust sample`` writes.
    """

    params: Range = (None, None)
    flops: Range = (None, None)
    num_classes: int | None = None
    input_size: int | None = None

    def __post_init__(self) -> None:
        for what, (lo, hi) in self.ranges().items():
            for end in (lo, hi):
                if end is not None and not (math.isfinite(end) and end >= 0):
                    raise BudgetError(f"{what} budget end {end!r} must be a finite number >= 0")
            if lo is not None and hi is not None and lo > hi:
                raise BudgetError(f"{what} budget {format_range((lo, hi))} is empty: MIN is above MAX")

    @classmethod
    def parse(cls, params: str | None = None, flops: str | None = None, *, num_classes: int | None = None,
              input_size: int | None = None) -> "Budget":
        """From the CLI's ``--params MIN:MAX`` / ``--flops MIN:MAX`` strings (``None``: unbounded)."""
        ranges = {what: parse_range(text, f"--{what}") for what, text in (("params", params), ("flops", flops))
                  if text is not None}
        return cls(**ranges, num_classes=num_classes, input_size=input_size)

    def ranges(self) -> dict[str, Range]:
        return {"params": self.params, "flops": self.flops}

    def limits(self) -> dict[str, Range]:
        """The bounded quantities only."""
        return {k: r for k, r in self.ranges().items() if r != (None, None)}

    @property
    def bounded(self) -> bool:
        return bool(self.limits())

    @cached_property
    def _bounds(self) -> tuple[tuple[str, float | None, float | None], ...]:
        return tuple((what, lo, hi) for what, (lo, hi) in self.limits().items())

    def admits(self, cost: Cost) -> bool:
        """True when every bounded quantity of ``cost`` lies in its range (ends included)."""
        for what, lo, hi in self._bounds:
            v = getattr(cost, what)
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return False
        return True

    def sample(self, space: SearchSpace, n: int, seed: int = 0) -> "BudgetSample":
        """``n`` architectures drawn uniformly from the distinct ones of ``space`` inside this budget."""
        return sample_in_budget(space, n, seed, self)

    def cost(self, space: SearchSpace, arch: Arch) -> Cost:
        """``arch``'s cost at this budget's setting."""
        return space.cost(arch, self.num_classes, self.input_size)

    def __str__(self) -> str:
        parts = [f"{QUANTITIES[k]} {format_range(r)}" for k, r in self.limits().items()]
        return ", ".join(parts) or "no budget"


# ----------------------------------------------------------------------------- the sample and its statistics
@dataclass(frozen=True)
class BudgetSample(Sequence[Arch]):
    """Architectures sampled inside a budget, with how they were found.

    A sequence of :class:`Arch` (index it, iterate it, ``len`` it). ``acceptance_rate`` is the
    fraction of the space inside the budget: exact for ``method="enumeration"``, the fraction of
    uniform draws that fell inside for ``method="rejection"``.
    """

    archs: tuple[Arch, ...]
    budget: Budget
    method: str  # "enumeration" or "rejection"
    draws: int  # architectures looked at (every one, when enumerated)
    accepted: int  # of those, inside the budget (repeats included)
    space_size: int

    @overload
    def __getitem__(self, i: int) -> Arch: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Arch, ...]: ...
    def __getitem__(self, i: int | slice) -> Arch | tuple[Arch, ...]:  # noqa: E301
        return self.archs[i]

    def __len__(self) -> int:
        return len(self.archs)

    def __iter__(self) -> Iterator[Arch]:
        return iter(self.archs)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.draws if self.draws else 0.0

    @property
    def in_budget(self) -> float:
        """How many architectures of the space lie inside the budget (exact when enumerated, else estimated)."""
        return self.acceptance_rate * self.space_size

    def describe(self) -> str:
        """One line: the acceptance rate and where it comes from."""
        if self.method == "enumeration":
            return (f"{self.accepted:,} of the space's {self.draws:,} architectures are inside {self.budget} "
                    f"(acceptance rate {_percent(self.acceptance_rate)}, exact by enumeration)")
        return (f"acceptance rate {_percent(self.acceptance_rate)} ({self.accepted:,} of {self.draws:,} uniform draws "
                f"inside {self.budget}; about {_about(self.in_budget)} of the space's {self.space_size:,} architectures)")


def _percent(rate: float) -> str:
    return f"{100 * rate:.3g}%"


def _about(x: float) -> str:
    return f"{x:,.0f}" if x < 1e6 else f"{x:.3g}"


def sample_in_budget(space: SearchSpace, n: int, seed: int = 0, budget: Budget | None = None) -> BudgetSample:
    """``n`` distinct architectures drawn uniformly from those inside ``budget``; the same for the same seed.

    Raises :class:`BudgetError` when the budget holds no architecture, fewer than ``n``, or so
    few that ``n`` cannot be found within :data:`MAX_DRAWS` draws.
    """
    budget = budget if budget is not None else Budget()
    if n < 0:
        raise BudgetError(f"cannot sample a negative number of architectures ({n})")
    size = space.size()
    if size <= ENUMERATE_MAX:
        result = _by_enumeration(space, n, seed, budget)
    else:
        result = _by_rejection(space, n, seed, budget, size)
    log.debug("%s: %s", space.name, result.describe())
    return result


@lru_cache(maxsize=8)
def _enumerated(space: SearchSpace, num_classes: int | None, input_size: int | None) -> tuple[tuple[Arch, ...],
                                                                                           tuple[Cost, ...]]:
    """Every architecture of an enumerable space with its cost (cached: searches and repeated samples reuse it)."""
    everything = tuple(space.enumerate())
    return everything, tuple(space.cost(a, num_classes, input_size) for a in everything)


@lru_cache(maxsize=32)
def _enumerated_inside(space: SearchSpace, budget: Budget) -> tuple[Arch, ...]:
    everything, costs = _enumerated(space, budget.num_classes, budget.input_size)
    return tuple(a for a, c in zip(everything, costs) if budget.admits(c))


def _by_enumeration(space: SearchSpace, n: int, seed: int, budget: Budget) -> BudgetSample:
    everything, costs = _enumerated(space, budget.num_classes, budget.input_size)
    inside = _enumerated_inside(space, budget)
    if not inside:
        raise BudgetError(f"no {space.name} architecture is inside {budget}: {_range_text(space, budget, costs, True)}; "
                          f"choose a budget inside that range")
    if n > len(inside):
        raise BudgetError(f"{budget} holds only {len(inside):,} of the {len(everything):,} {space.name} "
                          f"architectures; use --n {len(inside)} or fewer, or widen the budget "
                          f"({_range_text(space, budget, costs, True)})")
    order = np.random.default_rng(seed).permutation(len(inside))[:n]
    return BudgetSample(tuple(inside[int(i)] for i in order), budget, "enumeration", len(everything), len(inside),
                        len(everything))


def _by_rejection(space: SearchSpace, n: int, seed: int, budget: Budget, size: int) -> BudgetSample:
    rng = np.random.default_rng(seed)
    seen: set[Arch] = set()
    out: list[Arch] = []
    costs: list[Cost] = []  # of every draw, for the range in error messages
    draws = accepted = 0
    checkpoint = PILOT_DRAWS
    while len(out) < n:
        if draws == checkpoint:
            _check_progress(space, n, budget, size, draws, accepted, len(out), costs)
            checkpoint *= 2
        if draws >= MAX_DRAWS:
            _fail_bound(space, n, budget, size, draws, accepted, len(out), costs)
        arch = space.arch(space.uniform_genome(rng))
        cost = budget.cost(space, arch)
        costs.append(cost)
        draws += 1
        if not budget.admits(cost):
            continue
        accepted += 1
        if arch not in seen:
            seen.add(arch)
            out.append(arch)
    return BudgetSample(tuple(out), budget, "rejection", draws, accepted, size)


def _expected_draws(n: int, rate: float, in_budget: float) -> float:
    """Draws to find ``n`` distinct architectures when a fraction ``rate`` of draws lands among ``in_budget``."""
    if rate <= 0:
        return math.inf
    if n >= in_budget:
        return math.inf
    # Coupon collector: in-budget draws for n distinct of S is S (H_S - H_{S-n}) ~ S ln(S / (S - n)).
    inside_draws = in_budget * math.log(in_budget / (in_budget - n)) if in_budget < 1e12 else n
    return max(float(n), inside_draws) / rate


def _check_progress(space: SearchSpace, n: int, budget: Budget, size: int, draws: int, accepted: int, found: int,
                    costs: list[Cost]) -> None:
    """Fail now when reaching ``n`` would take more than :data:`MAX_DRAWS` draws at the observed rate."""
    if accepted == 0:
        # Rule of three: with no success in `draws` draws the rate is below ~3/draws (95%).
        if n * draws / 3 > MAX_DRAWS or draws >= EMPTY_DRAWS:
            raise BudgetError(f"none of {draws:,} uniform {space.name} draws is inside {budget} (acceptance rate "
                              f"below {3 / draws:.2g}); {_range_text(space, budget, costs)}; choose a budget inside "
                              f"that range")
        return
    rate = accepted / draws
    expected = _expected_draws(n, rate, rate * size)
    if expected > MAX_DRAWS:
        reachable = _reachable(rate, rate * size)
        raise BudgetError(f"{budget} is too narrow for --n {n} in {space.name}: acceptance rate about {rate:.2g} "
                          f"({accepted:,} of {draws:,} uniform draws), so about {_about(expected)} draws would be "
                          f"needed (the bound is {MAX_DRAWS:,}); use --n {reachable} or fewer, or widen the budget "
                          f"({_range_text(space, budget, costs)})")


def _reachable(rate: float, in_budget: float) -> int:
    """The largest n whose expected draws stay within the bound (at least 1)."""
    lo, hi = 1, max(1, int(min(in_budget, rate * MAX_DRAWS)))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _expected_draws(mid, rate, in_budget) <= MAX_DRAWS else (lo, mid - 1)
    return lo


def _fail_bound(space: SearchSpace, n: int, budget: Budget, size: int, draws: int, accepted: int, found: int,
                costs: list[Cost]) -> None:
    rate = accepted / draws
    raise BudgetError(f"found only {found:,} of {n:,} distinct {space.name} architectures inside {budget} in "
                      f"{draws:,} draws (acceptance rate {rate:.2g}, about {_about(rate * size)} architectures "
                      f"inside); use --n {max(found, 1)} or fewer, or widen the budget "
                      f"({_range_text(space, budget, costs)})")


# ----------------------------------------------------------------------------- the space's cost range
def _range_text(space: SearchSpace, budget: Budget, costs: Sequence[Cost], exact: bool = False) -> str:
    """``"bignas params range 1.05M..93.5M"`` for each bounded quantity.

    ``exact``: ``costs`` covers the whole space (enumeration). Otherwise the extremes of the
    draws are pushed outwards by hill-climbing over neighbours (exact for spaces whose cost is
    monotone in each choice, an inner bound of the range otherwise).
    """
    parts = []
    for what in budget.limits():
        values = [getattr(c, what) for c in costs]
        lo, hi = min(values), max(values)
        if not exact:
            lo, hi = _climb_range(space, budget, what, lo, hi)
        parts.append(f"{space.name} {QUANTITIES[what]} range {human(lo)}..{human(hi)}"
                     + ("" if exact else " (extremes reached from uniform draws by hill-climbing)"))
    return ", ".join(parts)


def _climb_range(space: SearchSpace, budget: Budget, what: str, lo: float, hi: float, starts: int = 3,
                 steps: int = 200) -> tuple[float, float]:
    """Push the observed range outwards by steepest descent / ascent over :meth:`SearchSpace.neighbors`."""
    rng = np.random.default_rng(0)
    value = lambda a: getattr(budget.cost(space, a), what)  # noqa: E731
    for sign in (-1, 1):
        for _ in range(starts):
            arch = space.arch(space.uniform_genome(rng))
            best = value(arch)
            for _ in range(steps):
                moves = [(sign * value(b), b) for b in space.neighbors(arch)]
                if not moves or max(moves, key=lambda m: m[0])[0] <= sign * best:
                    break
                score, arch = max(moves, key=lambda m: m[0])
                best = sign * score
            lo, hi = (min(lo, best), hi) if sign < 0 else (lo, max(hi, best))
    return lo, hi


# ----------------------------------------------------------------------------- the space a searcher sees
class BudgetedSpace(SearchSpace):
    """``space`` restricted to ``budget`` for searchers: same name, encodings and architectures.

    Random draws are rejection-sampled from ``space.random_genome`` (the searchers' sampling
    convention, restricted); :meth:`neighbors` keeps the in-budget ones, so :meth:`mutate` picks
    a uniform in-budget neighbour, or a fresh in-budget draw when there is none; :meth:`arch`
    raises :class:`BudgetError` for a genome outside the budget. :meth:`size` is exact for
    enumerable spaces and otherwise the whole space's size (an upper bound).
    """

    def __init__(self, space: SearchSpace, budget: Budget):
        if isinstance(space, BudgetedSpace):
            raise TypeError("the space is already restricted to a budget")
        self.base, self.budget = space, budget
        self.name, self.description, self.grammar = space.name, space.description, space.grammar
        self.num_classes, self.input_size = space.num_classes, space.input_size
        self.small_variant, self.elastic_resolution = space.small_variant, space.elastic_resolution
        self._costs: dict[Arch, Cost] = {}
        self._size: int | None = None
        #: Genomes drawn by :meth:`random_genome` and how many were inside (for the log).
        self.draws = self.accepted = 0

    def inside(self, arch: Arch) -> bool:
        cost = self._costs.get(arch)
        if cost is None:
            cost = self._costs[arch] = self.budget.cost(self.base, arch)
        return self.budget.admits(cost)

    # ------------------------------------------------------------------ restricted
    def arch(self, genome: Hashable) -> Arch:
        arch = self.base.arch(genome)
        if not self.inside(arch):
            raise BudgetError(f"{arch.encoding} is outside the budget {self.budget}")
        return arch

    def random_genome(self, rng: np.random.Generator) -> Hashable:
        return self._draw_inside(self.base.random_genome, rng)

    def uniform_genome(self, rng: np.random.Generator) -> Hashable:
        return self._draw_inside(self.base.uniform_genome, rng)

    def _draw_inside(self, draw: Callable[[np.random.Generator], Hashable], rng: np.random.Generator) -> Hashable:
        for _ in range(PROPOSAL_TRIES):
            genome = draw(rng)
            self.draws += 1
            if self.inside(self.base.arch(genome)):
                self.accepted += 1
                return genome
        raise BudgetError(f"none of {PROPOSAL_TRIES:,} random {self.name} architectures is inside {self.budget}; "
                          f"widen the budget (`nasrobust sample --space {self.name} --n 1 "
                          f"{_flags(self.budget)}` says what range the space covers)")

    def neighbors(self, arch: Arch) -> list[Arch]:
        return [a for a in self.base.neighbors(arch) if self.inside(a)]

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A uniform in-budget neighbour; a fresh in-budget draw when no neighbour is inside."""
        options = self.neighbors(arch)
        if options:
            return options[int(rng.integers(len(options)))]
        log.debug("%s has no neighbour inside %s; drawing a fresh architecture", arch.encoding, self.budget)
        return self.arch(self.random_genome(rng))

    def size(self) -> int:
        if self._size is None:
            total = self.base.size()
            self._size = len(_enumerated_inside(self.base, self.budget)) if total <= ENUMERATE_MAX else total
        return self._size

    def enumerate(self) -> Iterator[Arch]:
        return (a for a in self.base.enumerate() if self.inside(a))

    def sample(self, n: int, seed: int = 0, budget: Budget | None = None) -> list[Arch]:
        if budget is not None:
            raise BudgetError("the space is already restricted to a budget; pass one budget")
        return list(sample_in_budget(self.base, n, seed, self.budget))

    def acceptance(self) -> str:
        """How many proposal draws fell inside the budget so far (for the search log)."""
        rate = self.accepted / self.draws if self.draws else float("nan")
        return f"{self.accepted:,} of {self.draws:,} random proposals inside {self.budget} ({_percent(rate)})"

    # ------------------------------------------------------------------ delegated
    def encode_genome(self, genome: Hashable) -> str:
        return self.base.encode_genome(genome)

    def parse_genome(self, body: str) -> Hashable:
        return self.base.parse_genome(body)

    def canonical(self, genome: Hashable) -> Hashable:
        return self.base.canonical(genome)

    def validate(self, genome: Hashable) -> None:
        self.base.validate(genome)

    def named(self) -> Mapping[str, Arch]:
        return {k: a for k, a in self.base.named().items() if self.inside(a)}

    def factors(self, arch: Arch) -> dict[str, float]:
        return self.base.factors(arch)

    def to_vector(self, arch: Arch) -> np.ndarray:
        return self.base.to_vector(arch)

    def resolution(self, arch: Arch, input_size: int | None = None) -> int:
        return self.base.resolution(arch, input_size)

    def build(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> "nn.Module":
        return self.base.build(arch, num_classes, input_size)

    def cost(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> Cost:
        return self.base.cost(arch, num_classes, input_size)

    def record(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> dict[str, Any]:
        return self.base.record(arch, num_classes, input_size)

    def supernet(self, **kwargs: Any) -> "nn.Module":
        return self.base.supernet(**kwargs)


def _flags(budget: Budget) -> str:
    return " ".join(f"--{k} {format_range(r).replace('..', ':')}" for k, r in budget.limits().items())


__all__ = [
    "Budget", "BudgetError", "BudgetSample", "BudgetedSpace", "EMPTY_DRAWS", "ENUMERATE_MAX", "MAX_DRAWS", "PILOT_DRAWS",
    "format_range", "parse_count", "parse_range", "sample_in_budget",
]
