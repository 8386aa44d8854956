"""Result stores under ``torchrun``: each rank writes its own file, rank 0 merges them into ``--db``.

SQLite must not be shared between hosts over a network file system: WAL keeps its index in
shared memory that only processes on one host see, and NFS locking is unreliable (SQLite's
"How To Corrupt" page). So across nodes no two processes ever open the same file for writing:

* at start, rank 0 alone opens the main store (``--db``), merges the per-rank files a killed
  run may have left, and checkpoints it (no WAL content left);
* every rank then reads the main store as an **immutable snapshot** (no locks, no shared
  memory) and writes its measurements into its **own file** beside it,
  ``<stem>.rank<R><suffix>`` (``results.rank3.db``), opened in exclusive locking mode (WAL
  index in heap memory);
* at the end, after a barrier, rank 0 merges every rank file into the main store with
  :meth:`~nasrobust.store.ResultStore.merge_from` (atomic per file; a protocol conflict aborts
  that file's merge and keeps it for ``nasrobust merge``) and deletes the merged files.

A killed run loses nothing it finished: each rank file is durable per record, and the next run
(or ``nasrobust merge OUT.db results.rank*.db``) merges it. Records of the mCE reference, scored
by rank 0 first, reach the other ranks by broadcast (:func:`share_records`).

Why not one writer fed over ``torch.distributed``: every measurement would have to cross the
network to rank 0 before it is durable, the evaluator's resume checks would become remote calls,
and a crash of rank 0 would lose what the others sent; per-rank files keep each rank
independent and durable, and merging is the same protocol-checked operation users already have.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nasrobust import distributed
from nasrobust.space import Arch
from nasrobust.records import Protocol, Record, ResultKey, WorkUnit
from nasrobust.store import ProtocolConflictError, ResultStore, StoreError, open_results

log = logging.getLogger(__name__)


def rank_path(db: str | os.PathLike, rank: int) -> Path:
    """Rank ``rank``'s own store beside ``db``: ``results.db`` -> ``results.rank3.db``."""
    db = Path(db)
    return db.with_name(f"{db.stem}.rank{rank}{db.suffix}")


def rank_files(db: str | os.PathLike) -> list[Path]:
    """Per-rank stores left beside ``db`` (by a run that is over, or was killed)."""
    db = Path(db)
    return sorted(p for p in db.parent.glob(f"{db.stem}.rank*{db.suffix}") if p.stem.rpartition(".rank")[2].isdigit())


def merge_rank_files(main: ResultStore, db: str | os.PathLike) -> int:
    """Merge every per-rank file of ``db`` into ``main`` and delete it; returns the records added."""
    added = 0
    for path in rank_files(db):
        try:
            added += main.merge_from(path).inserted
        except ProtocolConflictError as exc:
            raise StoreError(f"{exc}. {path} is kept: inspect it, or merge it by hand with "
                             f"`nasrobust merge {db} {path}`") from None
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        log.info("merged %s into %s", path, db)
    return added


class RankStore:
    """What one rank reads and writes: its own store file, read together with a snapshot of the main store.

    Offers the part of :class:`~nasrobust.store.ResultStore`'s API the evaluator uses. Writes
    go to the rank's file, after checking the main store holds none of the keys under another
    protocol (a conflict is found before more work is spent, not at the merge).
    """

    def __init__(self, db: str | os.PathLike, rank: int):
        db = Path(db)
        self.db = db
        self.main = ResultStore(db, immutable=True) if db.exists() else None
        self.own = ResultStore(rank_path(db, rank), create=True, exclusive=True)
        self.path = self.own.path

    def _stores(self) -> list[ResultStore]:
        return [self.own] + ([self.main] if self.main is not None else [])

    # ------------------------------------------------------------------ reading
    def is_complete(self, unit: WorkUnit) -> bool:
        return any(s.is_complete(unit) for s in self._stores())

    def has(self, key: ResultKey, protocol=None) -> bool:
        return any(s.has(key, protocol) for s in self._stores())

    def done_keys(self, arch_or_encoding: Arch | str | None = None, **filters: Any) -> set[ResultKey]:
        return set().union(*(s.done_keys(arch_or_encoding, **filters) for s in self._stores()))

    def unit_protocols(self, unit: WorkUnit) -> list[Protocol]:
        return [p for s in self._stores() for p in s.unit_protocols(unit)]

    def query(self, arch_or_encoding: Arch | str | None = None, **filters: Any) -> list[Record]:
        """Records of both stores (this rank's own first where a key is in both), in key order."""
        found: dict[ResultKey, Record] = {}
        for store in self._stores():
            for rec in store.query(arch_or_encoding, **filters):
                found.setdefault(rec.key, rec)
        return [found[k] for k in sorted(found, key=ResultKey.as_tuple)]

    # ------------------------------------------------------------------ writing
    def write(self, record: Record, *, overwrite: bool = False) -> bool:
        return self.write_many([record], overwrite=overwrite) == 1

    def write_many(self, records: Iterable[Record], *, overwrite: bool = False) -> int:
        records = list(records)
        if self.main is not None and not overwrite:
            for rec in records:  # two index lookups per record
                if self.main.has(rec.key) and not self.main.has(rec.key, rec.protocol):
                    k = rec.key
                    [stored] = [r for r in self.main.query(k.encoding, space=k.space, weights_id=k.weights_id,
                                                           dataset=k.dataset, suite=k.suite, noise=k.noise,
                                                           metric=k.metric) if r.key == k]
                    diff = ", ".join(f"{name} {a!r} vs {b!r}" for name, (a, b) in stored.protocol.diff(rec.protocol).items())
                    raise ProtocolConflictError(
                        f"{k.encoding} {k.suite}/{k.noise}@{k.level:g} {k.metric} is already in {self.db} under a "
                        f"different protocol (stored vs new: {diff}); one key holds one protocol: give the variant "
                        "its own suite name, or evaluate into another --db")
        return self.own.write_many(records, overwrite=overwrite)

    def complete_unit(self, unit: WorkUnit, *, expected: int | None = None) -> int:
        """Mark ``unit`` complete in this rank's file, copying in the unit's records that an earlier
        run left in the main store (so the merged unit has all of them)."""
        if self.main is not None:
            earlier = [r for r in self.main.query(unit.encoding, space=unit.space, weights_id=unit.weights_id,
                                                  dataset=unit.dataset, suite=unit.suite)
                       if r.protocol.hash == unit.protocol_hash]
            self.own.write_many(earlier)
        return self.own.complete_unit(unit, expected=expected)

    def close(self) -> None:
        for store in self._stores():
            store.close()

    def __repr__(self) -> str:
        return f"RankStore({str(self.db)!r}, own={str(self.path)!r})"


def open_for_ranks(db: str | os.PathLike) -> ResultStore | RankStore:
    """The store this process writes evaluation results to: ``db`` itself (created if missing) in a
    single process, a :class:`RankStore` under torchrun. Per-rank files a killed run left are merged
    into ``db`` first. Collective under torchrun: every rank calls it. Pair it with :func:`finish_ranks`."""
    if distributed.world_size() == 1:
        store = open_results(db, create=True)
        merge_rank_files(store, db)  # what a killed torchrun job left
        return store
    if distributed.is_main():
        with open_results(db, create=True, exclusive=True) as main:
            merge_rank_files(main, db)
            main.checkpoint()
    distributed.barrier()
    return RankStore(db, distributed.rank())


def finish_ranks(store: ResultStore | RankStore) -> ResultStore | None:
    """Close a :func:`open_for_ranks` store; under torchrun merge every rank's file into the main store.

    Collective under torchrun. Returns the main store (open) on rank 0 and in a single process,
    ``None`` on the other ranks.
    """
    if not isinstance(store, RankStore):
        return store
    db = store.db
    store.close()
    distributed.barrier()
    merged = None
    if distributed.is_main():
        merged = open_results(db, create=True)
        added = merge_rank_files(merged, db)
        log.info("merged the per-rank stores into %s (%d new records)", db, added)
    distributed.barrier()
    return merged


@contextmanager
def results_for_ranks(db: str | os.PathLike) -> Iterator[ResultStore | RankStore]:
    """``with results_for_ranks(db) as store:`` -- :func:`open_for_ranks`, and :func:`finish_ranks`
    when the block ends normally (after an error the rank files stay for the next run to merge)."""
    store = open_for_ranks(db)
    try:
        yield store
    except BaseException:
        store.close()
        raise
    merged = finish_ranks(store)
    if merged is not None:
        merged.close()


def share_records(store: ResultStore | RankStore, arch: Arch, weights_id: str) -> None:
    """Collective: rank 0's records of ``(arch, weights_id)`` are written into every rank's store
    (the mCE reference that rank 0 scores before the others need it). No-op in a single process."""
    if distributed.world_size() == 1:
        return
    records = distributed.broadcast_object(store.query(arch, weights_id=weights_id) if distributed.is_main() else None)
    if not distributed.is_main():
        store.write_many(records)
