"""The noise-suite abstraction the evaluator runs.

A suite is one family of perturbation (adversarial, natural, system, certified). It
declares the :class:`~nasrobust.records.Protocol` it runs, may prepare model-independent
perturbed data once per dataset (cached on disk and reused for every architecture), and
yields :class:`Measurement` values for one model. The evaluator turns measurements into
store records keyed by architecture encoding.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
import torch.nn as nn

from nasrobust.data import ImageData
from nasrobust.records import Protocol
from nasrobust.registry import Registry

log = logging.getLogger(__name__)

#: Registered suites: ``SUITES.create(name, **options)``.
SUITES: Registry["NoiseSuite"] = Registry("suite", plugins="nasrobust.noise")

#: Dataset families pick default eps, corruption parameters, ...
FAMILY_OF_DATASET = {"mnist5k": "mnist", "digits": "mnist", "cifar10": "cifar", "cifar100": "cifar", "imagefolder": "imagenet"}


def dataset_family(name: str) -> str:
    return FAMILY_OF_DATASET.get(name, "imagenet")


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

    @property
    def family(self) -> str:
        return dataset_family(self.data.info.name)

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    def cache_path(self, suite: str, **identity: Any) -> Path:
        """A file path unique to (dataset, test subset, suite, identity) for cached tensors."""
        ident = {"dataset": self.data.info.name, "split": self.data.info.split, "n": self.n_examples, "suite": suite, **identity}
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.cache_dir / self.data.info.name / suite / f"{digest}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class NoiseSuite(abc.ABC):
    """One family of perturbation; subclasses register with ``@SUITES.register(name)``."""

    name: ClassVar[str] = ""
    #: ``(noise, metric, column)`` triples shown in summary tables; the largest stored level is used.
    headline: ClassVar[tuple[tuple[str, str, str], ...]] = ()

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
