"""``nasrobust evaluate --json``: one JSON object on stdout, and a rerun reports its units as skipped."""

from __future__ import annotations

import json

from nasrobust.cli.main import main


def _evaluate(sn, db, cache, *extra):
    return main(["evaluate", "--supernet", str(sn), "--num-archs", "1", "--suites", "natural,system",
                 "--suite-option", "natural.corruptions=contrast", "--suite-option", "natural.severities=1",
                 "--suite-option", "natural.fp_kinds=", "--n-examples", "20", "--recalib-images", "100",
                 "--db", str(db), "--cache-dir", str(cache), "--no-progress", *(extra or ("--workers", "1"))])


def test_json_summary_and_skipped_units(tmp_path, capsys):
    from nasrobust.train import Recipe
    from nasrobust.train.api import train_supernet

    train_supernet("nb201", "digits", Recipe(epochs=1, batch_size=64, lr=0.05, bn_recalib_images=100), tmp_path / "sn",
                   progress=False, channels=4, cells_per_stage=1)
    capsys.readouterr()
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c", "--json", "--workers", "2") == 0
    first = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    n = first["models"]  # the sampled subnet and the mCE reference (the largest subnet)
    # two worker processes: each unit counted once, by this process or as done by the other one
    assert first["archs"] == 1 and n == 2 and first["units_skipped_complete"] == 0
    assert first["units_done"] + first["units_done_by_other_process"] == 2 * n
    assert all(c["done"] + c["done_by_other_process"] == n for c in first["suites"].values())
    assert first["store"] == str(tmp_path / "r.db") and first["dataset"] == "digits"
    assert first["weights_id"] and first["wall_seconds"] > 0
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c", "--json", "--workers", "1") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["units_done"] == 0 and again["units_skipped_complete"] == 2 * n
    assert again["weights_id"] == first["weights_id"]
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c") == 0
    out = capsys.readouterr().out
    assert "0 unit(s) evaluated by this process, 0 by other worker processes sharing the store, 4 skipped (already complete in the store)" in out


def _snapshot(db, cache):
    """Everything an evaluation could change: each stored record (value, protocol, write time), the
    completed units, and the files of the suites' data cache."""
    from nasrobust.store import open_results

    with open_results(db) as store:
        records = sorted((r.key.as_tuple(), r.value, r.protocol.hash, r.created) for r in store.query())
        units = store.completed_units()
    return records, units, sorted(p.relative_to(cache) for p in cache.rglob("*"))


def test_protocol_conflict_is_found_before_compute_and_its_advice_works(tmp_path, capsys):
    from nasrobust.store import open_results
    from nasrobust.train import Recipe
    from nasrobust.train.api import train_supernet

    train_supernet("nb201", "digits", Recipe(epochs=1, batch_size=64, lr=0.05, bn_recalib_images=100), tmp_path / "sn",
                   progress=False, channels=4, cells_per_stage=1)
    db, cache = tmp_path / "r.db", tmp_path / "c"
    assert _evaluate(tmp_path / "sn", db, cache) == 0
    capsys.readouterr()
    before = _snapshot(db, cache)
    variant = ["--n-examples", "30"]  # the same keys under another protocol
    assert _evaluate(tmp_path / "sn", db, cache, *variant) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err  # one line
    assert "under another protocol" in err and "n_examples 20 vs 30" in err and "nothing was computed" in err
    assert "--overwrite-protocol" in err and "--db OTHER.db" in err
    # nothing computed: no record written or rewritten, no unit marked, no n=30 perturbed data prepared in the cache
    assert _snapshot(db, cache) == before

    # advice 1, followed: another store keeps both protocols
    assert _evaluate(tmp_path / "sn", tmp_path / "other.db", cache, *variant) == 0
    capsys.readouterr()
    # advice 2, followed: the stored protocol is replaced and every unit re-scored under the new one
    assert _evaluate(tmp_path / "sn", db, cache, *variant, "--overwrite-protocol", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["units_done"] == 4 and summary["units_skipped_complete"] == 0
    records, units, _ = _snapshot(db, cache)
    with open_results(tmp_path / "other.db") as other:
        wanted = sorted((r.key.as_tuple(), r.value, r.protocol.hash) for r in other.query())
    assert [r[:3] for r in records] == wanted  # same keys, the new values and protocol, no stale n=20 record
    assert len(records) == len(before[0]) and len(units) == 4 and units.isdisjoint(before[1])
    # the store now holds the new protocol only: a plain rerun of it skips everything, the old one conflicts
    assert _evaluate(tmp_path / "sn", db, cache, *variant, "--json") == 0
    assert json.loads(capsys.readouterr().out)["units_skipped_complete"] == 4
    assert _evaluate(tmp_path / "sn", db, cache) == 2
    assert "n_examples 30 vs 20" in capsys.readouterr().err
