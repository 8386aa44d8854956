"""The noise-suite abstraction the evaluator runs.

A suite is one family of perturbation (adversarial, natural, system, certified). It
declares the :class:`~nasrobust.records.Protocol` it runs, may prepare model-independent
perturbed data once per dataset (cached on disk and reused for every architecture), and
yields :class:`Measurement` values for one model. The evaluator turns measurements into
store records keyed by architecture encoding.

A suite also declares what it is, so that core code never names it: its options (a frozen
``Options`` dataclass parsed by :func:`nasrobust.options.build_options`), and every metric it
records (:class:`MetricInfo`: direction, headline column, rank group). Consumers -- the store
metric, the analysis table, ranking, the study, the headline table -- ask
:func:`metric_info` instead of keeping their own lists.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar

import torch
import torch.nn as nn

from nasrobust.data import ImageData
from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.inference import predict
from nasrobust.options import NoOptions, build_options
from nasrobust.records import Protocol
from nasrobust.registry import Registry

log = logging.getLogger(__name__)

#: Registered suites: ``SUITES.create(name, **options)``.
SUITES: Registry["NoiseSuite"] = Registry("suite", plugins="nasrobust.noise")

#: The noise name of measurements on unperturbed images (every suite's reference point).
CLEAN = "clean"


def saving_on(variable: str) -> bool:
    """Whether a work saving that never changes a number is on: ``NASROBUST_NO_<SAVING>=1`` turns it off.

    Only benchmarks turn savings off (benchmarks/eval_throughput.py measures each one); the switches
    are not suite options, so they are not part of any protocol and records made either way compare."""
    return os.environ.get(variable, "") in ("", "0")


@dataclass(frozen=True)
class MetricInfo:
    """What one metric a suite records means, declared by the suite.

    ``higher_is_better`` orients it for analysis, ranking and searches; ``headline`` is its
    column label in summary tables (``None``: not a headline; a headline names its ``noise``
    and is read at the largest stored level); ``noise`` limits the declaration to one noise
    (``None``: any noise of the suite); ``rank_group`` is the noise group whose ranking
    (:mod:`nasrobust.analysis.ranking`) it joins; with ``rank_fallback`` it joins only when
    none of the group's primary metrics is in the table (aggregates such as mCE stand in for
    the per-corruption accuracies); ``diagnostic`` marks a 0/1 check flag rather than a
    measurement (left out of analysis tables by default).
    """

    metric: str
    higher_is_better: bool
    headline: str | None = None
    noise: str | None = None
    rank_group: str | None = None
    description: str = ""
    rank_fallback: bool = False
    diagnostic: bool = False


@dataclass(frozen=True)
class Measurement:
    """One number a suite measured: ``metric`` under perturbation ``noise`` at strength ``level``."""

    noise: str
    level: float
    metric: str
    value: float


@dataclass
class EvalContext:
    """What a suite sees besides the model: the test images and shared services.

    ``images`` are the evaluator's fixed test subset (CPU, float in [0, 1], native size);
    ``cache_dir`` is where model-independent perturbed data lives (per dataset);
    ``reference`` answers ``(suite, noise, level, metric) -> value`` for the reference model
    of relative metrics (mCE), or ``None`` when there is none yet.
    """

    data: ImageData
    images: torch.Tensor
    labels: torch.Tensor
    cache_dir: Path
    device: torch.device
    batch_size: int = 256
    seed: int = 0
    reference: Callable[[str, str, float, str], float | None] | None = None
    reference_name: str | None = None
    done: set[tuple[str, float, str]] = field(default_factory=set)
    progress: bool = True  # progress bars of long preparations (off with --no-progress)
    #: one clean forward per model shared by every suite (inside :meth:`clean_scope`); NASROBUST_NO_SHARED_CLEAN=1: off
    share_clean: bool = field(default_factory=lambda: saving_on("NASROBUST_NO_SHARED_CLEAN"))
    #: suites run identical inputs through a model once (system: pairs decoding to the same pixels);
    #: NASROBUST_NO_INPUT_DEDUPE=1: off
    dedupe_inputs: bool = field(default_factory=lambda: saving_on("NASROBUST_NO_INPUT_DEDUPE"))
    _clean: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def family(self) -> str:
        """The dataset's family (``mnist``, ``cifar``, ``imagenet``), as the dataset declares it."""
        return self.data.info.family

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    @contextlib.contextmanager
    def clean_scope(self) -> Iterator[None]:
        """Inside the block, :meth:`clean_logits` computes a model's clean logits once and every suite reuses
        them (the evaluator opens one scope per model). Outside (or with ``share_clean`` off) each call computes."""
        self._clean = {} if self.share_clean else None
        try:
            yield
        finally:
            self._clean = None

    def clean_logits(self, model: nn.Module) -> torch.Tensor:
        """Logits (CPU, float) of ``model`` on the clean test images, batched by ``batch_size`` in eval mode.

        Every suite's clean pass is this one computation, so sharing it cannot change a number. A model
        modified in place (a parameter or buffer written) is recomputed even inside a scope."""
        if self._clean is None:
            return predict(model, self.images, self.batch_size)
        state = tuple(t._version for t in (*model.parameters(), *model.buffers()))
        held = self._clean
        if held.get("model") is not model or held.get("state") != state:
            held.update(model=model, state=state, logits=predict(model, self.images, self.batch_size))
        return held["logits"]

    def cache_path(self, suite: str, **identity: Any) -> Path:
        """A file path unique to (dataset, test subset, suite, identity) for cached tensors."""
        ident = {"dataset": self.data.info.name, "split": self.data.info.split, "n": self.n_examples, "suite": suite, **identity}
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.cache_dir / self.data.info.name / suite / f"{digest}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class NoiseSuite(abc.ABC):
    """One family of perturbation; subclasses register with ``@SUITES.register(name)``.

    A subclass sets ``name``, ``metrics`` (every metric its :meth:`run` yields), ``Options``
    (a frozen dataclass of :func:`~nasrobust.options.option` fields) and, optionally,
    ``cpu_options`` (what the study's ``cpu`` protocol runs). ``SUITE(**options)`` and
    :meth:`from_options` coerce and check the options; the result is ``self.options``.
    """

    name: ClassVar[str] = ""
    #: Every metric :meth:`run` records; the most specific declaration (same noise) wins.
    metrics: ClassVar[tuple[MetricInfo, ...]] = ()
    #: The suite's options: a frozen dataclass parsed by :func:`nasrobust.options.build_options`.
    Options: ClassVar[type] = NoOptions
    #: Options of the study's ``cpu`` protocol: a reduced run that finishes on a laptop.
    cpu_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: Whether :meth:`run` may read the reference model's stored results (``ctx.reference``, e.g. mCE): worker
    #: processes then wait for the reference's unit of this suite before going on. A suite that never reads
    #: them declares ``False``, so workers do not sit idle while another computes the reference's unit.
    reads_reference: ClassVar[bool] = True

    def __init__(self, **options: Any):
        self.options = build_options(self.Options, options, owner=self.name or type(self).__name__)

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> "NoiseSuite":
        """The suite with ``values`` (from the CLI or Python) coerced to :attr:`Options`."""
        return cls(**values)

    @classmethod
    def metric_info(cls, noise: str, metric: str) -> MetricInfo:
        """The declaration of ``metric`` under ``noise``; an undeclared one is a :class:`NasRobustError`."""
        general = None
        for info in cls.metrics:
            if info.metric == metric:
                if info.noise == noise:
                    return info
                if info.noise is None and general is None:
                    general = info
        if general is not None:
            return general
        noises = sorted(i.noise for i in cls.metrics if i.metric == metric and i.noise is not None)
        if noises:
            raise NasRobustError(f"the {cls.name} suite records {metric!r} only under noise {', '.join(noises)}, "
                                 f"not {noise!r}")
        raise UnknownNameError(f"{cls.name} metric", metric, {i.metric for i in cls.metrics})

    @classmethod
    def headlines(cls) -> tuple[MetricInfo, ...]:
        """The headline metrics, in declaration order (summary-table columns)."""
        return tuple(info for info in cls.metrics if info.headline is not None)

    @classmethod
    def selector_options(cls, noise: str, level: float | None) -> dict[str, Any]:
        """Options that make this suite measure just ``noise`` at ``level`` (a live metric); default: none."""
        return {}

    @abc.abstractmethod
    def protocol(self, ctx: EvalContext) -> Protocol:
        """The settings this suite runs with on ``ctx`` (stored beside every value)."""

    def prepare(self, ctx: EvalContext) -> None:
        """Generate and cache model-independent perturbed data (default: nothing)."""

    def not_applicable(self, model: nn.Module) -> str | None:
        """Why this suite cannot score ``model``, or ``None`` when it can."""
        return None

    @abc.abstractmethod
    def run(self, model: nn.Module, ctx: EvalContext) -> Iterator[Measurement]:
        """Score ``model`` (an ImageClassifier taking [0, 1] images), yielding as results finish."""


def metric_info(suite: str, noise: str, metric: str) -> MetricInfo:
    """What the registered ``suite`` declares about ``metric`` under ``noise`` (unknown names are errors)."""
    return SUITES.get(suite).metric_info(noise, metric)


def cached_tensor(path: Path, make: Callable[[], Any]) -> Any:
    """Load ``path`` if present, else ``make()`` it and save atomically (safe for several ranks)."""
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: rebuild it
            log.warning("rebuilding unreadable cache %s (%s)", path, exc)
    value = make()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value
