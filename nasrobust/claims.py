"""Leases on work units, kept in the result store, so several processes share one store's work.

A worker claims a unit (an opaque key; the evaluator's is its WorkUnit's fields joined by ``|``) before
computing it: the claim is an insert, or a take-over of a claim whose lease has expired, made inside
``BEGIN IMMEDIATE`` so two processes can never both win. The owner renews the lease while it works and
releases it at the end; a worker that dies leaves its claim to expire, after which any other worker may
take the unit. A claim whose owner ran on this host and is no longer alive is taken over at once (a killed
run resumed on the same machine does not wait out the lease). Finished units are recognised by the store's ``units`` table, not here: a claim only
prevents two workers from computing the same unit at the same time.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

DEFAULT_LEASE_S = 600.0

log = logging.getLogger(__name__)

_SCHEMA = """CREATE TABLE IF NOT EXISTS claims (
    unit TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID"""


def new_owner() -> str:
    """A claim owner id unique across hosts and processes: ``host/pid/uuid``."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def _dead_here(owner: str) -> bool:
    """Whether ``owner`` (a :func:`new_owner` id) names a process of this host that no longer runs."""
    host, _, rest = owner.partition("/")
    pid = rest.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


class Claims:
    """Claims on units of the store at ``path`` made by one ``owner``."""

    def __init__(self, path: str | os.PathLike, owner: str | None = None, *, lease_s: float = DEFAULT_LEASE_S,
                 clock: Callable[[], float] | None = None):
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        self.path = Path(path)
        self.owner = owner or new_owner()
        self.lease_s = float(lease_s)
        self._clock = clock or time.time
        self._db: sqlite3.Connection | None = None
        self._beats: dict[str, tuple[threading.Event, threading.Thread]] = {}

    @property
    def _conn(self) -> sqlite3.Connection:
        """Connected on first use, so the store file is created by the store, not by us."""
        if self._db is None:
            self._db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute(_SCHEMA)
        return self._db

    def close(self) -> None:
        for unit in list(self._beats):
            self._stop_beat(unit)
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> "Claims":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _immediate(self, sql: str, args: tuple) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = conn.execute(sql, args).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return n

    def claim(self, unit: str) -> bool:
        """Take ``unit`` if nobody holds a live lease on it (ours is renewed); True when we hold it now."""
        now = self._clock()
        n = self._immediate(
            "INSERT INTO claims (unit, owner, expires) VALUES (?, ?, ?) "
            "ON CONFLICT(unit) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
            "WHERE claims.expires < ? OR claims.owner = excluded.owner",
            (unit, self.owner, now + self.lease_s, now))
        if n > 0:
            return True
        held = self.holder(unit)
        if held is None or not _dead_here(held[0]):
            return False
        log.info("claim on %s held by %s, a process of this host that is gone: taken over", unit, held[0])
        return self._immediate("UPDATE claims SET owner = ?, expires = ? WHERE unit = ? AND owner = ?",
                               (self.owner, now + self.lease_s, unit, held[0])) > 0

    def renew(self, unit: str) -> bool:
        """Extend our lease on ``unit``; False when it was lost (expired and taken over)."""
        return self._immediate("UPDATE claims SET expires = ? WHERE unit = ? AND owner = ?",
                               (self._clock() + self.lease_s, unit, self.owner)) > 0

    def hold(self, unit: str) -> None:
        """Keep our claim on ``unit`` alive while we compute it: a daemon thread renews the lease every
        ``lease_s / 3`` seconds on its own connection until :meth:`release` (or :meth:`close`), so a unit
        that takes longer than the lease is never taken over while this process lives; when the process
        dies, the thread dies with it and the lease expires."""
        if unit in self._beats:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(unit, stop), name=f"claim-heartbeat-{unit}", daemon=True)
        self._beats[unit] = (stop, thread)
        thread.start()

    def _beat(self, unit: str, stop: threading.Event) -> None:
        with Claims(self.path, self.owner, lease_s=self.lease_s, clock=self._clock) as mine:
            while not stop.wait(self.lease_s / 3):
                if not mine.renew(unit):
                    log.warning("lease on %s lost (expired and taken over): another worker may compute it again", unit)
                    return

    def _stop_beat(self, unit: str) -> None:
        beat = self._beats.pop(unit, None)
        if beat is not None:
            beat[0].set()
            beat[1].join()

    def release(self, unit: str) -> None:
        """Drop our claim on ``unit`` (done or given up); another owner's claim is left alone."""
        self._stop_beat(unit)
        self._immediate("DELETE FROM claims WHERE unit = ? AND owner = ?", (unit, self.owner))

    def holder(self, unit: str) -> tuple[str, float] | None:
        """``(owner, expires)`` of the claim on ``unit``, or None."""
        row = self._conn.execute("SELECT owner, expires FROM claims WHERE unit = ?", (unit,)).fetchone()
        return (row[0], row[1]) if row else None
