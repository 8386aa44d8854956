"""``nasrobust query`` / ``export``: tables, JSON, exports and one-line user errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nasrobust.cli.main import main
from nasrobust.records import Protocol, Record, ResultKey
from nasrobust.store import open_results

REPO = Path(__file__).resolve().parents[1]
PGD = Protocol.make(eps=8 / 255, norm="Linf", steps=20, restarts=1, seed=0, n_examples=500)
NAT = Protocol.make(seed=0, n_examples=500, params={"reference": "alexnet"})
ENCODINGS = ["toy:resnet-a", "toy:resnet-b", "toy:mobile-c"]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "results.db"
    with open_results(path, create=True) as store:
        for i, enc in enumerate(ENCODINGS):
            k = lambda suite, noise, level, metric, ds="cifar10": ResultKey("toy", enc, "sn-ep90", ds, suite, noise, level, metric)  # noqa: E731
            store.write_many([
                Record(k("clean", "none", 0.0, "accuracy"), 0.93 - i / 100, NAT),
                Record(k("adversarial", "pgd_linf", 8 / 255, "accuracy"), 0.41 - i / 100, PGD),
                Record(k("adversarial", "pgd_linf", 8 / 255, "ar"), 0.44 - i / 100, PGD),
                Record(k("natural", "gaussian_noise", 3.0, "accuracy"), 0.61 - i / 100, NAT),
            ])
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_query_table(db, capsys):
    code, out, err = run(capsys, "query", "--db", str(db), "--arch", "toy:resnet-b")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["toy:resnet-b", "weights", "sn-ep90", "dataset", "cifar10"]
    assert lines[1].split() == ["suite", "noise", "level", "metric", "value", "eps", "norm", "steps", "restarts",
                                "seed", "n_examples"]
    rows = [line.split() for line in lines[3:]]
    assert len(rows) == 4
    assert ["adversarial", "pgd_linf", "0.03137", "ar", "0.43", "0.03137", "Linf", "20", "1", "0", "500"] in rows
    assert ["natural", "gaussian_noise", "3", "accuracy", "0.6", "0", "500"] in rows


def test_query_filters_and_json(db, capsys):
    code, out, _ = run(capsys, "query", "--db", str(db), "--arch", "resnet-a", "--suite", "adversarial",
                       "--metric", "ar", "--json")
    assert code == 0
    [rec] = json.loads(out)
    assert rec["value"] == 0.44 and rec["level"] == 8 / 255 and rec["protocol"]["steps"] == 20
    assert rec["protocol"]["hash"] == PGD.hash and rec["encoding"] == "toy:resnet-a"


def test_export_csv_and_parquet(db, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    code, out, _ = run(capsys, "export", "--db", str(db), "--out", str(tmp_path / "all.csv"))
    assert code == 0 and "wrote 12 records" in out
    frame = pd.read_csv(tmp_path / "all.csv")
    assert sorted(frame["encoding"].unique()) == sorted(ENCODINGS)
    assert frame.loc[(frame.encoding == "toy:mobile-c") & (frame.metric == "ar"), "value"].item() == 0.42
    code, out, _ = run(capsys, "export", "--db", str(db), "--format", "parquet", "--out", str(tmp_path / "adv.pq"),
                       "--suite", "adversarial", "--arch", "toy:resnet-a")
    assert code == 0 and "wrote 2 records" in out
    assert len(pd.read_parquet(tmp_path / "adv.pq")) == 2


def test_missing_db_is_a_clear_error_and_not_created(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    code, _, err = run(capsys, "query", "--db", str(missing), "--arch", "toy:resnet-a")
    assert code == 2 and "nasrobust evaluate ... --db" in err and "Traceback" not in err
    assert not missing.exists()
    code, _, err = run(capsys, "export", "--db", str(missing), "--out", str(tmp_path / "x.csv"))
    assert code == 2 and not missing.exists()


def test_unknown_arch_lists_store_and_close_match(db, capsys):
    code, _, err = run(capsys, "query", "--db", str(db), "--arch", "toy:resnet-bb")
    assert code == 2
    assert "holds 3 architecture(s) of space toy" in err and "Did you mean 'toy:resnet-b'?" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "query", "--db", str(db), "--arch", "toy:resnet-a", "--suite", "system")
    assert code == 2 and "has 4 record(s)" in err and "suite=system" in err
    code, _, err = run(capsys, "export", "--db", str(db), "--out", "unused.csv", "--metric", "wcar")
    assert code == 2 and "nothing written" in err


def test_cli_end_to_end_no_traceback(db, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "nasrobust", "query", "--db", str(db), "--arch", "toy:mobile-c"],
                        cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "toy:mobile-c" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "nasrobust", "query", "--db", str(tmp_path / "none.db"),
                          "--arch", "toy:x"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--db" in bad.stderr
