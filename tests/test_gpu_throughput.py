"""benchmarks/gpu_throughput.py (issue 12 item 4): its CPU smoke mode writes every table of gpu.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SMOKE = ["--device", "cpu", "--threads", "1", "--subnets", "2", "--n-examples", "10", "--train-images", "128",
         "--recalib-images", "100", "--protocol", "cpu"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "gpu_throughput.py", *args], cwd=BENCH, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_smoke_mode_writes_the_report_tables(tmp_path):
    out = tmp_path / "gpu.md"
    done = _run([*SMOKE, "--out", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for heading in ("## Stages", "## Per-subnet time per suite", "## Projection"):
        assert heading in text
    for part in ("recalibration", "adversarial", "natural", "system", "certified"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {part} |"))
        assert float(row.split("|")[2]) > 0  # a measured mean time, not a placeholder
    assert "2 of 2 subnets" in text and "1,200 subnets on 10,000 images" in text
    again = _run([*SMOKE, "--out", str(out)])  # an existing report is kept without --force
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
