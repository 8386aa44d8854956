"""The one evaluation entry point: :func:`evaluate` a checkpoint or a model on noise suites into a store.

Like RobustBench's ``benchmark(model, ...)``, one typed call covers every way a model reaches the
suites: a checkpoint path (a stand-alone network or a supernet; its dataset and weights id are read
from it), a trained :class:`~nasrobust.supernet.SupernetClassifier` (subnets are BN re-calibrated
and scored), or any :class:`~nasrobust.models.ImageClassifier` of one architecture. The command
line (``nasrobust evaluate``), the study and the live metric all call it, so checkpoint -> data ->
:class:`~nasrobust.evaluator.Evaluator` is set up in one place. Every number goes to the store;
a rerun skips finished (architecture, suite) units.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nasrobust import checkpoint, distributed
from nasrobust.data import ImageData, load_dataset
from nasrobust.errors import NasRobustError
from nasrobust.evaluator import ArchReport, Evaluator, Reference, make_suites
from nasrobust.noise.base import SUITES
from nasrobust.space import Arch, SearchSpace, get_space
from nasrobust.rankstore import RankStore, results_for_ranks
from nasrobust.store import ResultStore
from nasrobust.supernet import SupernetClassifier

#: ``reference=LARGEST``: the mCE reference is the supernet's largest subnet (none for a stand-alone model).
LARGEST = "largest"


@dataclass(frozen=True)
class EvalProtocol:
    """How hard the suites score: test examples, each suite's options, the seed, BN re-calibration images.

    ``suite_options`` maps a suite name to its options (``{"adversarial": {"steps": 10}}``); a suite
    without an entry runs its own defaults. ``n_examples=None`` is the whole test set.
    """

    n_examples: int | None = None
    suite_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    seed: int = 0
    recalib_images: int = 2000


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate` scored: the store, dataset and weights, the architectures and this rank's reports."""

    db: Path
    dataset: str
    weights_id: str
    archs: tuple[Arch, ...]
    reports: tuple[ArchReport, ...]

    @property
    def encodings(self) -> list[str]:
        return [a.encoding for a in self.archs]


def evaluate(
    model: str | os.PathLike[str] | nn.Module,
    *,
    db: str | os.PathLike[str] | ResultStore = "results.db",
    suites: Sequence[str] | None = None,
    protocol: EvalProtocol | None = None,
    archs: Sequence[Arch | str] = (),
    n_archs: int | None = None,
    sample_seed: int = 0,
    data: ImageData | str | None = None,
    data_root: str | None = None,
    weights_id: str | None = None,
    reference: Reference | str | None = LARGEST,
    kind: str | None = None,
    space: str | None = None,
    batch_size: int = 256,
    cache_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    shard: bool = True,
    overwrite_protocol: bool = False,
    claims: Any = None,
    on_ready: Callable[[], None] | None = None,
) -> EvaluationResult:
    """Score ``model`` on ``suites`` (default: every registered suite) under ``protocol`` into the store ``db``.

    ``model`` is a checkpoint path (``kind``/``space``, when given, are checked against it; the
    dataset defaults to its own), a :class:`~nasrobust.supernet.SupernetClassifier` (needs
    ``data`` and ``weights_id``), or a stand-alone ``nn.Module`` taking ``[0, 1]`` images (needs
    ``data``, ``weights_id`` and exactly one architecture in ``archs``). Subnets of a supernet are
    ``archs`` (encodings, named points or :class:`Arch`) plus ``n_archs`` sampled with
    ``sample_seed``; under ``torchrun`` they are sharded across ranks (``shard``).

    ``reference`` is the model relative metrics (mCE) are measured against: ``"largest"`` (the
    supernet's largest subnet; none for a stand-alone model), an architecture of the supernet,
    ``"ENCODING@WEIGHTS_ID"`` / a :class:`~nasrobust.evaluator.Reference` of a stored model, or
    ``None``.

    A model's results already stored under another protocol raise
    :class:`~nasrobust.store.ProtocolConflictError` before anything is computed, unless
    ``overwrite_protocol`` (re-score under this protocol and replace them).
    """
    protocol = protocol or EvalProtocol()
    names = list(suites) if suites is not None else SUITES.names()
    suite_objs = make_suites(names, {s: dict(o) for s, o in protocol.suite_options.items()})
    dev = torch.device(device) if device is not None else distributed.local_device()
    source = _source(model, data, data_root, weights_id, kind, space, dev)
    net, dataset, wid = source.model, source.data, source.weights_id
    if isinstance(net, SupernetClassifier):
        chosen = _subnets(net.supernet.space, archs, n_archs, sample_seed)
        ref = _reference(reference, wid, net)
    else:
        chosen = _one_arch(archs, n_archs, source.arch)
        ref = _reference(reference, wid, None)
    with _opened(db) as store:
        evaluator = Evaluator(store, dataset, suite_objs, n_examples=protocol.n_examples,
                              cache_dir=None if cache_dir is None else Path(cache_dir),
                              device=dev, batch_size=batch_size, seed=protocol.seed,
                              recalib_images=protocol.recalib_images, reference=ref, progress=progress,
                              overwrite_protocol=overwrite_protocol)
        evaluator.claims = claims  # nasrobust.claims.Claims: share units with other processes on this store
        evaluator.check_protocols(chosen, wid)
        if on_ready is not None:
            on_ready()
        if isinstance(net, SupernetClassifier):
            reports = evaluator.evaluate_supernet(net, chosen, wid, shard=shard)
        else:
            reports = [evaluator.evaluate(net, chosen[0], wid)]
        path = Path(db.path) if isinstance(db, ResultStore) else Path(db)
    return EvaluationResult(path, dataset.info.name, wid, tuple(chosen), tuple(reports))


# ----------------------------------------------------------------------------- pieces
@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint ready to score: the model (eval mode), its data, its weights id and, stand-alone, its arch."""

    model: nn.Module  # a SupernetClassifier, or the stand-alone ImageClassifier
    data: ImageData
    weights_id: str
    arch: Arch | None  # the stand-alone network's architecture (None for a supernet)


def load_checkpoint(path: str | os.PathLike[str], *, data: ImageData | str | None = None, data_root: str | None = None,
                    kind: str | None = None, space: str | None = None,
                    device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """Read a checkpoint (``kind`` and ``space`` checked when given) with its dataset (default: its own)."""
    path = Path(path)
    payload = checkpoint.read(path)
    meta = checkpoint.meta_of(payload)
    checkpoint.expect(meta, kind=kind, space=space, path=path)
    dataset = _dataset(data if data is not None else meta.dataset["name"], data_root or meta.data_root)
    if meta.dataset["name"] != dataset.info.name:
        raise NasRobustError(
            f"{path} was trained on {meta.dataset['name']}; evaluating on {dataset.info.name} would need the same "
            f"classes. Pass --dataset {meta.dataset['name']}"
        )
    wid = payload["weights_id"]
    if meta.kind == "supernet":
        return LoadedCheckpoint(checkpoint.supernet_from_payload(payload, path, device), dataset, wid, None)
    return LoadedCheckpoint(checkpoint.model_from_payload(payload, path, device), dataset, wid,
                            get_space(meta.space).decode(str(meta.arch)))


def _source(model: str | os.PathLike[str] | nn.Module, data: ImageData | str | None, data_root: str | None,
            weights_id: str | None, kind: str | None, space: str | None, device: torch.device) -> LoadedCheckpoint:
    if not isinstance(model, nn.Module):
        if weights_id is not None:
            raise NasRobustError("weights_id is read from the checkpoint; pass it only with a model object")
        return load_checkpoint(model, data=data, data_root=data_root, kind=kind, space=space, device=device)
    if data is None or not weights_id:
        raise NasRobustError("evaluating a model object needs data= (a dataset) and weights_id= (what keys its rows)")
    return LoadedCheckpoint(model, _dataset(data, data_root), weights_id, None)


def _dataset(data: ImageData | str, root: str | None) -> ImageData:
    return data if isinstance(data, ImageData) else load_dataset(data, root=root)


def _subnets(space: SearchSpace, archs: Sequence[Arch | str], n: int | None, seed: int) -> list[Arch]:
    """The given architectures (encodings or named points) and ``n`` sampled ones, each once, in order."""
    chosen = [space.resolve(a) if isinstance(a, str) else a for a in archs]
    if n:
        chosen.extend(space.sample(n, seed=seed))
    if not chosen:
        raise NasRobustError("nothing to evaluate: pass architectures or a number to sample "
                             "(--archs FILE, --arch ENCODING or --n N)")
    return list(dict.fromkeys(chosen))


def _one_arch(archs: Sequence[Arch | str], n: int | None, stored: Arch | None) -> list[Arch]:
    """A stand-alone model's one architecture: the checkpoint's, or the one given with a model object."""
    if stored is not None:
        if archs or n:
            raise NasRobustError(f"a stand-alone checkpoint holds one architecture ({stored.encoding}); "
                                 "drop --arch/--archs/--n (they choose subnets of a --supernet)")
        return [stored]
    if len(archs) != 1 or not isinstance(archs[0], Arch) or n:
        raise NasRobustError("a stand-alone model is one architecture: pass archs=[its Arch]")
    return [archs[0]]


def _reference(reference: Reference | str | None, weights_id: str, supernet: SupernetClassifier | None) -> Reference | None:
    if reference is None or isinstance(reference, Reference):
        return reference
    if "@" in reference:
        encoding, _, wid = reference.partition("@")
        return Reference(encoding, wid)
    if supernet is None:
        if reference == LARGEST:
            return None
        raise NasRobustError(f"reference {reference!r}: a stand-alone model's reference is ENCODING@WEIGHTS_ID "
                             "of an already evaluated model")
    sn = supernet.supernet
    arch = sn.largest() if reference == LARGEST else sn.space.resolve(reference)
    return Reference(arch.encoding, weights_id)


@contextlib.contextmanager
def _opened(db: str | os.PathLike[str] | ResultStore) -> Iterator[ResultStore | RankStore]:
    """The store itself, or one opened (and closed again) at a path: under torchrun each rank writes
    its own file beside it, merged into it at the end (:mod:`nasrobust.rankstore`)."""
    if isinstance(db, ResultStore):
        yield db
        return
    with results_for_ranks(db) as store:
        yield store


__all__ = ["LARGEST", "EvalProtocol", "EvaluationResult", "LoadedCheckpoint", "evaluate", "load_checkpoint"]
