"""benchmarks/robust_overfitting.py: its subset, best-epoch and verdict rules on known numbers, and its argument
errors (one line, exit 2, before any compute)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCH))  # it imports cka_robust / _training_pair as the scripts do
    try:
        spec = importlib.util.spec_from_file_location("robust_overfitting_bench", BENCH / "robust_overfitting.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_balanced_indices_takes_the_first_of_each_class():
    bench = _load()
    labels = np.repeat(np.arange(10), 5)[::-1]  # classes 9..0, five each
    idx = bench.balanced_indices(labels, 20)
    assert idx == sorted(idx) and len(idx) == 20
    assert np.bincount(labels[idx], minlength=10).tolist() == [2] * 10
    for c in range(10):  # the first two positions of each class
        assert [i for i in idx if labels[i] == c] == np.flatnonzero(labels == c)[:2].tolist()
    with pytest.raises(ValueError):
        bench.balanced_indices(labels, 25)  # not a multiple of 10
    with pytest.raises(ValueError):
        bench.balanced_indices(labels, 60)  # six per class, only five


def test_best_epoch_is_one_based_first_of_ties():
    bench = _load()
    assert bench.best_epoch([0.5, 0.7, 0.7, 0.6]) == 2
    assert bench.best_epoch([0.9]) == 1


def _trend(spearman_low, dms, dms_low, dms_high):
    return {"spearman": {"value": spearman_low + 0.1, "low": spearman_low, "high": 1.0},
            "deep_minus_shallow": {"value": dms, "low": dms_low, "high": dms_high}}


def test_depth_verdict_needs_a_trend_and_more_than_the_control():
    bench = _load()
    control = _trend(0.5, 0.010, 0.008, 0.012)
    assert bench.depth_verdict(_trend(0.4, 0.030, 0.025, 0.035), control) == (True, True)
    assert bench.depth_verdict(_trend(-0.1, 0.030, 0.025, 0.035), control) == (False, True)
    assert bench.depth_verdict(_trend(0.4, 0.013, 0.011, 0.015), control) == (True, False)  # intervals overlap


@pytest.mark.parametrize("overfit, holds, expected", [
    ({0: False, 1: False}, {0: False, 1: False}, "cannot be tested here"),
    ({0: True, 1: True}, {0: True, 1: True}, "holds"),
    ({0: True, 1: False}, {0: True, 1: False}, "mixed"),  # holds needs overfitting in every seed
    ({0: True, 1: True}, {0: False, 1: False}, "does not hold"),
    ({0: True, 1: False}, {0: False, 1: False}, "does not hold"),
    ({0: True, 1: True}, {0: True, 1: False}, "mixed"),
])
def test_summary_rule(overfit, holds, expected):
    assert _load().summary(overfit, holds) == expected


def test_run_key_names_schedule_and_lr_only_where_not_the_presets():
    bench = _load()
    assert bench.run_key(500, 40, 0.1, 3, "cosine", 0.05, 0.05) == "n500-e40-eps0.1-k3"  # the first runs' folders
    assert bench.run_key(500, 60, 0.1, 3, "step", 0.1, 0.05) == "n500-e60-eps0.1-k3-step-lr0.1"
    assert bench.run_key(500, 60, 0.1, 3, "step", 0.05, 0.05) == "n500-e60-eps0.1-k3-step"
    assert bench.run_key(500, 60, 0.1, 3, "cosine", 0.1, 0.05) == "n500-e60-eps0.1-k3-lr0.1"


@pytest.mark.parametrize("args, message", [
    (["--train-size", "25"], "--train-size must be a multiple of 10 in 10..4000, got 25"),
    (["--epochs", "1"], "--epochs must be at least 2, got 1"),
    (["--lr", "0"], "--lr must be positive, got 0.0"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    r = subprocess.run([sys.executable, str(BENCH / "robust_overfitting.py"), *args, "--md", str(tmp_path / "r.md")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(message)
    assert not (tmp_path / "r.md").exists()
