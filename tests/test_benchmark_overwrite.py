"""Every benchmark script that writes a report refuses to overwrite it without --force (exit 2, one line),
before it spends any compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

CASES = [  # script, the option that names the report
    ("eval_throughput.py", "--out"),
    ("gpu_throughput.py", "--out"),
    ("findings.py", "--md"),
    ("robarch_factors.py", "--md"),
    ("peer_searchers.py", "--md"),
    ("peer_searchers.py", "--json"),
    ("robust_overfitting.py", "--md"),
]


@pytest.mark.parametrize("script,option", CASES)
def test_existing_report_is_refused_without_force(tmp_path, script, option):
    report = tmp_path / "report.md"
    report.write_text("earlier result\n")
    r = subprocess.run([sys.executable, str(BENCH / script), option, str(report)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"error: {report} exists; pass --force to overwrite it or choose another path"
    assert report.read_text() == "earlier result\n"
