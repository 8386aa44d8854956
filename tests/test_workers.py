"""Worker processes share one store's units through claims: each unit computed once, results identical."""

from __future__ import annotations

import sqlite3
import time
import subprocess
import sys
from pathlib import Path

import pytest

from nasrobust.claims import Claims
from nasrobust.cli.main import main
from nasrobust.store import open_results


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "r.db"
    open_results(path, create=True).close()
    return path


def test_live_claim_is_skipped_and_expired_claim_is_taken_over(tmp_path):
    db = _store(tmp_path)
    now = [1000.0]
    a = Claims(db, "a", lease_s=10, clock=lambda: now[0])
    b = Claims(db, "b", lease_s=10, clock=lambda: now[0])
    assert a.claim("u1")
    assert not b.claim("u1")  # live lease: skipped
    now[0] += 5
    assert a.renew("u1")  # renewed to 1015
    now[0] += 9
    assert not b.claim("u1")
    now[0] += 2  # a died: the lease has expired
    assert b.claim("u1") and b.holder("u1")[0] == "b"
    assert not a.renew("u1")  # a learns it lost the unit
    a.release("u1")  # and cannot release b's claim
    assert b.holder("u1")[0] == "b"
    b.release("u1")
    assert b.holder("u1") is None and a.claim("u1")
    a.close(), b.close()


def test_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    """A killed run resumed on the same machine must not wait out (or skip) the units its dead process held."""
    import os
    import socket

    db = _store(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    me = Claims(db, "me", lease_s=600)
    for owner, taken in [(f"{host}/{gone.pid}/dead", True), (f"{host}/{os.getpid()}/alive", False),
                         (f"other-host/{gone.pid}/remote", False), ("a", False)]:
        with Claims(db, owner, lease_s=600) as holder:
            assert holder.claim("u")
        assert me.claim("u") is taken, owner
        assert me.holder("u")[0] == ("me" if taken else owner)
        me._immediate("DELETE FROM claims", ())
    me.close()


def test_claims_table_is_accepted_by_the_store(tmp_path):
    db = _store(tmp_path)
    with Claims(db, "a") as c:
        assert c.claim("u")
    with open_results(db) as store:  # not "an SQLite database with other tables"
        assert len(store) == 0


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_workers_must_be_positive(bad, capsys):
    assert main(["evaluate", "--supernet", "x", "--workers", bad]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT encoding, suite, noise, level, metric, value FROM results ORDER BY 1, 2, 3, 4, 5").fetchall()
    con.close()
    return rows


@pytest.mark.slow
def test_two_commands_share_units_and_match_one_run(tmp_path):
    """Two real `nasrobust evaluate` processes on one store: the rows of one run, each unit computed once."""
    from nasrobust.train import Recipe
    from nasrobust.train.api import train_supernet

    train_supernet("nb201", "digits", Recipe(epochs=1, batch_size=64, lr=0.05, bn_recalib_images=100), tmp_path / "sn",
                   progress=False, channels=4, cells_per_stage=1)
    argv = ["evaluate", "--supernet", str(tmp_path / "sn"), "--n", "4", "--suites", "natural,system",
            "--suite-option", "natural.severities=1", "--n-examples", "40", "--recalib-images", "64",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main([*argv, "--db", str(tmp_path / "one.db"), "--workers", "1"]) == 0
    shared = tmp_path / "shared.db"
    open_results(shared, create=True).close()
    cmd = [sys.executable, "-c", "import logging,sys; logging.basicConfig(level=logging.INFO); "
                       "from nasrobust.cli.main import main; sys.exit(main(sys.argv[1:]))", *argv, "--db", str(shared),
                       "--workers", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    computed = [line for _, err in outs for line in err.splitlines() if "unit computed:" in line]
    units = [line.split("unit computed:")[1].strip() for line in computed]
    assert len(units) == len(set(units)) == 5 * 2  # 4 subnets + the reference, 2 suites, each once
    assert all(any("unit computed:" in line for line in err.splitlines()) for _, err in outs)  # both did work
    assert _rows(shared) == _rows(tmp_path / "one.db")  # bit-identical to one uninterrupted run


_HOLDER = """
import sys, time
from nasrobust.claims import Claims
c = Claims(sys.argv[1], "worker", lease_s=1.0)
assert c.claim("u")
c.hold("u")
print("held", flush=True)
time.sleep(60)  # computing a unit far longer than the lease
"""


def test_heartbeat_keeps_a_long_unit_until_its_worker_dies(tmp_path):
    """A 1 s lease on a unit that takes ~3 s: no take-over while the worker lives, take-over once it is gone."""
    db = _store(tmp_path)
    worker = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "held"
        other = Claims(db, "other", lease_s=1.0)
        end = time.time() + 3.0
        while time.time() < end:
            assert not other.claim("u"), "taken over while its worker was alive"
            time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait()
    time.sleep(1.2)  # the dead worker's lease runs out
    assert other.claim("u") and other.holder("u")[0] == "other"
    other.close()


def test_release_stops_the_heartbeat(tmp_path):
    db = _store(tmp_path)
    with Claims(db, "a", lease_s=0.3) as a:
        assert a.claim("u")
        a.hold("u")
        a.release("u")
        assert a.holder("u") is None and not a._beats
        time.sleep(0.3)
        assert a.holder("u") is None  # no renewal re-creates or extends it
