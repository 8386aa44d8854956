"""The result store: every finished measurement, keyed by architecture encoding, in SQLite.

One row per ``(space, encoding, weights_id, dataset, suite, noise, level, metric)``
(:class:`~nasrobust.records.ResultKey`) with the protocol that produced it stored beside the
value in typed columns (REAL / INTEGER, checked by ``CHECK (typeof(...))`` constraints; free-form
protocol params keep their own SQLite type too). RobustBench's model cards keep accuracies
as strings; here a number is a number all the way down.

Durability and concurrency (several processes, e.g. ``torchrun`` ranks, one file):

* WAL journal, ``synchronous=FULL`` by default: every :meth:`ResultStore.write` /
  :meth:`~ResultStore.write_many` call is one transaction that is durable when it returns,
  so a killed run loses nothing it finished.
* Writers take the lock up front (``BEGIN IMMEDIATE``), wait on a busy timeout and retry
  on ``SQLITE_BUSY`` with back-off, so concurrent writers never see "database is locked".
* Rerunning skips what is done: :meth:`~ResultStore.has` / :meth:`~ResultStore.done_keys`
  per key, and :class:`~nasrobust.records.WorkUnit` s marked complete per
  (arch, weights, dataset, suite, protocol).

What a second write of the same key does (what a researcher rerunning a job expects):

* same protocol (:attr:`Protocol.hash <nasrobust.records.Protocol.hash>`, library versions
  excluded): a no-op -- the first finished value is kept (a resumed run never silently changes
  a number already reported); if the new value differs, a :class:`ValueMismatchWarning` says so;
* different protocol: :class:`ProtocolConflictError` (nothing of that call is written), unless
  ``overwrite=True``, which replaces value and protocol (and drops the completion mark of the
  replaced protocol's unit). One key holds one protocol: to keep both, give the variant its own
  suite name.

Per-rank stores are combined with :meth:`ResultStore.merge_from` (atomic; a protocol
conflict aborts the merge before anything is written).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union
from urllib.parse import quote

from nasrobust.errors import NasRobustError
from nasrobust.records import Protocol, Record, ResultKey, RunInfo, WorkUnit
from nasrobust.space import Arch

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``PRAGMA user_version`` of the schema below; a store written by a newer schema is refused.
SCHEMA_VERSION = 1

KEY_COLUMNS = ("space", "encoding", "weights_id", "dataset", "suite", "noise", "level", "metric")
PROTOCOL_COLUMNS = ("eps", "norm", "steps", "restarts", "seed", "n_examples")
_INT_PROTOCOL_COLUMNS = ("steps", "restarts", "seed", "n_examples")
_UNIT_COLUMNS = ("space", "encoding", "weights_id", "dataset", "suite", "protocol_hash")
_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}
_EXPORT_FORMATS = ("parquet", "csv")

_SCHEMA = (
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL CHECK (typeof(started) = 'real'),
        user TEXT, host TEXT, pid INTEGER, rank INTEGER,
        nasrobust_version TEXT NOT NULL,
        python_version TEXT,
        argv TEXT NOT NULL,
        origin TEXT)""",
    """CREATE TABLE protocols (
        id INTEGER PRIMARY KEY,
        identity TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL,
        eps REAL CHECK (eps IS NULL OR typeof(eps) = 'real'),
        norm TEXT,
        steps INTEGER CHECK (steps IS NULL OR typeof(steps) = 'integer'),
        restarts INTEGER CHECK (restarts IS NULL OR typeof(restarts) = 'integer'),
        seed INTEGER CHECK (seed IS NULL OR typeof(seed) = 'integer'),
        n_examples INTEGER CHECK (n_examples IS NULL OR typeof(n_examples) = 'integer'))""",
    "CREATE INDEX protocols_hash ON protocols(hash)",
    # pos -1: the value itself (or, for a tuple, its length); 0..n-1: tuple elements.
    # `value` has no declared type, so SQLite keeps each value's own type (integer/real/text).
    """CREATE TABLE protocol_params (
        protocol_id INTEGER NOT NULL REFERENCES protocols(id),
        name TEXT NOT NULL,
        pos INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('none', 'bool', 'int', 'float', 'str', 'tuple')),
        value,
        PRIMARY KEY (protocol_id, name, pos)) WITHOUT ROWID""",
    """CREATE TABLE protocol_versions (
        protocol_id INTEGER NOT NULL REFERENCES protocols(id),
        package TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (protocol_id, package)) WITHOUT ROWID""",
    """CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        space TEXT NOT NULL, encoding TEXT NOT NULL, weights_id TEXT NOT NULL,
        dataset TEXT NOT NULL, suite TEXT NOT NULL, noise TEXT NOT NULL,
        level REAL NOT NULL CHECK (typeof(level) = 'real'),
        metric TEXT NOT NULL,
        value REAL NOT NULL CHECK (typeof(value) = 'real'),
        protocol_id INTEGER NOT NULL REFERENCES protocols(id),
        run_id INTEGER NOT NULL REFERENCES runs(id),
        created REAL NOT NULL CHECK (typeof(created) = 'real'))""",
    # The key, encoding first: one encoding's rows are one contiguous index range.
    "CREATE UNIQUE INDEX results_key ON results(encoding, space, weights_id, dataset, suite, noise, level, metric)",
    "CREATE INDEX results_space_suite ON results(space, suite, metric)",
    """CREATE TABLE units (
        space TEXT NOT NULL, encoding TEXT NOT NULL, weights_id TEXT NOT NULL,
        dataset TEXT NOT NULL, suite TEXT NOT NULL, protocol_hash TEXT NOT NULL,
        n_records INTEGER NOT NULL,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        completed REAL NOT NULL,
        PRIMARY KEY (encoding, space, weights_id, dataset, suite, protocol_hash)) WITHOUT ROWID""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_OWN_TABLES = {"runs", "protocols", "protocol_params", "protocol_versions", "results", "units",
               "claims"}  # claims: nasrobust.claims, leases of units being computed by a worker

# Python type of a protocol param -> kind stored beside it, and back (bool before int: a bool is an int).
_PARAM_KINDS: tuple[tuple[type, str], ...] = ((bool, "bool"), (str, "str"), (int, "int"), (float, "float"))
_PARAM_DECODE: dict[str, Callable[[Any], Any]] = {
    "none": lambda v: None, "bool": bool, "int": int, "float": float, "str": str,
}

Filter = Union[str, Sequence[str], None]


class StoreError(NasRobustError):
    """A result-store file that cannot be used as asked."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No store at the given path (and creating one was not asked for)."""


class ProtocolConflictError(StoreError):
    """A key already stored under a different protocol."""


class ValueMismatchWarning(UserWarning):
    """The same key and protocol were written again with a different value; the first was kept."""


@dataclass(frozen=True)
class MergeReport:
    """What :meth:`ResultStore.merge_from` did."""

    source: str
    inserted: int  # records new to this store
    identical: int  # records already here with the same protocol (kept as they were)
    value_mismatch: int  # of those, how many had a different value in the source
    units: int  # completed work units copied
    runs: int  # run rows copied (provenance of the merged records)


def open_results(path: str | os.PathLike, *, create: bool = False, readonly: bool = False,
                 busy_timeout: float = 60.0, synchronous: str = "FULL", immutable: bool = False,
                 exclusive: bool = False) -> "ResultStore":
    """Open the existing result store at ``path`` (``create=True``: make it when missing); see :class:`ResultStore`.

    A path that does not exist is an error unless ``create=True``, so a typo never turns into
    a new, empty store. ``readonly=True`` opens for reading only (any write is refused).
    """
    return ResultStore(path, create=create, readonly=readonly, busy_timeout=busy_timeout, synchronous=synchronous,
                       immutable=immutable, exclusive=exclusive)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _param_kind(value: Any) -> str:
    if value is None:
        return "none"
    for typ, kind in _PARAM_KINDS:
        if isinstance(value, typ):
            return kind
    # numpy scalars: validated as Integral/Real by Protocol
    return "int" if isinstance(value, numbers.Integral) else "float"


def _param_rows(value: Any) -> list[tuple[int, str, Any]]:
    """``(pos, kind, value)`` rows of one protocol param."""
    if isinstance(value, tuple):
        rows = [(-1, "tuple", len(value))]
        for i, v in enumerate(value):
            kind = _param_kind(v)
            rows.append((i, kind, _PARAM_DECODE[kind](v)))
        return rows
    kind = _param_kind(value)
    return [(-1, kind, _PARAM_DECODE[kind](value))]


def _filters(**given: Filter) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in given.items() if v is not None]


def _where(filters: list[tuple[str, Any]], alias: str = "r") -> tuple[str, list[Any]]:
    """``WHERE`` clause over whitelisted columns; a sequence filter means "any of"."""
    clauses, args = [], []
    for column, value in filters:
        if column not in KEY_COLUMNS:
            raise ValueError(f"cannot filter on {column!r}")
        if isinstance(value, (str, int, float)):
            clauses.append(f"{alias}.{column} = ?")
            args.append(value)
        else:
            values = list(value)
            clauses.append(f"{alias}.{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class ResultStore:
    """Robustness results of many architectures in one SQLite file.

    Open with :func:`open_results`. Write :class:`~nasrobust.records.Record` s with
    :meth:`write` / :meth:`write_many` (each call commits), read them back with :meth:`query`,
    :meth:`to_pandas` or :meth:`export`. One object per process (or thread; do not carry an
    open store across ``fork``); any number of processes may write the same file at once.

    An evaluator's resume loop::

        with open_results("results.db", create=True) as store:
            unit = WorkUnit.of(arch, weights_id=wid, dataset="cifar10", suite="adversarial", protocol=proto)
            if not store.is_complete(unit):
                done = store.done_keys(arch, weights_id=wid, dataset="cifar10", suite="adversarial",
                                       protocol=proto)
                for key in keys:
                    if key not in done:
                        store.write(Record(key, measure(key), proto))  # durable when it returns
                store.complete_unit(unit, expected=len(keys))

    Levels are compared exactly (they are doubles): compute them the same way on every run
    (``8 / 255``), as the suites do.

    ``synchronous="FULL"`` (default) also survives power loss; ``"NORMAL"`` is faster and still
    survives a killed process, but may lose the last commits on an OS crash.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False, readonly: bool = False,
                 busy_timeout: float = 60.0, synchronous: str = "FULL", immutable: bool = False,
                 exclusive: bool = False):
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self.readonly = readonly or immutable
        if synchronous.upper() not in _SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {synchronous!r}")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; give the path of a store file, e.g. {self.path / 'results.db'}")
        existed = self.path.exists()
        if not existed and (not create or self.readonly):
            raise StoreNotFoundError(
                f"no result store at {self.path}; create one with `nasrobust evaluate ... --db {self.path}` "
                f"(or nasrobust.open_results({str(self.path)!r}, create=True) in Python)"
            )
        if not existed:
            from nasrobust.outputs import check_writable_store

            check_writable_store(self.path, flag="store")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "ro" if self.readonly else ("rwc" if create else "rw")
        uri = f"file:{quote(str(self.path.resolve()))}?mode={mode}{'&immutable=1' if immutable else ''}"
        self._conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        if exclusive:  # before the first access: WAL then keeps its index in heap memory, not a shared file
            self._conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._run_id: int | None = None
        self._protocol_ids: dict[str, int] = {}  # identity -> row id (committed rows only)
        self._protocols: dict[int, Protocol] = {}  # row id -> protocol (rows are immutable)
        self._known_names: set[tuple[str, str]] = set()  # (column, name) found valid by check_names
        try:
            self._retry(lambda: self._prepare(synchronous.upper(), create))
        except StoreError:
            self._conn.close()
            raise
        except sqlite3.OperationalError as exc:
            self._conn.close()
            raise StoreError(f"cannot open result store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
            self._conn.close()
            raise StoreError(f"{self.path} is not a nasrobust result store ({exc})") from None
        except BaseException:
            self._conn.close()
            raise
        if not existed:
            log.info("created result store %s", self.path)

    # ------------------------------------------------------------------ connection
    def _prepare(self, synchronous: str, create: bool) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer nasrobust (store schema {version}, this one reads "
                f"{SCHEMA_VERSION}); upgrade nasrobust"
            )
        if version == 0:  # empty file, or somebody else's SQLite database: touch nothing before checking
            if not create or self.readonly:
                raise StoreError(f"{self.path} is not a nasrobust result store (no result tables)")
            self._check_foreign_tables()
        if self.readonly:
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if version == SCHEMA_VERSION:
            # a file SQLite could open for reading only fails at the first write, after the work is
            # done: find out now (a write of the unchanged header, rolled back)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"PRAGMA user_version = {version}")
            finally:
                conn.execute("ROLLBACK")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # another process may have won
                self._check_foreign_tables()
                for statement in _SCHEMA:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_foreign_tables(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables - _OWN_TABLES:
            raise StoreError(
                f"{self.path} is an SQLite database with other tables ({', '.join(sorted(tables))}); "
                "use a new file for nasrobust results"
            )

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying on SQLITE_BUSY/locked with exponential back-off up to the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.002 * (1 + (os.getpid() % 8) / 8)  # per-process offset instead of random jitter
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "readonly" in str(exc):
                    raise StoreError(
                        f"{self.path} is read-only ({exc})" + ("; it was opened with readonly=True" if self.readonly
                        else "; make the file and its folder writable, or write to another store (--db)")) from None
                if not _is_busy(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self.path} stayed locked by another process for more than {self.busy_timeout:g} s; "
                        "raise busy_timeout or check for a hung writer"
                    ) from exc
                log.debug("store busy (%s); retrying in %.3f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _transaction(self, fn: Callable[[sqlite3.Connection, dict[str, Any]], T]) -> T:
        """Run ``fn(conn, pending)`` in one ``BEGIN IMMEDIATE`` transaction (retried when busy).

        ``pending`` collects ids created inside the transaction; they enter the caches only
        after the commit, so a rollback never leaves a stale id behind.
        """

        def attempt() -> T:
            pending: dict[str, Any] = {"protocols": {}}
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._conn, pending)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._protocol_ids.update(pending["protocols"])
            if "run" in pending:
                self._run_id = pending["run"]
            return out

        return self._retry(attempt)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return self._retry(lambda: self._conn.execute(sql, args).fetchall())

    def close(self) -> None:
        self._conn.close()

    def checkpoint(self) -> None:
        """Move everything in the write-ahead log into the database file and empty the log, so a
        reader that ignores the log (an immutable snapshot, a copy of the file) sees every record."""
        self._retry(lambda: self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    # ------------------------------------------------------------------ rows of other tables
    def _ensure_run(self, conn: sqlite3.Connection, pending: dict[str, Any]) -> int:
        if self._run_id is not None:
            return self._run_id
        if "run" not in pending:
            pending["run"] = _insert_run(conn, "main", None)
        return pending["run"]

    def _protocol_id(self, conn: sqlite3.Connection, protocol: Protocol, pending: dict[str, Any]) -> int:
        identity = protocol.identity
        found = self._protocol_ids.get(identity) or pending["protocols"].get(identity)
        if found is None:
            row = conn.execute("SELECT id FROM main.protocols WHERE identity = ?", (identity,)).fetchone()
            found = row[0] if row else _insert_protocol(conn, protocol)
            pending["protocols"][identity] = found
        return found

    def _protocol(self, pid: int) -> Protocol:
        if pid not in self._protocols:
            self._protocols[pid] = self._retry(lambda: _read_protocol(self._conn, "main", pid))
        return self._protocols[pid]

    # ------------------------------------------------------------------ writing
    def write(self, record: Record, *, overwrite: bool = False) -> bool:
        """Store one record and commit; True if it was new (or replaced), False if already there.

        Same key + same protocol: kept as stored (idempotent). Different protocol:
        :class:`ProtocolConflictError` unless ``overwrite``.
        """
        return self.write_many([record], overwrite=overwrite) == 1

    def write_many(self, records: Iterable[Record], *, overwrite: bool = False) -> int:
        """Store records in one transaction (all or nothing); returns how many were new or replaced."""
        records = list(records)
        for rec in records:
            if not isinstance(rec, Record):
                raise TypeError(f"expected nasrobust.records.Record, got {type(rec).__name__}")
        seen: dict[tuple, Record] = {}
        for rec in records:
            k = rec.key.as_tuple()
            if k in seen and seen[k].protocol.hash != rec.protocol.hash:
                raise ProtocolConflictError(
                    f"{_describe_key(rec.key)} appears twice in one write with different protocols "
                    f"({_describe_diff(seen[k].protocol, rec.protocol)})"
                )
            seen.setdefault(k, rec)
        if not records:
            return 0

        def put_all(conn: sqlite3.Connection, pending: dict[str, Any]) -> tuple[int, list[ResultKey]]:
            written, mismatched = 0, []
            run = self._ensure_run(conn, pending)
            for rec in records:
                outcome = self._put(conn, rec, run, self._protocol_id(conn, rec.protocol, pending), overwrite)
                written += outcome == "written"
                if outcome == "mismatch":
                    mismatched.append(rec.key)
            return written, mismatched

        written, mismatched = self._transaction(put_all)
        if mismatched:
            warnings.warn(
                f"{len(mismatched)} record(s) were already stored under the same protocol with a different "
                f"value (first: {_describe_key(mismatched[0])}); kept the stored value. "
                "Pass overwrite=True to replace it.",
                ValueMismatchWarning,
                stacklevel=3,
            )
        return written

    def _put(self, conn: sqlite3.Connection, rec: Record, run: int, pid: int, overwrite: bool) -> str:
        k = rec.key
        key = k.as_tuple()
        cur = conn.execute(
            "INSERT INTO main.results (space, encoding, weights_id, dataset, suite, noise, level, metric, "
            "value, protocol_id, run_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (*key, float(rec.value), pid, run, float(rec.created)),
        )
        if cur.rowcount == 1:
            return "written"
        row_id, value, old_pid, old_hash = conn.execute(
            "SELECT r.id, r.value, r.protocol_id, p.hash FROM main.results r JOIN main.protocols p "
            "ON p.id = r.protocol_id WHERE " + " AND ".join(f"r.{c} = ?" for c in KEY_COLUMNS),
            key,
        ).fetchone()
        if not overwrite:
            if old_hash != rec.protocol.hash:
                raise ProtocolConflictError(
                    f"{_describe_key(k)} is already stored under a different protocol "
                    f"({_describe_diff(_read_protocol(conn, 'main', old_pid), rec.protocol)}). "
                    "One key holds one protocol: evaluate the variant into another store (--db OTHER.db), or replace "
                    "the stored protocol (nasrobust evaluate --overwrite-protocol; in Python, write(..., overwrite=True))"
                )
            return "kept" if value == float(rec.value) else "mismatch"
        conn.execute(
            "UPDATE main.results SET value = ?, protocol_id = ?, run_id = ?, created = ? WHERE id = ?",
            (float(rec.value), pid, run, float(rec.created), row_id),
        )
        if old_hash != rec.protocol.hash:  # the old protocol's unit is no longer complete
            conn.execute(
                "DELETE FROM main.units WHERE encoding = ? AND space = ? AND weights_id = ? AND dataset = ? "
                "AND suite = ? AND protocol_hash = ?",
                (k.encoding, k.space, k.weights_id, k.dataset, k.suite, old_hash),
            )
        return "written"

    # ------------------------------------------------------------------ resume
    def has(self, key: ResultKey, protocol: Protocol | None = None) -> bool:
        """Whether ``key`` is stored (under ``protocol``'s hash, when given)."""
        sql = ("SELECT p.hash FROM main.results r JOIN main.protocols p ON p.id = r.protocol_id WHERE "
               + " AND ".join(f"r.{c} = ?" for c in KEY_COLUMNS))
        rows = self._read(sql, key.as_tuple())
        return bool(rows) and (protocol is None or rows[0][0] == protocol.hash)

    def done_keys(self, arch_or_encoding: Arch | str | None = None, *, space: Filter = None,
                  weights_id: Filter = None, dataset: Filter = None, suite: Filter = None,
                  noise: Filter = None, metric: Filter = None,
                  protocol: Protocol | None = None) -> set[ResultKey]:
        """Keys already stored (under ``protocol``'s hash, when given): what a rerun can skip."""
        encoding, space = self._resolve(arch_or_encoding, space)
        where, args = _where(_filters(encoding=encoding, space=space, weights_id=weights_id, dataset=dataset,
                                      suite=suite, noise=noise, metric=metric))
        sql = f"SELECT {', '.join('r.' + c for c in KEY_COLUMNS)} FROM main.results r"
        if protocol is not None:
            sql += " JOIN main.protocols p ON p.id = r.protocol_id"
            where = (where + " AND" if where else " WHERE") + " p.hash = ?"
            args.append(protocol.hash)
        return {ResultKey(*row) for row in self._read(sql + where, args)}

    def unit_protocols(self, unit: WorkUnit) -> list[Protocol]:
        """Protocols of the records stored for ``unit``'s (arch, weights, dataset, suite), any protocol:
        lets an evaluation find a protocol conflict before it computes anything."""
        rows = self._read(
            "SELECT DISTINCT protocol_id FROM main.results WHERE encoding = ? AND space = ? AND weights_id = ? "
            "AND dataset = ? AND suite = ?",
            (unit.encoding, unit.space, unit.weights_id, unit.dataset, unit.suite),
        )
        return [self._protocol(pid) for (pid,) in rows]

    def drop_other_protocols(self, unit: WorkUnit) -> int:
        """Delete the records (and completion marks) of ``unit``'s (arch, weights, dataset, suite) stored under
        another protocol than ``unit``'s: the last step of replacing a stored protocol. Returns the rows deleted."""
        where = "encoding = ? AND space = ? AND weights_id = ? AND dataset = ? AND suite = ?"
        args = (unit.encoding, unit.space, unit.weights_id, unit.dataset, unit.suite)

        def drop(conn: sqlite3.Connection, pending: dict[str, Any]) -> int:
            n = conn.execute(
                f"DELETE FROM main.results WHERE {where} AND protocol_id IN "
                "(SELECT id FROM main.protocols WHERE hash != ?)", (*args, unit.protocol_hash)).rowcount
            conn.execute(f"DELETE FROM main.units WHERE {where} AND protocol_hash != ?", (*args, unit.protocol_hash))
            return n

        return self._transaction(drop)

    def complete_unit(self, unit: WorkUnit, *, expected: int | None = None) -> int:
        """Mark a work unit complete (after all its records are written); returns its record count.

        Refuses a unit with no stored records, or fewer than ``expected``: a unit is a promise
        that a rerun may skip it.
        """

        def mark(conn: sqlite3.Connection, pending: dict[str, Any]) -> int:
            n = conn.execute(
                "SELECT COUNT(*) FROM main.results r JOIN main.protocols p ON p.id = r.protocol_id "
                "WHERE r.encoding = ? AND r.space = ? AND r.weights_id = ? AND r.dataset = ? AND r.suite = ? "
                "AND p.hash = ?",
                (unit.encoding, unit.space, unit.weights_id, unit.dataset, unit.suite, unit.protocol_hash),
            ).fetchone()[0]
            if n == 0 or (expected is not None and n < expected):
                raise StoreError(
                    f"cannot mark {unit.encoding} / {unit.suite} on {unit.dataset} complete: {n} record(s) "
                    f"stored under protocol {unit.protocol_hash[:10]}"
                    + (f", expected {expected}" if expected is not None else "")
                    + "; write the unit's records first"
                )
            conn.execute(
                "INSERT INTO main.units (space, encoding, weights_id, dataset, suite, protocol_hash, n_records, "
                "run_id, completed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "n_records = excluded.n_records, run_id = excluded.run_id, completed = excluded.completed",
                (unit.space, unit.encoding, unit.weights_id, unit.dataset, unit.suite, unit.protocol_hash, n,
                 self._ensure_run(conn, pending), time.time()),
            )
            return n

        return self._transaction(mark)

    def is_complete(self, unit: WorkUnit) -> bool:
        rows = self._read(
            "SELECT 1 FROM main.units WHERE " + " AND ".join(f"{c} = ?" for c in _UNIT_COLUMNS),
            [getattr(unit, c) for c in _UNIT_COLUMNS],
        )
        return bool(rows)

    def completed_units(self, arch_or_encoding: Arch | str | None = None, *, space: Filter = None,
                        weights_id: Filter = None, dataset: Filter = None, suite: Filter = None,
                        protocol: Protocol | None = None) -> set[WorkUnit]:
        """Work units marked complete, optionally filtered."""
        encoding, space = self._resolve(arch_or_encoding, space)
        where, args = _where(_filters(encoding=encoding, space=space, weights_id=weights_id, dataset=dataset,
                                      suite=suite), alias="u")
        if protocol is not None:
            where = (where + " AND" if where else " WHERE") + " u.protocol_hash = ?"
            args.append(protocol.hash)
        rows = self._read(f"SELECT {', '.join('u.' + c for c in _UNIT_COLUMNS)} FROM main.units u{where}", args)
        return {WorkUnit(*row) for row in rows}

    def runs(self) -> list[RunInfo]:
        """Every process that wrote into this store (merged ones name their ``origin``)."""
        rows = self._read(
            "SELECT id, started, user, host, pid, rank, nasrobust_version, python_version, argv, origin "
            "FROM main.runs ORDER BY id"
        )
        return [RunInfo(id_, started, user, host, pid, rank, version, python, tuple(json.loads(argv)), origin)
                for id_, started, user, host, pid, rank, version, python, argv, origin in rows]

    # ------------------------------------------------------------------ reading
    def _resolve(self, arch_or_encoding: Arch | str | None, space: Filter) -> tuple[str | None, Filter]:
        """An Arch or encoding (space prefix optional) -> (full encoding, space filter)."""
        if arch_or_encoding is None:
            return None, space
        if isinstance(arch_or_encoding, Arch):
            if isinstance(space, str) and space != arch_or_encoding.space:
                raise NasRobustError(f"architecture of space {arch_or_encoding.space!r} queried with space={space!r}")
            return arch_or_encoding.encoding, arch_or_encoding.space
        if not isinstance(arch_or_encoding, str):
            raise TypeError(f"expected an Arch or an encoding string, got {type(arch_or_encoding).__name__}")
        text = arch_or_encoding.strip()
        if ":" in text:
            return text, space
        if isinstance(space, str):
            return f"{space}:{text}", space
        spaces = self.spaces()
        if len(spaces) == 1:
            return f"{spaces[0]}:{text}", space
        raise NasRobustError(
            f"encoding {text!r} has no '<space>:' prefix and the store holds several spaces "
            f"({', '.join(spaces)}); pass the full encoding or the space"
        )

    def resolve_encoding(self, arch_or_encoding: Arch | str, space: str | None = None) -> str:
        """The full encoding :meth:`query` looks up (prefix added from ``space`` or the store's only space)."""
        encoding, _ = self._resolve(arch_or_encoding, space)
        if encoding is None:
            raise TypeError("expected an Arch or an encoding string, got None")
        return encoding

    def _select(self, encoding: str | None, filters: list[tuple[str, Any]]) -> list[tuple]:
        cols = ", ".join(f"r.{c}" for c in (*KEY_COLUMNS, "value", "created", "protocol_id"))
        where, args = _where(_filters(encoding=encoding) + filters)
        order = ", ".join(f"r.{c}" for c in ("encoding", "space", "weights_id", "dataset", "suite", "noise", "level", "metric"))
        rows = self._read(f"SELECT {cols} FROM main.results r{where} ORDER BY {order}", args)
        if rows or encoding is None:
            return rows
        canonical = _canonical_encoding(encoding)
        if canonical == encoding:
            return rows
        where, args = _where(_filters(encoding=canonical) + filters)
        return self._read(f"SELECT {cols} FROM main.results r{where} ORDER BY {order}", args)

    def query(self, arch_or_encoding: Arch | str | None = None, *, space: Filter = None, suite: Filter = None,
              dataset: Filter = None, noise: Filter = None, metric: Filter = None,
              weights_id: Filter = None) -> list[Record]:
        """Records matching the filters (each a name or a list of names), in key order.

        ``arch_or_encoding`` is an :class:`~nasrobust.space.Arch` or an encoding (the
        ``"<space>:"`` prefix may be left out when the space is known); a non-canonical
        encoding of a registered space finds its canonical twin.
        """
        encoding, space = self._resolve(arch_or_encoding, space)
        rows = self._select(encoding, _filters(space=space, suite=suite, dataset=dataset, noise=noise,
                                               metric=metric, weights_id=weights_id))
        if not rows:
            self.check_names(encoding, space=space, suite=suite, dataset=dataset)
        return [Record(ResultKey(*row[:8]), row[8], self._protocol(row[10]), row[9]) for row in rows]

    def to_pandas(self, arch_or_encoding: Arch | str | None = None, *, space: Filter = None,
                  suite: Filter = None, dataset: Filter = None, noise: Filter = None, metric: Filter = None,
                  weights_id: Filter = None) -> "pd.DataFrame":
        """One row per record: key columns, ``value``, ``created``, ``protocol_hash``, the protocol
        fields, ``param.<name>`` and ``version.<package>`` columns."""
        import pandas as pd

        encoding, space = self._resolve(arch_or_encoding, space)
        rows = self._select(encoding, _filters(space=space, suite=suite, dataset=dataset, noise=noise,
                                               metric=metric, weights_id=weights_id))
        if not rows:
            self.check_names(encoding, space=space, suite=suite, dataset=dataset)
        protocols = {pid: self._protocol(pid) for pid in {r[10] for r in rows}}
        flat = {pid: _flatten_protocol(p) for pid, p in protocols.items()}
        extra = sorted({c for f in flat.values() for c in f if c.startswith(("param.", "version."))})
        columns: dict[str, Any] = {c: [r[i] for r in rows] for i, c in enumerate((*KEY_COLUMNS, "value", "created"))}
        for c in ("protocol_hash", *PROTOCOL_COLUMNS, *extra):
            columns[c] = [flat[r[10]].get(c) for r in rows]
        frame = pd.DataFrame(columns)
        frame["level"] = frame["level"].astype("float64")
        frame["value"] = frame["value"].astype("float64")
        frame["created"] = frame["created"].astype("float64")
        frame["eps"] = pd.array(columns["eps"], dtype="Float64")
        for c in _INT_PROTOCOL_COLUMNS:
            frame[c] = pd.array(columns[c], dtype="Int64")
        for c in extra:
            frame[c] = _typed_column(pd, columns[c])
        return frame

    def export(self, path: str | os.PathLike, format: str | None = None, **filters: Any) -> Path:
        """Write :meth:`to_pandas` (same filters) to Parquet or CSV; format from the suffix by default."""
        from nasrobust.outputs import check_output

        path = check_output(path, force=True, flag="export path", inputs=[("store", self.path)])
        fmt = (format or path.suffix.lstrip(".") or "parquet").lower()
        if fmt not in _EXPORT_FORMATS:
            raise StoreError(f"cannot export to {fmt!r}; use format one of {', '.join(_EXPORT_FORMATS)}")
        frame = self.to_pandas(**filters)
        path.parent.mkdir(parents=True, exist_ok=True)
        writers: dict[str, Callable[[], None]] = {
            "parquet": lambda: frame.to_parquet(path, index=False),
            "csv": lambda: frame.to_csv(path, index=False),
        }
        writers[fmt]()
        log.debug("exported %d records to %s", len(frame), path)
        return path

    def encodings(self, space: Filter = None) -> list[str]:
        """Distinct architecture encodings, sorted."""
        where, args = _where(_filters(space=space))
        return [r[0] for r in self._read(f"SELECT DISTINCT r.encoding FROM main.results r{where} ORDER BY 1", args)]

    def spaces(self) -> list[str]:
        return self.distinct("space")

    def count(self, arch_or_encoding: Arch | str | None = None, **filters: Filter) -> int:
        """Number of records matching the same filters as :meth:`query`."""
        encoding, space = self._resolve(arch_or_encoding, filters.pop("space", None))
        n = self._count(encoding, space, filters)
        if n == 0:
            self.check_names(encoding, space=space, suite=filters.get("suite"), dataset=filters.get("dataset"))
        return n

    def _count(self, encoding: str | None, space: Filter, filters: dict[str, Filter]) -> int:
        where, args = _where(_filters(encoding=encoding, space=space, **filters))
        n = self._read(f"SELECT COUNT(*) FROM main.results r{where}", args)[0][0]
        if n or encoding is None or _canonical_encoding(encoding) == encoding:
            return n
        return self._count(_canonical_encoding(encoding), space, filters)

    def check_names(self, encoding: str | None = None, *, space: Filter = None, suite: Filter = None,
                    dataset: Filter = None) -> None:
        """Raise what the CLI would say for a typo: a malformed encoding of a registered space, or a
        space / suite / dataset name that is neither registered nor stored (with "did you mean").

        A well-formed encoding that is simply not stored passes: an empty answer then means "not
        evaluated (yet)". Queries call this only when they find nothing.
        """
        from nasrobust.errors import UnknownNameError

        def known(kind: str, column: str, registry: Callable[[], Iterable[str]]) -> Callable[[str], None]:
            def check(name: str) -> None:
                if (column, name) in self._known_names:  # a name once valid stays valid
                    return
                stored = set(self.distinct(column))
                if name not in stored:  # the registry only then: the suites' one imports torch
                    valid = stored | set(registry())
                    if name not in valid:
                        raise UnknownNameError(kind, name, valid)
                self._known_names.add((column, name))
            return check

        checks = {
            "space": (space, known("space", "space", _registered_spaces)),
            "suite": (suite, known("suite", "suite", _registered_suites)),
            "dataset": (dataset, known("dataset", "dataset", _registered_datasets)),
        }
        for value, check in checks.values():
            for name in [value] if isinstance(value, str) else (value or ()):
                check(name)
        if encoding is not None:
            prefix = encoding.partition(":")[0]
            check_space = checks["space"][1]
            check_space(prefix)
            if prefix in _registered_spaces():
                from nasrobust.space import get_space

                get_space(prefix).decode(encoding)  # malformed -> EncodingError with the grammar

    def distinct(self, column: str) -> list[str]:
        """Distinct values of one key column (``space``, ``suite``, ``dataset``, ``noise``, ``metric``, ...), sorted."""
        if column not in KEY_COLUMNS:
            raise ValueError(f"cannot list {column!r}; key columns: {', '.join(KEY_COLUMNS)}")
        return [r[0] for r in self._read(f"SELECT DISTINCT {column} FROM main.results ORDER BY 1")]

    def selectors(self) -> list[str]:
        """Distinct ``suite/noise/metric`` triples stored (what a store metric can select), sorted."""
        return [f"{a}/{b}/{c}" for a, b, c in
                self._read("SELECT DISTINCT suite, noise, metric FROM main.results ORDER BY 1, 2, 3")]

    def __len__(self) -> int:
        return self.count()

    def close_matches(self, encoding: str, n: int = 3) -> list[str]:
        """Stored encodings that look like ``encoding`` (for "did you mean")."""
        import difflib

        return difflib.get_close_matches(encoding, self.encodings(), n=n, cutoff=0.6)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` ("ok" when the file is sound)."""
        return "; ".join(r[0] for r in self._read("PRAGMA integrity_check"))

    # ------------------------------------------------------------------ merging
    def merge_from(self, other_path: str | os.PathLike) -> MergeReport:
        """Copy every record, completed unit and run of another store file into this one.

        Atomic: either everything new is added or nothing is. Records already here under the
        same protocol are kept as they are (a differing value is counted and warned about); a
        record stored under a different protocol aborts the merge with
        :class:`ProtocolConflictError`. Typical use: combine per-rank stores of a ``torchrun``
        evaluation.
        """
        other = Path(other_path)
        ResultStore(other, create=False, busy_timeout=self.busy_timeout).close()  # exists, is a store, readable
        if other.resolve() == self.path.resolve():
            raise StoreError(f"cannot merge {other} into itself")
        self._retry(lambda: self._conn.execute("ATTACH DATABASE ? AS src", (f"file:{quote(str(other.resolve()))}?mode=ro",)))
        try:
            report = self._transaction(lambda conn, pending: self._merge(conn, pending, str(other)))
        finally:
            self._conn.execute("DETACH DATABASE src")
        if report.value_mismatch:
            warnings.warn(
                f"{report.value_mismatch} record(s) of {other} were already here under the same protocol with "
                "a different value; kept the values of this store",
                ValueMismatchWarning,
                stacklevel=2,
            )
        log.info("merged %s: %d new records, %d already present", other, report.inserted, report.identical)
        return report

    def _merge(self, conn: sqlite3.Connection, pending: dict[str, Any], source: str) -> MergeReport:
        key_match = " AND ".join(f"m.{c} = s.{c}" for c in KEY_COLUMNS)
        conflicts = conn.execute(
            f"SELECT {', '.join('s.' + c for c in KEY_COLUMNS)}, m.protocol_id, s.protocol_id "
            f"FROM src.results s JOIN main.results m ON {key_match} "
            "JOIN main.protocols mp ON mp.id = m.protocol_id JOIN src.protocols sp ON sp.id = s.protocol_id "
            "WHERE mp.hash != sp.hash LIMIT 3"
        ).fetchall()
        if conflicts:
            first = conflicts[0]
            raise ProtocolConflictError(
                f"cannot merge {source}: {_describe_key(ResultKey(*first[:8]))} is stored under different "
                f"protocols ({_describe_diff(_read_protocol(conn, 'main', first[8]), _read_protocol(conn, 'src', first[9]))})"
                f"{' and more keys' if len(conflicts) > 1 else ''}; nothing was merged"
            )
        identical, mismatch = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(m.value != s.value), 0) FROM src.results s JOIN main.results m ON {key_match}"
        ).fetchone()

        conn.execute("CREATE TEMP TABLE IF NOT EXISTS merge_map (kind TEXT, old INTEGER, new INTEGER, PRIMARY KEY (kind, old))")
        conn.execute("DELETE FROM temp.merge_map")
        runs = conn.execute(
            "SELECT id, started, user, host, pid, rank, nasrobust_version, python_version, argv, origin FROM src.runs"
        ).fetchall()
        copied = 0
        for row in runs:
            values = (*row[1:9], row[9] or source)
            same = conn.execute(  # merging the same file twice reuses its run rows
                "SELECT id FROM main.runs WHERE started = ? AND user IS ? AND host IS ? AND pid IS ? AND rank IS ? "
                "AND nasrobust_version = ? AND python_version IS ? AND argv = ? AND origin IS ?", values,
            ).fetchone()
            if same:
                new = same[0]
            else:
                new = conn.execute(
                    "INSERT INTO main.runs (started, user, host, pid, rank, nasrobust_version, python_version, "
                    "argv, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values,
                ).lastrowid
                copied += 1
            conn.execute("INSERT INTO temp.merge_map VALUES ('run', ?, ?)", (row[0], new))
        for (pid,) in conn.execute("SELECT id FROM src.protocols").fetchall():
            new = self._protocol_id(conn, _read_protocol(conn, "src", pid), pending)
            conn.execute("INSERT INTO temp.merge_map VALUES ('protocol', ?, ?)", (pid, new))

        cols = ", ".join(KEY_COLUMNS)
        inserted = conn.execute(
            f"INSERT INTO main.results ({cols}, value, protocol_id, run_id, created) "
            f"SELECT {', '.join('s.' + c for c in KEY_COLUMNS)}, s.value, pm.new, rm.new, s.created "
            "FROM src.results s "
            "JOIN temp.merge_map pm ON pm.kind = 'protocol' AND pm.old = s.protocol_id "
            "JOIN temp.merge_map rm ON rm.kind = 'run' AND rm.old = s.run_id "
            "WHERE true ON CONFLICT DO NOTHING"
        ).rowcount
        units = conn.execute(
            f"INSERT INTO main.units ({', '.join(_UNIT_COLUMNS)}, n_records, run_id, completed) "
            f"SELECT {', '.join('u.' + c for c in _UNIT_COLUMNS)}, u.n_records, rm.new, u.completed FROM src.units u "
            "JOIN temp.merge_map rm ON rm.kind = 'run' AND rm.old = u.run_id WHERE true ON CONFLICT DO NOTHING"
        ).rowcount
        conn.execute("DELETE FROM temp.merge_map")
        return MergeReport(source, inserted, identical, mismatch, units, copied)


@dataclass(frozen=True)
class MergeConflict:
    """A key that two stores hold under different protocols (found by :func:`merge_conflicts`)."""

    key: ResultKey
    first: str  # the store that holds it first (in the order given)
    second: str
    difference: str  # "stored vs new: seed 0 vs 1"

    def __str__(self) -> str:
        return f"{_describe_key(self.key)}: {self.first} vs {self.second} ({self.difference})"


def merge_conflicts(paths: Sequence[str | os.PathLike], limit: int = 10) -> list[MergeConflict]:
    """Keys that any two of the stores at ``paths`` hold under different protocols (at most ``limit``).

    Reads only (each store opened read-only); an empty list means merging them all, in any
    order, replaces nothing. Linear in the total number of records: every key is remembered once,
    with the protocol of the first store that holds it, in a temporary database.
    """
    seen = sqlite3.connect("", isolation_level=None)  # a private temporary database on disk
    key_cols = ", ".join(KEY_COLUMNS)
    seen.execute(f"CREATE TABLE seen ({key_cols}, hash TEXT, source INTEGER, pid INTEGER, PRIMARY KEY ({key_cols}))")
    found: list[MergeConflict] = []
    try:
        for i, path in enumerate(paths):
            ResultStore(path, readonly=True).close()  # exists and is a store: clear errors otherwise
            seen.execute("ATTACH DATABASE ? AS src", (f"file:{quote(str(Path(path).resolve()))}?mode=ro",))
            try:
                select = (f"SELECT {', '.join('s.' + c for c in KEY_COLUMNS)}, p.hash, s.protocol_id FROM src.results s "
                          "JOIN src.protocols p ON p.id = s.protocol_id")
                match = " AND ".join(f"k.{c} = n.{c}" for c in KEY_COLUMNS)
                rows = seen.execute(
                    f"SELECT n.*, k.source, k.pid FROM ({select}) n JOIN seen k ON {match} WHERE k.hash != n.hash LIMIT ?",
                    (limit - len(found),)).fetchall()
                for row in rows:
                    key, pid, first, first_pid = ResultKey(*row[:8]), row[9], row[10], row[11]
                    with ResultStore(paths[first], readonly=True) as a, ResultStore(path, readonly=True) as b:
                        diff = _describe_diff(a._protocol(first_pid), b._protocol(pid))
                    found.append(MergeConflict(key, str(paths[first]), str(path), diff))
                seen.execute(f"INSERT OR IGNORE INTO seen ({key_cols}, hash, pid, source) SELECT n.*, ? FROM ({select}) n", (i,))
            finally:
                seen.execute("DETACH DATABASE src")
            if len(found) >= limit:
                break
    finally:
        seen.close()
    return found


# ---------------------------------------------------------------------------- helpers (any schema)
def _insert_run(conn: sqlite3.Connection, schema: str, origin: str | None) -> int:
    import getpass
    import socket

    import nasrobust

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = None
    rank = os.environ.get("RANK")
    return _row_id(conn.execute(
        f"INSERT INTO {schema}.runs (started, user, host, pid, rank, nasrobust_version, python_version, argv, origin) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (time.time(), user, socket.gethostname(), os.getpid(), int(rank) if rank and rank.isdigit() else None,
         nasrobust.__version__, sys.version.split()[0], json.dumps(list(sys.argv)), origin),
    ))


def _row_id(cursor: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just wrote."""
    if cursor.lastrowid is None:
        raise RuntimeError("the INSERT wrote no row")
    return cursor.lastrowid


def _insert_protocol(conn: sqlite3.Connection, protocol: Protocol) -> int:
    d = protocol.canonical()
    pid = _row_id(conn.execute(
        "INSERT INTO main.protocols (identity, hash, eps, norm, steps, restarts, seed, n_examples) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (protocol.identity, protocol.hash, None if protocol.eps is None else float(protocol.eps), d["norm"],
         d["steps"], d["restarts"], d["seed"], d["n_examples"]),
    ))
    conn.executemany(
        "INSERT INTO main.protocol_params (protocol_id, name, pos, kind, value) VALUES (?, ?, ?, ?, ?)",
        [(pid, name, *row) for name, value in protocol.params for row in _param_rows(value)],
    )
    conn.executemany(
        "INSERT INTO main.protocol_versions (protocol_id, package, version) VALUES (?, ?, ?)",
        [(pid, package, version) for package, version in protocol.versions],
    )
    return pid


def _read_protocol(conn: sqlite3.Connection, schema: str, pid: int) -> Protocol:
    row = conn.execute(
        f"SELECT eps, norm, steps, restarts, seed, n_examples FROM {schema}.protocols WHERE id = ?", (pid,)
    ).fetchone()
    params: dict[str, Any] = {}
    for name, pos, kind, value in conn.execute(
        f"SELECT name, pos, kind, value FROM {schema}.protocol_params WHERE protocol_id = ? ORDER BY name, pos", (pid,)
    ):
        if pos < 0:
            params[name] = () if kind == "tuple" else _PARAM_DECODE[kind](value)
        else:
            params[name] = (*params[name], _PARAM_DECODE[kind](value))
    versions = conn.execute(
        f"SELECT package, version FROM {schema}.protocol_versions WHERE protocol_id = ? ORDER BY package", (pid,)
    ).fetchall()
    eps, norm, steps, restarts, seed, n_examples = row
    return Protocol(eps, norm, steps, restarts, seed, n_examples, params=tuple(sorted(params.items())),
                    versions=tuple((package, version) for package, version in versions))


def _flatten_protocol(p: Protocol) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol_hash": p.hash}
    out.update({c: getattr(p, c) for c in PROTOCOL_COLUMNS})
    out.update({f"param.{k}": list(v) if isinstance(v, tuple) else v for k, v in p.params})
    out.update({f"version.{k}": v for k, v in p.versions})
    return out


def _typed_column(pd: Any, values: list[Any]) -> Any:
    """A param column with one type: numbers numeric, flags boolean, names strings; lists and
    (rare) mixed-type columns as JSON text, so Parquet can always store them."""
    present = [v for v in values if v is not None]
    types = {type(v) for v in present}
    if types <= {int}:
        return pd.array(values, dtype="Int64")
    if types <= {int, float}:
        return pd.array([None if v is None else float(v) for v in values], dtype="Float64")
    if types <= {bool}:
        return pd.array(values, dtype="boolean")
    if types <= {str}:
        return pd.array(values, dtype="string")
    return pd.array([None if v is None else json.dumps(v) for v in values], dtype="string")


def _registered_spaces() -> list[str]:
    from nasrobust.space import list_spaces

    return list_spaces()


def _registered_suites() -> list[str]:
    from nasrobust.noise.base import SUITES

    return SUITES.names()


def _registered_datasets() -> list[str]:
    from nasrobust.data import DATASETS

    return DATASETS.names()


def _canonical_encoding(encoding: str) -> str:
    """The canonical encoding of a registered space's architecture (else the text itself)."""
    from nasrobust.space import get_space

    try:
        return get_space(encoding.partition(":")[0]).decode(encoding).encoding
    except NasRobustError:  # unknown space (plugin not installed here) or malformed encoding
        return encoding


def _describe_key(key: ResultKey) -> str:
    return (f"{key.encoding} [{key.weights_id}] {key.dataset}/{key.suite}/{key.noise}@{key.level:g} "
            f"{key.metric}")


def _describe_diff(a: Protocol, b: Protocol) -> str:
    diff = a.diff(b)
    if not diff:
        return "same settings"
    return "stored vs new: " + ", ".join(f"{k} {x!r} vs {y!r}" for k, (x, y) in diff.items())


__all__ = [
    "KEY_COLUMNS",
    "MergeConflict",
    "MergeReport",
    "PROTOCOL_COLUMNS",
    "ProtocolConflictError",
    "ResultStore",
    "SCHEMA_VERSION",
    "StoreError",
    "StoreNotFoundError",
    "ValueMismatchWarning",
    "merge_conflicts",
    "open_results",
]
