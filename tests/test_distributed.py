"""Two CPU processes under torchrun (gloo): data-parallel training and sharded evaluation."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from nasrobust import get_space

pytestmark = pytest.mark.slow


def torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "nasrobust", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_process_standalone_training(tmp_path):
    enc = get_space("bignas-small").smallest().encoding
    out = tmp_path / "run"
    proc = torchrun("train", "--space", "bignas", "--arch", enc, "--dataset", "digits", "--epochs", "2",
                    "--batch-size", "64", "--out", str(out), "--no-progress")
    assert "rank 1 of 2 joined the gloo process group" in proc.stderr
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 2  # one writer: rank 0
    assert float(rows[-1]["test_acc"]) > 0.5
    assert proc.stdout.count("checkpoint ") == 1
