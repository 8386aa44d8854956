"""benchmarks/findings.py: its refusal to overwrite, and its RobustART verdict rule on known numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("findings_bench", REPO / "benchmarks" / "findings.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    md = tmp_path / "findings.md"
    md.write_text("measured\n")
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--md", str(md), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err
    assert md.read_text() == "measured\n"


def _write(store, wid: str, gain: float) -> None:
    from nasrobust.records import Protocol, Record, ResultKey

    enc = "bignas-small:r24-s8k3-d3w8k3e1-d3w16k3e1-d3w32k3e1-d3w48k3e1"
    rows = [("adversarial", "clean", 0.0, "accuracy", 0.97), ("adversarial", "pgd_linf", 0.0, "accuracy", 0.97),
            ("adversarial", "pgd_linf", 0.1, "accuracy", 0.3), ("adversarial", "fgsm", 0.1, "accuracy", 0.5),
            ("natural", "mean_corruption", 0.0, "accuracy", 0.6), ("natural", "fog", 1.0, "accuracy", 0.7),
            ("natural", "fog", 3.0, "accuracy", 0.5), ("system", "summary", 96.0, "mean", 0.6),
            ("system", "jpeg/pil/pil_box", 96.0, "accuracy", 0.6), ("system", "jpeg/pil/pil_lanczos", 96.0, "accuracy", 0.6)]
    store.write_many([Record(ResultKey.of(enc, weights_id=wid, dataset="mnist5k", suite=suite, noise=noise, level=level,
                                          metric=metric), value + (gain if noise != "clean" else 0.0),
                             Protocol.make(seed=0)) for suite, noise, level, metric, value in rows])


@pytest.mark.parametrize("gain, verdict", [(0.3, "**reproduced**"), (0.0, "**not reproduced at this scale** (no improvement"),
                                           (-0.3, "**not reproduced** (AT is worse)")])
def test_robustart_verdict_rule(tmp_path, gain, verdict):
    from nasrobust.store import open_results

    bench = _bench()
    wids = {(name, s): f"{name}{s}" for s in bench.SEEDS for name in ("standard", "pgd-at")}
    with open_results(tmp_path / "r.db", create=True) as store:
        for (name, _), wid in wids.items():
            _write(store, wid, gain if name == "pgd-at" else 0.0)
        rows, verdicts = bench.robustart(store, wids, n=100)
    assert len(rows) == len(bench.SUITES)
    for row in rows:
        assert row.split(" | ")[-1].startswith(verdict), row
        assert f"{gain * 100:+.1f} [{gain * 100:+.1f}, {gain * 100:+.1f}]" in row  # every condition moved by `gain`


def test_overfitting_row_cites_robust_overfitting_md_when_it_exists(tmp_path):
    bench = _bench()
    md = tmp_path / "robust_overfitting.md"
    assert bench.overfit_cited(md) is None
    cka_line = "- Deeper layers are hit hardest by robust overfitting: **cannot be tested here**: no seed shows it"
    assert bench.overfit_row(cka_line, None) == "**cannot be tested here**: no robust overfitting occurred (cka_robust.md)"
    md.write_text("# r\n\ntext\n\n**Summary verdict:** deeper layers are hit hardest: **does not hold** (why).\n")
    verdict = bench.overfit_cited(md)
    assert verdict == "deeper layers are hit hardest: **does not hold** (why)."
    assert bench.overfit_row(cka_line, verdict) == f"{verdict} — see 2 (robust_overfitting.md)"


def test_robarch_cited_quotes_every_run_under_its_heading(tmp_path):
    bench = _bench()
    md = tmp_path / "robarch_factors.md"
    md.write_text("# r\n\n| factor | reference | variant |\n|---|---|---|\n| a | x | y |\n\n## Results (1 epoch)\n\n"
                  "| factor | seed | clean |\n|---|---|---|\n| a | 0 | 0.2 |\n\n## Verdicts (1 epoch)\n\n"
                  "| factor | published direction | radius |\n|---|---|---|\n| a | up | holds |\n\n"
                  "## Results (2 epochs)\n\n| factor | seed | clean |\n|---|---|---|\n| a | 0 | 0.9 |\n\n"
                  "## Verdicts (2 epochs)\n\n| factor | published direction | radius |\n|---|---|---|\n"
                  "| a | up | inconclusive |\n\n**Summary verdict:** a **inconclusive** (2 epochs).\n")
    verdict, body = bench.robarch_cited(md)
    assert verdict == "a **inconclusive** (2 epochs)."
    labels = [line for line in body if line.startswith("*")]
    assert labels == ["*Results (1 epoch):*", "*Results (2 epochs):*", "*Verdicts (1 epoch):*", "*Verdicts (2 epochs):*"]
    assert body[0] == "| factor | reference | variant |" and "| a | 0 | 0.9 |" in body and "| a | up | holds |" in body
    assert bench.robarch_cited()[0]  # the committed robarch_factors.md parses
