"""``nasrobust analyze`` and ``nasrobust cka`` end to end: files, reproducibility, user errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nasrobust import checkpoint
from nasrobust.analysis.correlation import correlations
from nasrobust.analysis.table import build_table
from nasrobust.cli.main import main
from nasrobust.data import load_dataset
from nasrobust.space import get_space
from nasrobust.store import open_results
from nasrobust.supernet import build_supernet
from test_analysis_store import planted_store

FAST = ["--n-boot", "50", "--methods", "spearman,kendall", "--covariates", "params", "--surrogate", "ridge",
        "--metrics", "adversarial/*", "--metrics", "system/*"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "results.db"
    planted_store(path)
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_analyze_writes_a_self_contained_reproducible_report(db, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["analyze", "--db", str(db), "--space", "bignas", "--out", str(out), *FAST]) == 0
    assert "report.html" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    # HTML embeds every figure; Markdown links the PNG files written beside it
    assert html.count("data:image/png;base64,") == len(list((out / "figures").glob("*.png"))) >= 6
    assert 'src="figures/' not in html
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", md):
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bignas-small" in md and "no variance" in md and "Benjamini-Hochberg" in md
    assert "nasrobust analyze --db" in md  # the command that reproduces it
    # the CSV holds exactly what the Python API computes from the same store
    table = build_table(db, "bignas", metrics=["adversarial/*", "system/*"])
    api = correlations(table, methods=("spearman", "kendall"), n_boot=50, seed=0)
    csv = pd.read_csv(out / "tables" / "correlations.csv")
    np.testing.assert_array_equal(csv["r"].to_numpy(), api["r"].to_numpy())
    np.testing.assert_array_equal(csv["ci_low"].to_numpy(), api["ci_low"].to_numpy())
    assert list(csv["metric"]) == list(api["metric"])
    for name in ("table", "partial_correlations", "effects_tests", "ranking_agreement", "surrogates"):
        assert (out / "tables" / f"{name}.csv").exists()
    # same store + same command = byte-identical files
    first = _files(out)
    assert main(["analyze", "--db", str(db), "--space", "bignas", "--out", str(out), *FAST]) == 2  # a report is there
    assert main(["analyze", "--db", str(db), "--space", "bignas", "--out", str(out), *FAST, "--force"]) == 0
    assert _files(out) == first


def test_analyze_user_errors_are_one_line(db, tmp_path, capsys):
    empty = tmp_path / "empty.db"
    open_results(empty, create=True).close()
    assert main(["analyze", "--db", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "holds no results" in capsys.readouterr().err
    assert main(["analyze", "--db", str(db), "--space", "nb201", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no results for space 'nb201'" in err and "bignas-small" in err and "Traceback" not in err
    assert main(["analyze", "--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "r")]) == 2
    assert "no result store" in capsys.readouterr().err
    assert main(["analyze", "--db", str(db), "--metrics", "system/summary/*", "--out", str(tmp_path / "r")]) == 2
    assert "no variance" in capsys.readouterr().err


# ----------------------------------------------------------------------------- cka
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A stand-alone and a supernet checkpoint of bignas-small on mnist5k (freshly initialised weights)."""
    root = tmp_path_factory.mktemp("ckpt")
    info = load_dataset("mnist5k").info
    space = get_space("bignas-small")
    arch = space.sample(1, seed=0)[0]
    torch.manual_seed(0)
    from nasrobust.models import ImageClassifier

    net = ImageClassifier(space.build(arch, num_classes=10, input_size=28), space.resolution(arch, 28), info.mean, info.std)
    meta = checkpoint.CheckpointMeta(kind="standalone", space=space.name, arch=arch.encoding, dataset=info.__dict__,
                                     recipe={})
    standalone = checkpoint.save(root / "net", meta, net.state_dict())
    sup = build_supernet(space.name, 28, info.mean, info.std)
    smeta = checkpoint.CheckpointMeta(kind="supernet", space=space.name, dataset=info.__dict__, recipe={}, supernet={})
    supernet = checkpoint.save(root / "super", smeta, sup.state_dict())
    return standalone, supernet, sup.supernet.smallest()


def test_cka_cli_between_a_checkpoint_and_a_recalibrated_subnet(checkpoints, tmp_path, capsys):
    standalone, supernet, sub = checkpoints
    out = tmp_path / "cka.png"
    argv = ["cka", "--a", str(standalone.parent), "--b", f"{supernet.parent}#{sub.encoding}", "--n-examples", "60",
            "--batch-size", "30", "--recalib-images", "60", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"
    mat = pd.read_csv(out.with_suffix(".csv"), index_col=0)
    assert mat.shape[0] > 3 and mat.shape[1] > 3 and np.all(mat.to_numpy() <= 1 + 1e-9)
    assert (tmp_path / "cka_self_a.csv").exists() and "block structure of net" in text
    assert f"super#{sub.encoding}" in text
    # a model against itself: unit diagonal (the same --out again needs --force)
    assert main(["cka", "--a", str(standalone), "--n-examples", "40", "--batch-size", "20", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["cka", "--a", str(standalone), "--n-examples", "40", "--batch-size", "20", "--out", str(out),
                 "--force"]) == 0
    self_mat = pd.read_csv(out.with_suffix(".csv"), index_col=0).to_numpy()
    np.testing.assert_allclose(np.diag(self_mat), 1.0, atol=1e-9)


def test_cka_cli_errors(checkpoints, tmp_path, capsys):
    standalone, supernet, _ = checkpoints
    assert main(["cka", "--a", str(tmp_path / "nothing"), "--out", str(tmp_path / "c.png")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["cka", "--a", str(standalone), "--out", str(tmp_path / "c.txt")]) == 2
    assert ".png" in capsys.readouterr().err
    assert main(["cka", "--a", f"{supernet}#", "--out", str(tmp_path / "c.png")]) == 2
    assert "encoding after '#'" in capsys.readouterr().err
