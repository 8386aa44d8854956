"""`nasrobust study --standalone-check N`: N scored subnets fine-tuned from the supernet, scored with the study's
protocol under their own weights ids, recorded as kind = "standalone" runs, compared in report/replication.md."""

from __future__ import annotations

import tomllib

import pytest

from nasrobust.cli.main import main
from nasrobust.errors import NasRobustError
from nasrobust.io import read_records
from nasrobust.store import open_results
from nasrobust.study import CPU_PROTOCOL, FULL_PROTOCOL, StudyConfig, standalone_indices
from tests.test_study import TINY


def test_checked_subnets_are_evenly_spaced_and_distinct():
    assert standalone_indices(5, 3) == [0, 2, 4]
    assert standalone_indices(100, 3) == [0, 49, 99]
    assert standalone_indices(7, 1) == [0] and standalone_indices(7, 0) == []
    for evaluated in range(1, 30):
        for n in range(1, evaluated + 1):
            idx = standalone_indices(evaluated, n)
            assert len(set(idx)) == n and idx == sorted(idx) and idx[0] == 0 and idx[-1] <= evaluated - 1


def test_standalone_check_defaults_to_the_protocols_and_is_bounded():
    assert CPU_PROTOCOL.standalone_check == 3 and FULL_PROTOCOL.standalone_check == 20
    assert StudyConfig(space="nb201", n=50).resolved(has_gpu=False).standalone_check == 3
    assert StudyConfig(space="nb201", n=50).resolved(has_gpu=True).standalone_check == 20
    assert StudyConfig(space="nb201", n=2).resolved(has_gpu=False).standalone_check == 2  # capped by the subnets
    assert StudyConfig(space="nb201", n=50, standalone_check=0).resolved(has_gpu=False).standalone_check == 0
    with pytest.raises(NasRobustError, match="--standalone-check 6 exceeds the 5 evaluated subnets; pass "
                                             "--standalone-check 5 or less"):
        StudyConfig(space="nb201", n=50, eval_archs=5, standalone_check=6).resolved(has_gpu=False)
    with pytest.raises(NasRobustError, match=r"--standalone-check must be >= 0 \(0 turns the check off\), got -1"):
        StudyConfig(space="nb201", n=50, standalone_check=-1).resolved(has_gpu=False)


def _rows_by_weights(db) -> dict[str, dict]:
    with open_results(db, create=False) as store:
        out: dict[str, dict] = {}
        for r in store.query():
            out.setdefault(r.key.weights_id, {})[(r.key.encoding, r.key.suite, r.key.noise, r.key.level,
                                                   r.key.metric)] = r.value
    return out


@pytest.mark.slow
def test_standalone_check_fine_tunes_scores_and_compares(tmp_path):
    out = tmp_path / "s"
    args = [*TINY, "--suites", "adversarial", "--n-examples", "20", "--standalone-check", "3", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(["study", *args]) == 0
    runs = tomllib.loads((out / "config.toml").read_text())["runs"]
    supernet = [r for r in runs if r["kind"] == "supernet"]
    alone = [r for r in runs if r["kind"] == "standalone"]
    assert len(supernet) == 1 and len(alone) == 3
    assert {(r["technique"], r["replicate"], r["seed"]) for r in alone} == {("standard", 0, 0)}
    assert len({r["weights_id"] for r in runs}) == 4

    # each fine-tuned model's rows: one architecture, the one the check chose, every metric the supernet scored for it
    archs = [rec["encoding"] for rec in read_records(out / "archs.jsonl")][:5]
    rows = _rows_by_weights(out / "results.db")
    checked = [{k[0] for k in rows[r["weights_id"]]} for r in alone]
    assert checked == [{archs[i]} for i in (0, 2, 4)]
    sup = rows[supernet[0]["weights_id"]]
    for r, i in zip(alone, (0, 2, 4)):
        theirs = {k[1:] for k in rows[r["weights_id"]]}
        assert theirs == {k[1:] for k in sup if k[0] == archs[i]}  # the same protocol, metric for metric
        assert any(rows[r["weights_id"]][k] != sup[k] for k in sup if k[0] == archs[i])  # other weights, other scores

    # the supernet's own report keeps to its rows; replication.md compares the two rankings
    report = (out / "report" / "report.md").read_text()
    assert "share an architecture with different weights" not in report
    md = (out / "report" / "replication.md").read_text()
    section = md.split("## Supernet vs stand-alone", 1)[1]
    assert "| standard | adversarial/clean/accuracy | 3 |" in section

    # a rerun reuses every fine-tune and scores nothing new
    ckpts = sorted((out / "standalone").glob("*/checkpoint.pt"))
    assert [p.parent.name for p in ckpts] == ["0000", "0002", "0004"]
    mtimes = [p.stat().st_mtime for p in ckpts]
    assert main(["study", "--config", str(out / "config.toml"), "--no-progress"]) == 0
    assert [p.stat().st_mtime for p in ckpts] == mtimes
    assert tomllib.loads((out / "config.toml").read_text())["runs"] == runs
    assert _rows_by_weights(out / "results.db") == rows

    # deterministic: the same command in a new folder fine-tunes to the same weights
    again = tmp_path / "again"
    assert main(["study", *args[:-4], "--out", str(again), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert tomllib.loads((again / "config.toml").read_text())["runs"] == runs
