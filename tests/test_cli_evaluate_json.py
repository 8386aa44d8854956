"""``nasrobust evaluate --json``: one JSON object on stdout, and a rerun reports its units as skipped."""

from __future__ import annotations

import json

from nasrobust.cli.main import main


def _evaluate(sn, db, cache, *extra):
    return main(["evaluate", "--supernet", str(sn), "--num-archs", "1", "--suites", "natural,system",
                 "--suite-option", "natural.corruptions=contrast", "--suite-option", "natural.severities=1",
                 "--suite-option", "natural.fp_kinds=", "--n-examples", "20", "--recalib-images", "100",
                 "--db", str(db), "--cache-dir", str(cache), "--no-progress", *extra])


def test_json_summary_and_skipped_units(tmp_path, capsys):
    from nasrobust.train import Recipe
    from nasrobust.train.api import train_supernet

    train_supernet("nb201", "digits", Recipe(epochs=1, batch_size=64, lr=0.05, bn_recalib_images=100), tmp_path / "sn",
                   progress=False, channels=4, cells_per_stage=1)
    capsys.readouterr()
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c", "--json") == 0
    first = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    n = first["models"]  # the sampled subnet and the mCE reference (the largest subnet)
    assert first["archs"] == 1 and n == 2 and first["units_done"] == 2 * n and first["units_skipped_complete"] == 0
    assert first["suites"]["natural"]["done"] == n and first["suites"]["system"]["done"] == n
    assert first["store"] == str(tmp_path / "r.db") and first["dataset"] == "digits"
    assert first["weights_id"] and first["wall_seconds"] > 0
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["units_done"] == 0 and again["units_skipped_complete"] == 2 * n
    assert again["weights_id"] == first["weights_id"]
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c") == 0
    out = capsys.readouterr().out
    assert "0 unit(s) evaluated, 4 skipped (already complete in the store)" in out


def test_protocol_conflict_advice_works_from_the_cli(tmp_path, capsys):
    from nasrobust.train import Recipe
    from nasrobust.train.api import train_supernet

    train_supernet("nb201", "digits", Recipe(epochs=1, batch_size=64, lr=0.05, bn_recalib_images=100), tmp_path / "sn",
                   progress=False, channels=4, cells_per_stage=1)
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c") == 0
    capsys.readouterr()
    variant = ["--n-examples", "30"]  # the same keys under another protocol
    assert _evaluate(tmp_path / "sn", tmp_path / "r.db", tmp_path / "c", *variant) == 2
    err = capsys.readouterr().err
    assert "different protocol" in err and "--db OTHER.db" in err and "Traceback" not in err
    assert _evaluate(tmp_path / "sn", tmp_path / "other.db", tmp_path / "c", *variant) == 0  # the advice, followed
