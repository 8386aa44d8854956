"""The result store: typed round trips, resume semantics, merge, kill-safety and concurrent writers."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nasrobust.space
from nasrobust.cost import Cost
from nasrobust.records import InvalidRecordError, Protocol, Record, ResultKey, WorkUnit, current_versions
from nasrobust.space import SearchSpace
from nasrobust.store import (
    ProtocolConflictError,
    StoreError,
    StoreNotFoundError,
    ValueMismatchWarning,
    open_results,
)

REPO = Path(__file__).resolve().parents[1]
PGD = Protocol.make(eps=8 / 255, norm="Linf", steps=20, restarts=1, seed=0, n_examples=500,
                    params={"step_size": 2 / 255, "random_start": True})
CORRUPT = Protocol.make(seed=0, n_examples=500, params={"severities": (1, 2, 3, 4, 5), "reference": "alexnet",
                                                        "batched": True, "note": None})


def key(enc="toy:1-2", suite="adversarial", noise="pgd_linf", level=8 / 255, metric="accuracy",
        weights_id="w0", dataset="mnist"):
    return ResultKey(enc.partition(":")[0], enc, weights_id, dataset, suite, noise, level, metric)


def table(n_arch=5):
    """A small but realistic table: adversarial levels + corruptions, two metrics each."""
    out = []
    for a in range(n_arch):
        enc = f"toy:{a}-{a + 1}"
        for i, eps in enumerate((1 / 255, 4 / 255, 8 / 255)):
            for metric in ("accuracy", "ar"):
                out.append(Record(key(enc, level=eps, metric=metric), 0.9 - 0.1 * i - 0.01 * a, PGD))
        for c in ("gaussian_noise", "glass_blur"):
            for sev in range(1, 6):
                out.append(Record(key(enc, "natural", c, float(sev)), 0.8 - sev / 50 + a / 1000, CORRUPT))
    return out


class ToySpace(SearchSpace):
    """Two sorted ints: '2-1' and '1-2' are the same architecture (canonical form sorted)."""

    name = "toy"
    grammar = "<int>-<int>"

    def encode_genome(self, genome):
        return "-".join(map(str, genome))

    def parse_genome(self, body):
        try:
            return tuple(int(x) for x in body.split("-"))
        except ValueError:
            raise self.encoding_error(body, "not two ints") from None

    def canonical(self, genome):
        return tuple(sorted(genome))

    def random_genome(self, rng):
        return tuple(int(x) for x in rng.integers(0, 9, 2))

    def size(self):
        return 45

    def factors(self, arch):
        return {"sum": float(sum(arch.genome))}

    def neighbors(self, arch):
        return []

    def build(self, arch, num_classes=None, input_size=None):
        raise NotImplementedError

    def cost(self, arch, num_classes=None, input_size=None):
        return Cost(0, 0)


@pytest.fixture
def toy(monkeypatch):
    space = ToySpace()
    monkeypatch.setitem(nasrobust.space._instances, "toy", space)
    return space


@pytest.fixture
def store(tmp_path):
    with open_results(tmp_path / "r.db", create=True) as s:
        yield s


# ---------------------------------------------------------------------------- records
def test_protocol_hash_is_sha1_of_canonical_json_without_versions():
    p = Protocol.make(eps=8 / 255, norm="Linf", steps=20, restarts=1, seed=0, n_examples=500,
                      params={"step_size": 2 / 255, "severities": [1, 2.0]})
    reference = {"eps": 8 / 255, "n_examples": 500, "norm": "Linf",
                 "params": {"severities": [1, 2], "step_size": 2 / 255}, "restarts": 1, "seed": 0, "steps": 20}
    text = json.dumps(reference, sort_keys=True, separators=(",", ":"))
    assert p.hash == hashlib.sha1(text.encode()).hexdigest()
    # pinned: the hash is part of the on-disk format and must not drift between versions
    assert p.hash == "83bc7dffef7fb2c9ca628dc9f3fb6458b2bad49c"
    assert p.versions == current_versions() and dict(p.versions)["torch"]
    other_versions = Protocol.make(**{**_fields(p), "versions": {"torch": "0.0"}})
    assert other_versions.hash == p.hash and other_versions.identity != p.identity
    assert Protocol.make(steps=20, params={"k": 1.0}).hash == Protocol.make(steps=20, params={"k": 1}).hash
    assert Protocol.make(eps=8 / 255, steps=100).hash != Protocol.make(eps=8 / 255, steps=20).hash
    assert Protocol.make(params={"b": 1, "a": 2}) == Protocol.make(params={"a": 2, "b": 1})


def _fields(p):
    return dict(eps=p.eps, norm=p.norm, steps=p.steps, restarts=p.restarts, seed=p.seed, n_examples=p.n_examples,
                params=dict(p.params))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.5", True, None, [0.5]])
def test_non_finite_or_non_numeric_values_are_refused(bad):
    with pytest.raises(InvalidRecordError):
        Record(key(), bad, PGD)


def test_record_validation_messages():
    with pytest.raises(InvalidRecordError, match="do not write a record"):
        Record(key(), float("nan"), PGD)
    with pytest.raises(InvalidRecordError, match=r"\.item\(\)"):
        Record(key(), np.array([0.5]), PGD)
    with pytest.raises(InvalidRecordError, match="does not belong to space"):
        ResultKey("bignas", "toy:1-2", "w", "d", "s", "n", 0.0, "m")
    with pytest.raises(InvalidRecordError, match="non-empty"):
        key(metric="")
    with pytest.raises(InvalidRecordError, match="level"):
        key(level=float("nan"))
    with pytest.raises(InvalidRecordError, match="Protocol.make"):
        Protocol(params={"a": 1})
    with pytest.raises(InvalidRecordError, match="steps"):
        Protocol(steps=2.5)
    with pytest.raises(InvalidRecordError, match="nested"):
        Protocol.make(params={"a": ((1, 2),)})
    assert Record(key(), np.float32(0.25), PGD).value == 0.25  # numpy scalars are real numbers


# ---------------------------------------------------------------------------- round trip
def test_roundtrip_is_exact_and_typed(store):
    records = table()
    assert store.write_many(records) == len(records)
    back = store.query()
    assert sorted(back, key=lambda r: r.key.as_tuple()) == sorted(records, key=lambda r: r.key.as_tuple())
    assert {r.protocol for r in back} == {PGD, CORRUPT}
    conn = store._conn
    types = conn.execute("SELECT DISTINCT typeof(level), typeof(value), typeof(created) FROM results").fetchall()
    assert types == [("real", "real", "real")]
    proto = conn.execute("SELECT typeof(eps), typeof(steps), typeof(seed), typeof(n_examples) FROM protocols "
                         "WHERE norm = 'Linf'").fetchall()
    assert proto == [("real", "integer", "integer", "integer")]
    params = dict(conn.execute("SELECT name || '[' || pos || ']', typeof(value) FROM protocol_params").fetchall())
    assert params["step_size[-1]"] == "real" and params["severities[0]"] == "integer"
    assert params["reference[-1]"] == "text" and params["note[-1]"] == "null"
    with pytest.raises(sqlite3.IntegrityError):  # the schema itself refuses a number stored as text
        conn.execute("UPDATE results SET value = 'n/a' WHERE id = 1")


def test_write_same_protocol_is_idempotent_and_keeps_first_value(store):
    rec = Record(key(), 0.5, PGD)
    assert store.write(rec) is True
    assert store.write(rec) is False
    upgraded = Protocol.make(**{**_fields(PGD), "versions": {"torch": "99.0"}})
    assert store.write(Record(key(), 0.5, upgraded)) is False  # a library upgrade resumes, not conflicts
    with pytest.warns(ValueMismatchWarning, match="kept the stored value"):
        assert store.write(Record(key(), 0.75, PGD)) is False
    [back] = store.query()
    assert back == rec and len(store) == 1


def test_unit_protocols_and_dropping_a_replaced_protocol(store):
    """What `evaluate` checks before computing, and how `--overwrite-protocol` ends: the unit keeps its new
    protocol's records only, other archs and suites are untouched."""
    pgd100 = Protocol.make(**{**_fields(PGD), "steps": 100})
    store.write_many(table(2))
    unit = key("toy:0-1").unit(PGD)
    assert [p.hash for p in store.unit_protocols(unit)] == [PGD.hash]
    assert store.unit_protocols(key("toy:5-6").unit(PGD)) == []
    store.complete_unit(unit)
    store.write(Record(key("toy:0-1", level=8 / 255), 0.3, pgd100), overwrite=True)  # one key re-scored
    new_unit = key("toy:0-1").unit(pgd100)
    assert {p.hash for p in store.unit_protocols(new_unit)} == {PGD.hash, pgd100.hash}
    before = len(store)
    assert store.drop_other_protocols(new_unit) == 5  # the other five PGD keys of that unit
    assert [p.hash for p in store.unit_protocols(new_unit)] == [pgd100.hash] and len(store) == before - 5
    assert len(store.query("toy:0-1", suite="natural")) == 10 and len(store.query("toy:1-2")) == 16
    assert not store.completed_units("toy:0-1", suite="adversarial")


def test_write_different_protocol_conflicts_unless_overwrite(store):
    store.write(Record(key(), 0.5, PGD))
    store.complete_unit(key().unit(PGD))
    pgd100 = Protocol.make(**{**_fields(PGD), "steps": 100})
    batch = [Record(key(metric="ar"), 0.4, PGD), Record(key(), 0.45, pgd100)]
    with pytest.raises(ProtocolConflictError, match="steps 20 vs 100"):
        store.write_many(batch)
    assert len(store) == 1, "a failed write_many writes nothing"
    assert store.write(Record(key(), 0.45, pgd100), overwrite=True)
    [back] = store.query()
    assert back.value == 0.45 and back.protocol.steps == 100
    assert not store.is_complete(key().unit(PGD)), "overwriting drops the old protocol's completion mark"
    with pytest.raises(ProtocolConflictError, match="twice in one write"):
        store.write_many([Record(key("toy:7-8"), 0.1, PGD), Record(key("toy:7-8"), 0.1, pgd100)])


def test_query_filters_arch_prefix_and_canonical_twin(store, toy):
    store.write_many(table())
    arch = toy.decode("toy:1-2")
    assert len(store.query(arch)) == 16
    assert store.query("1-2") == store.query(arch) == store.query("toy:1-2")
    assert store.query("toy:2-1") == store.query(arch), "a non-canonical encoding finds its canonical twin"
    assert store.count("toy:2-1") == 16
    adv = store.query(arch, suite="adversarial", metric=["accuracy", "ar"])
    assert len(adv) == 6 and all(r.key.suite == "adversarial" for r in adv)
    assert [r.key.level for r in store.query(arch, noise="glass_blur")] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert store.query("toy:9-9") == []
    assert store.encodings() == [f"toy:{a}-{a + 1}" for a in range(5)]
    assert store.encodings(space="other") == []
    assert store.close_matches("toy:3-44", n=1) == ["toy:3-4"]


@pytest.mark.parametrize("space_name", nasrobust.space.list_spaces())
def test_query_by_arch_of_every_registered_space(tmp_path, space_name):
    space = nasrobust.space.get_space(space_name)
    archs = space.sample(min(2, space.size()), seed=0)
    with open_results(tmp_path / "r.db", create=True) as s:
        for i, arch in enumerate(archs):
            s.write(Record(ResultKey.of(arch, weights_id="w", dataset="cifar10", suite="clean", noise="none",
                                        level=0.0, metric="accuracy"), 0.5 + i / 10, PGD))
        for i, arch in enumerate(archs):
            [rec] = s.query(arch)
            assert rec.key.encoding == arch.encoding and rec.value == 0.5 + i / 10
            assert s.query(arch.encoding.partition(":")[2], space=space_name) == [rec]


def test_to_pandas_and_export_roundtrip(store, tmp_path):
    pd = pytest.importorskip("pandas")
    records = table(3)
    store.write_many(records)
    frame = store.to_pandas(suite="natural")
    assert len(frame) == 30 and set(frame["protocol_hash"]) == {CORRUPT.hash}
    assert str(frame["value"].dtype) == "float64" and str(frame["n_examples"].dtype) == "Int64"
    assert frame["param.severities"].iloc[0] == "[1, 2, 3, 4, 5]" and frame["version.torch"].iloc[0]
    full = store.to_pandas().sort_values(["encoding", "suite", "noise", "level", "metric"]).reset_index(drop=True)
    expected = sorted((r.key.encoding, r.key.suite, r.key.noise, r.key.level, r.key.metric, r.value) for r in records)
    assert list(full[["encoding", "suite", "noise", "level", "metric", "value"]].itertuples(index=False, name=None)) == expected
    for fmt in ("parquet", "csv"):
        out = store.export(tmp_path / f"all.{fmt}")
        back = (pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out))
        back = back.sort_values(["encoding", "suite", "noise", "level", "metric"]).reset_index(drop=True)
        assert back["value"].tolist() == full["value"].tolist(), f"{fmt} must round-trip values exactly"
        assert back["level"].tolist() == full["level"].tolist()
        assert back["steps"].dropna().astype(int).tolist() == full["steps"].dropna().astype(int).tolist()
    with pytest.raises(StoreError, match="cannot export"):
        store.export(tmp_path / "x.xlsx")


def test_done_keys_and_work_units(store):
    records = table(2)
    store.write_many(records[:10])
    done = store.done_keys("toy:0-1", weights_id="w0", dataset="mnist", protocol=PGD)
    assert done == {r.key for r in records[:10] if r.protocol == PGD}
    assert store.done_keys("toy:0-1", protocol=Protocol.make(steps=5)) == set()
    assert store.has(records[0].key) and store.has(records[0].key, PGD)
    assert not store.has(records[0].key, CORRUPT) and not store.has(records[-1].key)
    unit = WorkUnit.of("toy:0-1", weights_id="w0", dataset="mnist", suite="natural", protocol=CORRUPT)
    with pytest.raises(StoreError, match="expected 10"):
        store.complete_unit(unit, expected=10)
    store.write_many(records[10:])
    assert store.complete_unit(unit, expected=10) == 10
    assert store.is_complete(unit) and store.completed_units() == {unit}
    assert store.completed_units(suite="adversarial") == set()
    empty = WorkUnit.of("toy:5-6", weights_id="w0", dataset="mnist", suite="natural", protocol=CORRUPT)
    with pytest.raises(StoreError, match="write the unit's records first"):
        store.complete_unit(empty)
    [run] = store.runs()
    assert run.pid == os.getpid() and run.nasrobust_version and run.origin is None


def test_merge_from_per_rank_stores(tmp_path):
    records = table(4)
    with open_results(tmp_path / "rank0.db", create=True) as a, open_results(tmp_path / "rank1.db", create=True) as b:
        a.write_many(records[:40])
        b.write_many(records[30:])  # 10 overlap
        b.complete_unit(records[-1].key.unit(CORRUPT))
    with open_results(tmp_path / "all.db", create=True) as merged:
        r0 = merged.merge_from(tmp_path / "rank0.db")
        r1 = merged.merge_from(tmp_path / "rank1.db")
        assert (r0.inserted, r1.inserted, r1.identical, r1.value_mismatch) == (40, len(records) - 40, 10, 0)
        assert sorted(merged.query(), key=lambda r: r.key.as_tuple()) == sorted(records, key=lambda r: r.key.as_tuple())
        assert merged.completed_units() == {records[-1].key.unit(CORRUPT)} and r1.units == 1
        assert {run.origin for run in merged.runs()} == {str(tmp_path / "rank0.db"), str(tmp_path / "rank1.db")}
        again = merged.merge_from(tmp_path / "rank1.db")  # merging twice adds nothing
        assert (again.inserted, again.runs, len(merged.runs())) == (0, 0, 2)
    with open_results(tmp_path / "clash.db", create=True) as c:
        c.write(Record(records[0].key, 0.1, Protocol.make(**{**_fields(PGD), "seed": 1})))
        c.write(Record(key("toy:8-9"), 0.3, PGD))
    with open_results(tmp_path / "all.db", create=True) as merged:
        before = len(merged)
        with pytest.raises(ProtocolConflictError, match="seed 0 vs 1.*nothing was merged"):
            merged.merge_from(tmp_path / "clash.db")
        assert len(merged) == before and not merged.has(key("toy:8-9"))
        with pytest.raises(StoreError, match="into itself"):
            merged.merge_from(tmp_path / "all.db")


def test_open_errors(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(StoreNotFoundError, match=r"nasrobust evaluate \.\.\. --db"):
        open_results(missing, create=False)
    assert not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a nasrobust result store"):
        open_results(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="other tables"):
        open_results(other, create=True)
    assert sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone() == ("delete",), "left untouched"
    with pytest.raises(StoreError, match="is a directory"):
        open_results(tmp_path)
    newer = tmp_path / "newer.db"
    open_results(newer, create=True).close()
    sqlite3.connect(newer, isolation_level=None).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(StoreError, match="newer nasrobust"):
        open_results(newer)


def test_store_import_is_light():
    code = ("import sys, nasrobust.store, nasrobust.cli.store_cmd; "
            "heavy = {'pandas', 'torch', 'pyarrow'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------------------- kill-safety
WRITER = r"""
import sys
from nasrobust.store import open_results
from nasrobust.records import Protocol, Record, ResultKey
path, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
proto = Protocol.make(eps=0.5, norm="L2", steps=20, restarts=1, seed=0, n_examples=100, versions={"torch": "x"})
keys = [ResultKey("toy", f"toy:{i // 10}-{i // 10 + 1}", "w0", "mnist", "adversarial", "pgd_l2", 0.5, f"m{i % 10}")
        for i in range(n)]
with open_results(path, create=True) as store:
    done = store.done_keys(space="toy", protocol=proto)
    print("skipped", len(done), flush=True)
    import time
    for i, k in enumerate(keys):
        if k in done:
            continue
        store.write(Record(k, ((i * 0.6180339887) % 1.0), proto, created=1000.0 + i))
        print("committed", i, flush=True)
        time.sleep(delay)
"""


def _writer(path, n, delay=0.0):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(delay)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _snapshot(path):
    with open_results(path, create=False) as s:
        return {r.key: (r.value, r.protocol, r.created) for r in s.query()}


def test_sigkill_loses_nothing_committed_and_rerun_completes(tmp_path):
    n = 400
    db = tmp_path / "killed.db"
    proc = _writer(db, n, delay=0.002)
    committed = []
    for line in proc.stdout:
        if line.startswith("committed"):
            committed.append(int(line.split()[1]))
            if len(committed) == 60:
                os.kill(proc.pid, signal.SIGKILL)  # lands mid-write: the writer does not wait
                break
    tail, _ = proc.communicate(timeout=30)
    committed += [int(line.split()[1]) for line in tail.splitlines() if line.startswith("committed")]
    assert proc.returncode == -signal.SIGKILL
    assert len(committed) < n, "the writer finished before the kill; the test proves nothing"

    with open_results(db, create=False) as s:
        assert s.integrity_check() == "ok"
        stored = s.query()
    stored_index = {int(r.key.encoding.split(":")[1].split("-")[0]) * 10 + int(r.key.metric[1:]) for r in stored}
    assert set(committed) <= stored_index, "a record reported committed is missing after SIGKILL"
    assert len(stored_index) <= len(committed) + 1  # at most the one in flight

    rerun = _writer(db, n)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert f"skipped {len(stored_index)}" in out
    assert out.count("committed") == n - len(stored_index)

    clean = tmp_path / "clean.db"
    ok = _writer(clean, n)
    assert ok.wait(timeout=120) == 0
    assert _snapshot(db) == _snapshot(clean), "killed + resumed run differs from an uninterrupted one"


# ---------------------------------------------------------------------------- concurrency
RACER = r"""
import os, sys, time, warnings
from nasrobust.store import open_results, ProtocolConflictError
from nasrobust.records import Protocol, Record, ResultKey
path, rank, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
shared = Protocol.make(eps=0.5, norm="L2", steps=20, seed=0, versions={"torch": "x"})
mine = Protocol.make(eps=0.5, norm="L2", steps=20, seed=100 + rank, versions={"torch": "x"})
k = lambda enc, m: ResultKey("toy", enc, "w0", "mnist", "adversarial", "pgd_l2", 0.5, m)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
won = lost = 0
with open_results(path, busy_timeout=60, create=True) as store:   # all ranks create/open the file at once
    for i in range(40):
        store.write(Record(k(f"toy:{rank}-{i}", "acc"), i / 100, shared))          # disjoint
        store.write(Record(k(f"toy:shared-{i}", "acc"), i / 1000, shared))        # overlapping, same protocol
        if i % 4 == 0:
            try:                                                                  # overlapping, rival protocols
                store.write(Record(k(f"toy:contested-{i}", "acc"), rank / 10, mine))
                won += 1
            except ProtocolConflictError:
                lost += 1
    store.write_many([Record(k(f"toy:{rank}-batch", f"m{j}"), j / 10, shared) for j in range(20)])
print("won", won, "lost", lost, flush=True)
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    db, go, n_proc = tmp_path / "shared.db", tmp_path / "go", 4
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(db), str(r), str(go)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(n_proc)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
    won = sum(int(out.split()[-3]) for out, _ in outs)
    lost = sum(int(out.split()[-1]) for out, _ in outs)
    assert (won, lost) == (10, 10 * (n_proc - 1)), "each contested key has exactly one winner"
    with open_results(db, create=False) as s:
        assert s.integrity_check() == "ok"
        assert len(s) == n_proc * 40 + 40 + 10 + n_proc * 20
        shared = {r.key.encoding: r.value for r in s.query(metric="acc") if "shared" in r.key.encoding}
        assert shared == {f"toy:shared-{i}": i / 1000 for i in range(40)}
        contested = s.query(metric="acc", noise="pgd_l2")
        contested = [r for r in contested if "contested" in r.key.encoding]
        assert len(contested) == 10
        assert all(math.isclose(r.value, (r.protocol.seed - 100) / 10) for r in contested), \
            "a contested row holds the winner's value with the winner's protocol"
        assert len(s.runs()) == n_proc
