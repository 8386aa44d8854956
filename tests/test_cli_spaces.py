"""`nasrobust spaces | sample | describe`: outputs, determinism and user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from nasrobust.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_spaces_json(capsys):
    code, out, _ = run(capsys, "spaces", "--json")
    rows = {r["space"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["nb201"]["size"] == 6466
    assert {"bignas", "bignas-small", "ofa-mbv3", "robarch", "darts", "zoo"} <= set(rows)
    assert all(r["description"] for r in rows.values())


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_sample_writes_records_deterministically(capsys, tmp_path, suffix):
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    assert run(capsys, "sample", "--space", "bignas", "--n", "50", "--seed", "1", "--out", str(a))[0] == 0
    assert run(capsys, "sample", "--space", "bignas", "--n", "50", "--seed", "1", "--out", str(b))[0] == 0
    assert a.read_bytes() == b.read_bytes()
    if suffix == ".jsonl":
        recs = [json.loads(line) for line in a.read_text().splitlines()]
        assert len(recs) == 50 and set(recs[0]) == {"space", "encoding", "params", "flops", "factors"}
        assert len({r["encoding"] for r in recs}) == 50
    else:
        frame = pd.read_csv(a) if suffix == ".csv" else pd.read_parquet(a)
        assert len(frame) == 50 and "factors.resolution" in frame.columns


def test_sample_summary(capsys):
    code, out, _ = run(capsys, "sample", "--space", "nb201", "--n", "10")
    assert code == 0 and "sampled 10 distinct nb201" in out and "params" in out


def test_describe_named_point_json(capsys):
    code, out, _ = run(capsys, "describe", "--space", "robarch", "--arch", "robarch-s", "--json")
    rec = json.loads(out)
    assert code == 0 and abs(rec["params"] - 26e6) / 26e6 < 0.02


def test_describe_text_has_layers(capsys):
    code, out, _ = run(capsys, "describe", "--space", "darts", "--arch", "darts-v2")
    assert code == 0 and "layers:" in out and "factors:" in out and "3,349,342" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--space", "bignaz", "--n", "3"], "Valid spaces: bignas"),
        (["sample", "--space", "nb201", "--n", "6467"], "holds only 6466"),
        (["describe", "--space", "nb201", "--arch", "|nor_conv_9x9~0|+|"], "grammar"),
        (["describe", "--space", "bignas", "--arch", "nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "--space nb201"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, message):
    proc = subprocess.run([sys.executable, "-m", "nasrobust", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_n_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", "--space", "bignas", "--n", "0"])
    assert info.value.code == 2
