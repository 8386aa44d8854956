"""Score architectures against noise suites and keep every number in the result store.

The :class:`Evaluator` fixes one dataset and one test subset, prepares each suite's
model-independent data once (cached on disk, shared by every architecture), and then scores
models: a stand-alone checkpoint, a zoo model, or subnets of a supernet (BN re-calibrated
first). Work is done in units of (architecture, weights, dataset, suite, protocol); each
measurement is written as soon as it exists, a unit is marked complete at its end, and a
rerun skips complete units -- a killed run loses nothing finished. Under ``torchrun`` the
architectures are sharded across ranks, each writing its own store file that rank 0 merges at
the end (:mod:`nasrobust.rankstore`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nasrobust import distributed
from nasrobust.data import ImageData, stack
from nasrobust.determinism import deterministic_kernels
from nasrobust.errors import NasRobustError
from nasrobust.noise.base import SUITES, EvalContext, NoiseSuite
from nasrobust.rankstore import share_records
from nasrobust.records import Protocol, Record, ResultKey, WorkUnit
from nasrobust.space import Arch
from nasrobust.store import ProtocolConflictError, ResultStore
from nasrobust.rankstore import RankStore
from nasrobust.supernet import SupernetClassifier, recalibrated_subnet

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/nasrobust").expanduser()


def make_suites(names: Iterable[str], options: dict[str, dict[str, Any]] | None = None) -> list[NoiseSuite]:
    """Suites by name (``adversarial``, ``natural``, ``system``, ``certified``) with their options."""
    options = options or {}
    return [SUITES.get_class(name).from_options(options.get(name, {})) for name in names]


def eval_context(data: ImageData, n_examples: int | None, *, cache_dir: str | Path | None, device: torch.device,
                 batch_size: int, seed: int, **extra: Any) -> EvalContext:
    """What a suite sees: the first ``n_examples`` test images (all when ``None``) and the shared services.

    Deterministic kernels are chosen for ``device`` first, so every scoring path (evaluator, live metric)
    gives bit-identical numbers on a rerun."""
    deterministic_kernels(device)
    images, labels = stack(data.test_subset(n_examples))
    return EvalContext(data=data, images=images, labels=labels,
                       cache_dir=Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE,
                       device=device, batch_size=batch_size, seed=seed, **extra)


@dataclass(frozen=True)
class Reference:
    """The model whose results relative metrics (CE, mCE) are measured against."""

    encoding: str
    weights_id: str


@dataclass
class ArchReport:
    """What one architecture's evaluation wrote (for progress and the summary table)."""

    encoding: str
    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # suite -> why it is not applicable
    shared: set[str] = field(default_factory=set)  # suites another process sharing the store claimed or finished
    seconds: float = 0.0


class Evaluator:
    """Runs ``suites`` on models over a fixed test subset of ``data``, writing into ``store``."""

    def __init__(
        self,
        store: ResultStore | RankStore,
        data: ImageData,
        suites: Sequence[NoiseSuite],
        *,
        n_examples: int | None = None,
        cache_dir: str | Path | None = None,
        device: torch.device | None = None,
        batch_size: int = 256,
        seed: int = 0,
        recalib_images: int = 2000,
        reference: Reference | None = None,
        progress: bool = True,
        overwrite_protocol: bool = False,
    ):
        if not suites:
            raise NasRobustError("no suites to run; pass --suites adversarial,natural,system,certified")
        self.store = store
        self.data = data
        self.suites = list(suites)
        self.device = device or distributed.local_device()
        self.recalib_images = recalib_images
        self.reference = reference
        self.progress = progress and distributed.is_main()
        self.ctx = eval_context(data, n_examples, cache_dir=cache_dir, device=self.device, batch_size=batch_size,
                                seed=seed, reference=self._reference_value,
                                reference_name=reference.encoding if reference else None, progress=self.progress)
        self._prepared: set[str] = set()
        # True: records stored for a unit under another protocol are re-scored and replaced (else: a conflict)
        self.overwrite_protocol = overwrite_protocol
        if overwrite_protocol and not isinstance(store, ResultStore):
            raise NasRobustError("--overwrite-protocol runs in one process; run it without torchrun")
        self.claims: Any = None  # a nasrobust.claims.Claims when several workers share the store

    # ------------------------------------------------------------------ relative metrics
    def _reference_value(self, suite: str, noise: str, level: float, metric: str) -> float | None:
        if self.reference is None:
            return None
        rows = self.store.query(self.reference.encoding, suite=suite, noise=noise, metric=metric,
                                weights_id=self.reference.weights_id, dataset=self.data.info.name)
        values = [r.value for r in rows if math.isclose(r.key.level, level, rel_tol=0, abs_tol=1e-12)]
        return values[0] if values else None

    # ------------------------------------------------------------------ one model
    def protocols(self) -> dict[str, Protocol]:
        return {s.name: s.protocol(self.ctx) for s in self.suites}

    def pending(self, arch: Arch, weights_id: str) -> list[NoiseSuite]:
        """The suites whose unit for (arch, weights) is not complete yet (a protocol conflict raises here)."""
        out = []
        for suite in self.suites:
            protocol = suite.protocol(self.ctx)
            unit = WorkUnit.of(arch, weights_id=weights_id, dataset=self.data.info.name, suite=suite.name, protocol=protocol)
            if not self.store.is_complete(unit):
                self._check_protocol(unit, suite.name, protocol)
                out.append(suite)
        return out

    def check_protocols(self, archs: Iterable[Arch], weights_id: str) -> None:
        """Raise :class:`ProtocolConflictError` when the store holds results of one of ``archs`` (these
        weights, this dataset) under another protocol than a suite's now: found before any compute."""
        for arch in archs:
            self.pending(arch, weights_id)

    def _check_protocol(self, unit: WorkUnit, suite: str, protocol: Protocol) -> None:
        if self.overwrite_protocol:
            return
        for stored in self.store.unit_protocols(unit):
            if stored.hash != protocol.hash:
                diff = ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in stored.diff(protocol).items())
                raise ProtocolConflictError(
                    f"suite {suite}: {getattr(self.store, 'db', self.store.path)} already holds {unit.dataset} results of {unit.encoding} "
                    f"(weights {unit.weights_id[:12]}) under another protocol (stored vs new: {diff or 'same settings'}); "
                    "nothing was computed. Rerun with --overwrite-protocol (Python: overwrite_protocol=True) to replace "
                    "them and re-score, or evaluate into another store (--db OTHER.db) to keep both")

    def evaluate(self, model: nn.Module, arch: Arch, weights_id: str, suites: Sequence[NoiseSuite] | None = None) -> ArchReport:
        """Score one model (an ImageClassifier taking [0, 1] images) on the pending suites.

        The model's clean pass is computed once and shared by its suites (:meth:`EvalContext.clean_scope`)."""
        with self.ctx.clean_scope():
            return self._evaluate(model, arch, weights_id, suites)

    def _evaluate(self, model: nn.Module, arch: Arch, weights_id: str, suites: Sequence[NoiseSuite] | None) -> ArchReport:
        report = ArchReport(arch.encoding)
        t0 = time.time()
        model = model.to(self.device).eval()
        for suite in suites if suites is not None else self.pending(arch, weights_id):
            protocol = suite.protocol(self.ctx)
            unit = WorkUnit.of(arch, weights_id=weights_id, dataset=self.data.info.name, suite=suite.name, protocol=protocol)
            claim_key = "|".join(dataclasses.astuple(unit))  # the unit's identity names its lease
            wait = suite.reads_reference and self._is_reference(arch, weights_id)
            if self.claims is not None and not self._claim(claim_key, unit, wait=wait):
                report.shared.add(suite.name)
                continue
            reason = suite.not_applicable(model)
            if reason:  # not marked complete: nothing was measured, and the check is cheap to redo
                log.warning("%s suite skipped for %s: %s", suite.name, arch.encoding, reason)
                report.skipped[suite.name] = reason
                if self.claims is not None:
                    self.claims.release(claim_key)
                continue
            if suite.name not in self._prepared:
                suite.prepare(self.ctx)
                self._prepared.add(suite.name)
            self.ctx.done = {
                (k.noise, k.level, k.metric)
                for k in self.store.done_keys(arch, weights_id=weights_id, dataset=self.data.info.name, suite=suite.name,
                                              protocol=protocol)
            }
            written = 0
            for m in suite.run(model, self.ctx):
                key = ResultKey.of(arch, weights_id=weights_id, dataset=self.data.info.name, suite=suite.name,
                                   noise=m.noise, level=float(m.level), metric=m.metric)
                self.store.write(Record(key, float(m.value), protocol), overwrite=self.overwrite_protocol)
                written += 1
            self.store.complete_unit(unit)
            if self.overwrite_protocol:  # the old protocol's records this protocol did not re-score
                assert isinstance(self.store, ResultStore)
                self.store.drop_other_protocols(unit)
            if self.claims is not None:
                self.claims.release(claim_key)
                log.info("unit computed: %s", claim_key)
            report.written[suite.name] = written
        report.seconds = time.time() - t0
        return report

    def _is_reference(self, arch: Arch, weights_id: str) -> bool:
        return self.reference is not None and (arch.encoding, weights_id) == (self.reference.encoding, self.reference.weights_id)

    def _claim(self, key: str, unit: WorkUnit, *, wait: bool) -> bool:
        """Claim a unit not complete yet; the reference model's units of suites that read it are waited for (other
        workers' relative metrics need them), every other unit held by another worker is left to it."""
        while not self.claims.claim(key):
            if not wait or self.store.is_complete(unit):
                return False
            time.sleep(1.0)
        if self.store.is_complete(unit):
            self.claims.release(key)
            return False
        self.claims.hold(key)  # renewed while we compute it; released when done
        return True

    # ------------------------------------------------------------------ supernet subnets
    def evaluate_supernet(self, model: SupernetClassifier, archs: Sequence[Arch], weights_id: str, *, shard: bool = True) -> list[ArchReport]:
        """BN-recalibrate and score each subnet (this rank's share under torchrun).

        A reference model (for mCE) that is a subnet of this supernet is evaluated first, and
        added to ``archs`` when it is not among them, so relative metrics exist for every arch.
        """
        from tqdm.auto import tqdm

        archs = list(archs)
        self.check_protocols(archs, weights_id)  # every conflict before the first subnet is scored
        if self.reference is not None and self.reference.weights_id == weights_id:
            ref = [a for a in archs if a.encoding == self.reference.encoding] or [model.supernet.space.decode(self.reference.encoding)]
            archs = ref + [a for a in archs if a.encoding != self.reference.encoding]
            if ref and shard and distributed.world_size() > 1:
                # every rank needs the reference results: rank 0 scores it and sends them to the others
                if distributed.is_main():
                    self._evaluate_subnet(model, ref[0], weights_id)
                share_records(self.store, ref[0], weights_id)
                archs = archs[1:]
        mine = distributed.shard(archs) if shard else archs
        reports = []
        bar = tqdm(mine, desc="architectures", disable=not self.progress, dynamic_ncols=True)
        for arch in bar:
            bar.set_postfix_str(arch.encoding[:60])
            reports.append(self._evaluate_subnet(model, arch, weights_id))
        return reports

    def _evaluate_subnet(self, model: SupernetClassifier, arch: Arch, weights_id: str) -> ArchReport:
        pending = self.pending(arch, weights_id)
        if not pending:
            return ArchReport(arch.encoding)
        subnet = recalibrated_subnet(model, arch, self.data, self.recalib_images, seed=self.ctx.seed)
        return self.evaluate(subnet, arch, weights_id, pending)
