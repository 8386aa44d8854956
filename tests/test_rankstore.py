"""Multi-node result stores: one file per rank merged by rank 0, and ``nasrobust merge`` with protocol checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import closing

import pytest

from nasrobust import decode
from nasrobust.cli.main import main
from nasrobust.records import Protocol, Record, ResultKey, WorkUnit
from nasrobust.rankstore import RankStore, merge_rank_files, open_for_ranks, rank_files, rank_path
from nasrobust.store import ProtocolConflictError, StoreError, open_results

P0 = Protocol.make(eps=0.1, norm="Linf", steps=10, restarts=1, seed=0, n_examples=100)
P1 = Protocol.make(eps=0.1, norm="Linf", steps=10, restarts=1, seed=1, n_examples=100)
A = "nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
B = "nb201:|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def key(enc: str, metric: str = "accuracy", noise: str = "pgd_linf") -> ResultKey:
    return ResultKey("nb201", enc, "w", "mnist5k", "adversarial", noise, 0.1, metric)


def table(db) -> dict:
    with open_results(db, readonly=True) as store:
        return {r.key.as_tuple(): (r.value, r.protocol.hash) for r in store.query()}


def test_a_rank_reads_the_main_snapshot_and_writes_only_its_own_file(tmp_path):
    db = tmp_path / "results.db"
    with open_results(db, create=True) as main_store:
        main_store.write(Record(key(A), 0.5, P0))
        main_store.checkpoint()
    before = db.read_bytes()
    with closing(RankStore(db, 1)) as store:
        assert store.path == rank_path(db, 1) == tmp_path / "results.rank1.db"
        assert store.has(key(A)) and [r.value for r in store.query(A)] == [0.5]
        store.write(Record(key(B), 0.3, P0))
        unit = WorkUnit.of(decode(A), weights_id="w", dataset="mnist5k", suite="adversarial", protocol=P0)
        assert store.complete_unit(unit) == 1  # the main store's record of the unit is copied in first
        assert store.is_complete(unit)
        with pytest.raises(ProtocolConflictError, match="seed 0 vs 1"):
            store.write(Record(key(A), 0.7, P1))  # found before more work, not at the merge
    assert db.read_bytes() == before  # the main store is never written by a rank
    with open_results(db) as main_store:
        assert merge_rank_files(main_store, db) == 2 - 1  # B is new; A's copy is already there
        assert main_store.is_complete(unit)
    assert rank_files(db) == [] and set(table(db)) == {key(A).as_tuple(), key(B).as_tuple()}


def test_a_conflicting_rank_file_is_kept_with_the_fix(tmp_path):
    db = tmp_path / "results.db"
    with open_results(db, create=True) as s:
        s.write(Record(key(A), 0.5, P0))
    with open_results(rank_path(db, 0), create=True) as s:
        s.write(Record(key(A), 0.6, P1))
    with open_results(db) as main_store, pytest.raises(StoreError, match=r"results.rank0.db is kept.*nasrobust merge"):
        merge_rank_files(main_store, db)
    assert rank_path(db, 0).exists() and table(db)[key(A).as_tuple()][0] == 0.5


def test_a_single_process_merges_what_a_killed_torchrun_job_left(tmp_path):
    db = tmp_path / "results.db"
    with open_results(rank_path(db, 3), create=True) as s:
        s.write(Record(key(B), 0.2, P0))
    store = open_for_ranks(db)
    try:
        assert store.has(key(B)) and rank_files(db) == []
    finally:
        store.close()


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch.distributed as dist
    from nasrobust import distributed
    from nasrobust.rankstore import finish_ranks, open_for_ranks, rank_path, share_records
    from nasrobust.records import Protocol, Record, ResultKey
    from nasrobust import decode

    db = Path(sys.argv[1])
    distributed.init()
    rank = distributed.rank()
    proto = Protocol.make(eps=0.1, norm="Linf", steps=10, restarts=1, seed=0, n_examples=100)
    ref = decode("nb201:|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    store = open_for_ranks(db)
    mine = rank_path(db, rank)
    assert store.path == mine and mine.exists(), store
    k = lambda enc, metric: ResultKey("nb201", enc, "w", "mnist5k", "natural", "contrast", 1.0, metric)
    if rank == 0:  # the mCE reference, scored by rank 0 first
        store.write(Record(k(ref.encoding, "accuracy"), 0.9, proto))
    share_records(store, ref, "w")
    assert [r.value for r in store.query(ref, weights_id="w")] == [0.9], rank  # every rank sees it
    encs = ["nb201:|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "nb201:|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "nb201:|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    for enc in distributed.shard(encs):
        store.write(Record(k(enc, "accuracy"), 0.5, proto))
    merged = finish_ranks(store)
    if rank == 0:
        print("RECORDS", len(merged), sorted({r.rank for r in merged.runs()}))
        merged.close()
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_gloo_processes_write_their_own_files_and_rank0_merges(tmp_path):
    db = tmp_path / "shared" / "results.db"
    db.parent.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(db)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RECORDS 4 [0, 1]" in proc.stdout  # 3 archs + the reference (written by both ranks, merged once)
    assert rank_files(db) == [] and sorted(p.name for p in db.parent.iterdir()) == ["results.db"]
    assert len(table(db)) == 4


def make(path, records):
    with open_results(path, create=True) as s:
        s.write_many(records)


def test_merge_command_combines_stores(tmp_path, capsys):
    make(tmp_path / "r0.db", [Record(key(A), 0.5, P0), Record(key(A, "ar"), 0.6, P0)])
    make(tmp_path / "r1.db", [Record(key(B), 0.4, P0), Record(key(A), 0.5, P0)])
    out = tmp_path / "all.db"
    assert main(["merge", str(out), str(tmp_path / "r0.db"), str(tmp_path / "r1.db")]) == 0
    text = capsys.readouterr().out
    assert "r1.db: 1 new record(s), 1 already in" in text and "3 records" in text
    assert set(table(out)) == {key(A).as_tuple(), key(A, "ar").as_tuple(), key(B).as_tuple()}


def test_merge_conflicts_are_reported_and_nothing_is_merged(tmp_path, capsys):
    make(tmp_path / "out.db", [Record(key(B), 0.1, P0)])
    make(tmp_path / "a.db", [Record(key(A), 0.5, P0)])
    make(tmp_path / "b.db", [Record(key(A), 0.7, P1), Record(key(A, "ar"), 0.2, P0)])
    before = (tmp_path / "out.db").read_bytes()
    assert main(["merge", str(tmp_path / "out.db"), str(tmp_path / "a.db"), str(tmp_path / "b.db")]) == 2
    err = capsys.readouterr().err
    assert "nothing merged" in err and "a.db vs" in err and "b.db (stored vs new: seed 0 vs 1)" in err
    assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "out.db").read_bytes() == before  # not even a.db, which alone would have merged
