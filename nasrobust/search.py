"""Discrete architecture search: the searcher base class, its registry, budget, history and resume.

Searchers use only the space's API -- ``random_genome``/``arch``, ``mutate``, ``neighbors``
(NASLib's ``optimizers/discrete/re/optimizer.py`` is the anchor: ``sample_random_architecture``,
``mutate``, ``get_nbhd``, ``query``) -- and an objective that is any
:class:`~nasrobust.metrics.RobustnessMetric`, plain callable or
:class:`~nasrobust.metrics.MultiObjective`, so every searcher runs on every space with every
metric. Concrete searchers live in the top-level ``searchers/`` folder (installed as
``nasrobust.searchers``) and register with :func:`register_searcher`; the differentiable ones
(DARTS-style) register the same way and may ignore the discrete helpers.

**Budget** is counted in metric evaluations of *distinct* architectures: asking again for an
architecture already evaluated returns the recorded answer for free (tabular NAS benchmarks
behave the same way). A search stops when the budget is spent, when every architecture of the
space has been evaluated, or when it keeps proposing known architectures (stalled).

**Resume.** With a state file, every evaluation is appended to it as one JSON line the moment
it finishes (the first line records what search it is). A rerun with the same settings replays
the search from its seed: each new architecture the searcher proposes is checked against the
next recorded one and answered from the file, so the metric is not called again, and the
search continues live where the file ends. Because the searcher's random draws are replayed
too, a resumed search makes exactly the choices of an uninterrupted one (checked: a mismatch
is an error). The budget is not part of the identity, so a finished search can be extended.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nasrobust.budget import BudgetedSpace
from nasrobust.errors import NasRobustError
from nasrobust.metrics import MultiObjective, Objective, as_objectives
from nasrobust.options import NoOptions, build_options
from nasrobust.registry import Registry
from nasrobust.space import Arch, SearchSpace, get_space

log = logging.getLogger(__name__)

#: Registered searchers: ``SEARCHERS.create(name, space=..., objective=..., budget=..., seed=..., **options)``.
SEARCHERS: Registry["Searcher"] = Registry("searcher", plugins="nasrobust.searchers")

STATE_FORMAT = "nasrobust-search/1"
#: A search proposing this many evaluated architectures in a row (and nothing new) has stalled.
STALL_LIMIT = 1000


def register_searcher(name: str, doc: str = "") -> Callable:
    """Register a :class:`Searcher` subclass under ``name``."""
    return SEARCHERS.register(name, doc)


def list_searchers(pattern: str = "*") -> list[str]:
    return SEARCHERS.names(pattern)


class SearchError(NasRobustError):
    """A search that cannot run as asked (bad options, a state file of another search, ...)."""


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Evaluation:
    """One evaluated architecture: raw values, oriented scores (higher is better), provenance, time."""

    index: int  # order of first evaluation, from 0
    encoding: str
    values: tuple[float, ...]
    scores: tuple[float, ...]
    predicted: tuple[bool, ...]
    seconds: float  # wall time of the metric call(s)
    elapsed: float  # wall time since the search started (summed over resumed runs)

    @property
    def score(self) -> float:
        """The first objective's score (the objective of single-objective searchers)."""
        return self.scores[0]

    @property
    def arch(self) -> Arch:
        from nasrobust.space import decode

        return decode(self.encoding)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "encoding": self.encoding, "values": list(self.values),
                "scores": list(self.scores), "predicted": list(self.predicted),
                "seconds": self.seconds, "elapsed": self.elapsed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Evaluation":
        return cls(int(d["index"]), str(d["encoding"]), tuple(float(v) for v in d["values"]),
                   tuple(float(v) for v in d["scores"]), tuple(bool(v) for v in d["predicted"]),
                   float(d["seconds"]), float(d["elapsed"]))


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Pareto dominance on scores (higher is better): ``a`` no worse everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(evaluations: Iterable[Evaluation]) -> tuple[Evaluation, ...]:
    """The non-dominated evaluations (by scores), in evaluation order."""
    items = list(evaluations)
    return tuple(e for e in items if not any(dominates(o.scores, e.scores) for o in items if o is not e))


@dataclass(frozen=True)
class ObjectiveInfo:
    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class SearchResult:
    """What a search found: its settings, every evaluation, and the best one / the Pareto front."""

    space: str
    searcher: str
    seed: int
    budget: int
    options: Mapping[str, Any]
    objectives: tuple[ObjectiveInfo, ...]
    history: tuple[Evaluation, ...]
    stopped: str  # "budget", "space exhausted" or "stalled"

    @property
    def best(self) -> Evaluation:
        """The evaluation with the highest first score (earliest on ties)."""
        if not self.history:
            raise SearchError("the search evaluated nothing")
        return max(self.history, key=lambda e: (e.score, -e.index))

    @property
    def front(self) -> tuple[Evaluation, ...]:
        """The Pareto front over every objective (the best ones when there is a single objective)."""
        return pareto_front(self.history)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "space": self.space, "searcher": self.searcher, "seed": self.seed, "budget": self.budget,
            "options": dict(self.options), "objectives": [dataclasses.asdict(o) for o in self.objectives],
            "evaluations": len(self.history), "stopped": self.stopped,
        }
        if self.history:
            out["best"] = self.best.to_dict()
            out["front"] = [e.to_dict() for e in self.front]
        out["history"] = [e.to_dict() for e in self.history]
        return out

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` atomically (non-finite values as JSON's ``Infinity``/``NaN`` extension)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


# ----------------------------------------------------------------------------- state file
def read_state(path: str | Path) -> tuple[dict[str, Any] | None, list[Evaluation]]:
    """``(header, evaluations)`` of a state file; a torn last line (killed mid-write) is dropped."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None, []
    lines = path.read_text().split("\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        raise SearchError(f"{path} is not a search state file (unreadable first line); use another --out") from None
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        raise SearchError(f"{path} is not a {STATE_FORMAT} state file; use another --out")
    records: list[Evaluation] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            records.append(Evaluation.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if n != len(lines):  # only an unterminated last line may be torn
                raise SearchError(f"{path}: line {n} is corrupt; the state cannot be resumed") from None
            log.warning("%s: dropping a torn last line (the run was killed while writing it)", path)
    if [r.index for r in records] != list(range(len(records))):
        raise SearchError(f"{path}: evaluation indices are not 0..{len(records) - 1}; the state is corrupt")
    return header, records


class _StateWriter:
    """Appends one JSON line per evaluation and flushes it to disk before returning."""

    def __init__(self, path: Path, header: dict[str, Any], records: Sequence[Evaluation]):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:  # rewrite without any torn line, atomically
            f.write(json.dumps(header) + "\n")
            for r in records:
                f.write(json.dumps(r.to_dict()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._file = path.open("a")

    def append(self, evaluation: Evaluation) -> None:
        self._file.write(json.dumps(evaluation.to_dict()) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# ----------------------------------------------------------------------------- one search's evaluations
class BudgetExhausted(Exception):
    """Raised by :meth:`SearchRun.evaluate` to stop a searcher (caught by :meth:`Searcher.run`)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SearchRun:
    """The evaluation budget, cache, history and state file of one search.

    :meth:`evaluate` is the only way a searcher scores an architecture: known architectures are
    answered from the history for free; a new one is answered from the state file while
    replaying, then by the objective, recorded, and persisted before the call returns.
    """

    def __init__(self, space: SearchSpace, objectives: MultiObjective, budget: int, *,
                 replay: Sequence[Evaluation] = (), writer: _StateWriter | None = None,
                 on_evaluation: Callable[[Evaluation, "SearchRun"], None] | None = None, stall_limit: int | None = None):
        self.space = space
        self.objectives = objectives
        self.budget = int(budget)
        self.history: list[Evaluation] = []
        self._by_arch: dict[Arch, Evaluation] = {}
        self._replay = list(replay)
        self._writer = writer
        self._on_evaluation = on_evaluation
        self._size = space.size()
        self._stall_limit = STALL_LIMIT if stall_limit is None else int(stall_limit)
        self._repeats = 0
        self._t0 = time.perf_counter()
        self._elapsed0 = self._replay[-1].elapsed if self._replay else 0.0

    @property
    def remaining(self) -> int:
        return self.budget - len(self.history)

    @property
    def replaying(self) -> bool:
        return bool(self._replay) and len(self.history) < len(self._replay)

    def seen(self, arch: Arch) -> bool:
        return arch in self._by_arch

    def get(self, arch: Arch) -> Evaluation | None:
        return self._by_arch.get(arch)

    def best(self) -> Evaluation:
        return max(self.history, key=lambda e: (e.score, -e.index))

    def evaluate(self, arch: Arch) -> Evaluation:
        """The evaluation of ``arch``; raises :class:`BudgetExhausted` when the search must stop."""
        known = self._by_arch.get(arch)
        if known is not None:
            self._repeats += 1
            if self._repeats > self._stall_limit:
                raise BudgetExhausted("stalled")
            return known
        if len(self.history) >= self.budget:
            raise BudgetExhausted("budget")
        self._repeats = 0
        if self.replaying:
            ev = self._replay[len(self.history)]
            if ev.encoding != arch.encoding:
                raise SearchError(
                    f"the state file does not replay: evaluation {ev.index} was {ev.encoding} but the searcher "
                    f"now proposes {arch.encoding} (different code, options or a non-deterministic metric); "
                    "use another --out")
        else:
            ev = self._measure(arch)
            if self._writer is not None:
                self._writer.append(ev)
        self.history.append(ev)
        self._by_arch[arch] = ev
        if self._on_evaluation is not None:
            self._on_evaluation(ev, self)
        if len(self._by_arch) >= self._size and len(self.history) < self.budget:
            raise BudgetExhausted("space exhausted")
        return ev

    def _measure(self, arch: Arch) -> Evaluation:
        t0 = time.perf_counter()
        values = self.objectives.measure(arch)
        seconds = time.perf_counter() - t0
        scores = tuple(m.orient(v.value) for m, v in zip(self.objectives.metrics, values))
        return Evaluation(len(self.history), arch.encoding, tuple(v.value for v in values), scores,
                          tuple(v.predicted for v in values), seconds,
                          self._elapsed0 + (time.perf_counter() - self._t0))

    def random_arch(self, rng: np.random.Generator) -> Arch:
        """A uniformly drawn genome, canonicalised (the space's sampling distribution)."""
        return self.space.arch(self.space.random_genome(rng))

    def random_unseen(self, rng: np.random.Generator, tries: int = 1000) -> Arch:
        """A random architecture not evaluated yet (the last draw after ``tries`` attempts)."""
        arch = self.random_arch(rng)
        for _ in range(tries):
            if arch not in self._by_arch:
                break
            arch = self.random_arch(rng)
        return arch


# ----------------------------------------------------------------------------- the base class
def searcher_options(cls: type[Searcher], options: Mapping[str, Any]) -> Any:
    """``cls.Options`` from ``options`` by the shared coercion (:func:`nasrobust.options.build_options`);
    a bad key or value is a one-line :class:`SearchError` naming the searcher."""
    try:
        return build_options(cls.Options, options, owner=cls.name, key_prefix="")  # CLI: --option KEY=VALUE
    except NasRobustError as exc:
        raise SearchError(str(exc)) from None


class Searcher(abc.ABC):
    """A discrete search over ``space`` maximising ``objective`` within ``budget`` evaluations.

    Subclasses set ``name``, an ``Options`` frozen dataclass (validated in ``__post_init__``) and
    implement :meth:`_search` using only ``run.evaluate`` and the space API with the given
    ``rng``. Multi-objective searchers set ``multi_objective = True``; the others optimise
    the first (only) objective's score.
    """

    name: ClassVar[str] = ""
    multi_objective: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions

    def __init__(self, space: SearchSpace | str, objective: Objective, *, budget: int = 100, seed: int = 0,
                 **options: Any):
        self.space = get_space(space) if isinstance(space, str) else space
        self.objectives = as_objectives(objective)
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise SearchError(f"budget must be a positive number of evaluations, got {budget!r}")
        self.budget, self.seed = int(budget), int(seed)
        if len(self.objectives) > 1 and not self.multi_objective:
            raise SearchError(
                f"searcher {self.name!r} optimises one objective but got {len(self.objectives)} "
                f"({', '.join(self.objectives.names)}); combine them into a weighted sum (0.5*a+0.5*b) "
                f"or use a multi-objective searcher ({', '.join(n for n in list_searchers() if SEARCHERS.get_class(n).multi_objective)})")
        self.options = searcher_options(type(self), options)

    # ------------------------------------------------------------------ identity
    def header(self) -> dict[str, Any]:
        """What makes two runs the same search (the budget excluded, so a search can be extended)."""
        header = {
            "format": STATE_FORMAT, "space": self.space.name, "searcher": self.name, "seed": self.seed,
            "options": dataclasses.asdict(self.options),
            "objectives": [{"name": m.name, "higher_is_better": m.higher_is_better} for m in self.objectives.metrics],
        }
        if isinstance(self.space, BudgetedSpace):
            header["space_budget"] = dataclasses.asdict(self.space.budget)
        return header

    # ------------------------------------------------------------------ running
    def run(self, state: str | Path | None = None,
            on_evaluation: Callable[[Evaluation, SearchRun], None] | None = None) -> SearchResult:
        """Search; with ``state`` (a file path) persist every evaluation and resume from it."""
        header = json.loads(json.dumps(self.header()))  # the form it has once read back
        replay: list[Evaluation] = []
        writer = None
        if state is not None:
            state = Path(state)
            old, replay = read_state(state)
            if old is not None and old != header and not replay:
                log.info("%s holds no evaluation of another search; starting over", state)
            elif old is not None and old != header:
                diff = sorted(k for k in set(old) | set(header) if old.get(k) != header.get(k))
                raise SearchError(f"{state} holds another search (different {', '.join(diff)}) with "
                                  f"{len(replay)} evaluation(s); use another --out, or pass --fresh to discard it "
                                  "and start over")
            if replay:
                log.info("resuming from %s: replaying %d evaluation(s)", state, len(replay))
            writer = _StateWriter(state, header, replay)
        run = SearchRun(self.space, self.objectives, self.budget, replay=replay, writer=writer, on_evaluation=on_evaluation)
        stopped = "budget"
        try:
            self._search(run, np.random.default_rng(self.seed))
            stopped = "searcher finished"
        except BudgetExhausted as stop:
            stopped = stop.reason
        finally:
            if writer is not None:
                writer.close()
        if stopped == "stalled":
            log.warning("%s stopped after %d evaluations: it kept proposing evaluated architectures",
                        self.name, len(run.history))
        return SearchResult(self.space.name, self.name, self.seed, self.budget, dataclasses.asdict(self.options),
                            tuple(ObjectiveInfo(m.name, m.higher_is_better) for m in self.objectives.metrics),
                            tuple(run.history), stopped)

    @abc.abstractmethod
    def _search(self, run: SearchRun, rng: np.random.Generator) -> None:
        """Propose architectures and score them with ``run.evaluate`` until it raises."""


def create_searcher(name: str, space: SearchSpace | str, objective: Objective, *, budget: int = 100, seed: int = 0,
                    **options: Any) -> Searcher:
    """A registered searcher by name (unknown names list the valid ones)."""
    return SEARCHERS.get(name)(space, objective, budget=budget, seed=seed, **options)


__all__ = [
    "BudgetExhausted", "Evaluation", "NoOptions", "ObjectiveInfo", "SEARCHERS", "STATE_FORMAT", "SearchError",
    "SearchResult", "SearchRun", "Searcher", "create_searcher", "dominates", "list_searchers", "pareto_front",
    "read_state", "register_searcher",
]
