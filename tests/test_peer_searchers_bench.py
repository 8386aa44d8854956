"""benchmarks/peer_searchers.py: seeded and deterministic, its budgets are prefixes of one run, no overwrite."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import naslib_harness  # noqa: E402


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its sibling _report
    return importlib.import_module("peer_searchers")


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    md = tmp_path / "peer_searchers.md"
    md.write_text("measured\n")
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--tiny", "--md", str(md)])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err
    assert md.read_text() == "measured\n"


@pytest.mark.skipif(not naslib_harness.available(), reason=f"NASLib source not at {naslib_harness.ROOT}")
def test_study_is_deterministic_and_budgets_are_prefixes():
    """Two runs give identical numbers (CPU times aside); the best at B=6 of a B=12 run equals a B=6 run."""
    bench = _bench()
    names = ("random", "evolution", "local", "naslib-rs", "naslib-re", "naslib-ls")

    def once(budgets):
        with naslib_harness.naslib_modules() as mods:
            obj = bench.objectives(["linear"])[0]
            obj.searchers = names
            res = bench.study([obj], 2, budgets, 2, budgets[-1], mods, lambda msg: None)
        return {n: (r["best"], r["distinct"], r["calls"]) for n, r in res["nb201 linear"]["rows"].items()}

    first, again, short = once([6, 12]), once([6, 12]), once([6])
    assert first == again
    for n in names:
        assert first[n][0][6] == short[n][0][6], n
        assert first[n][1] == [12, 12] and short[n][1] == [6, 6]
        assert max(first[n][0][12]) <= bench.objectives(["linear"])[0].optimum + 1e-9
    assert not np.allclose(first["random"][0][12], first["local"][0][12])  # the searchers differ


@pytest.mark.skipif(not naslib_harness.available(), reason=f"NASLib source not at {naslib_harness.ROOT}")
def test_runs_cache_resumes_and_merge_keeps_other_rows(tmp_path):
    """A second study reads every run from --runs (running nothing); --merge puts new rows over old ones;
    BANANAS (one MLP) evaluates exactly NPENAS' architectures."""
    bench = _bench()
    names = ("random", "naslib-rs", "naslib-npenas")
    with naslib_harness.naslib_modules() as mods:
        obj = bench.objectives(["linear"])[0]
        first_log: list[str] = []
        first = bench.study([obj], 2, [6, 12], 2, 12, mods, first_log.append, only=names,
                            cache=bench.RunCache(str(tmp_path / "runs.json")))
        same = bench.bananas_identity([obj], 2, 12, 12, mods, bench.RunCache(str(tmp_path / "runs.json")), first_log.append)
    assert sum(m.startswith("  ") for m in first_log) == 3 * 2 + 2  # each run once, then the 2 BANANAS runs
    assert same == {"nb201 linear": {"seeds": 2, "budget": 12, "identical": True}}
    again_log: list[str] = []
    again = bench.study([obj], 2, [6, 12], 2, 12, {}, again_log.append, only=names,
                        cache=bench.RunCache(str(tmp_path / "runs.json")))  # no NASLib modules: all cached
    assert not [m for m in again_log if m.startswith("  ")]
    assert json_rows(again) == json_rows(first) and set(first["nb201 linear"]["rows"]) == set(names)

    def doc(res, argv):
        return {"results": json_rows(res), "cpu": {"nb201 linear": {n: 0.0 for n in res["nb201 linear"]["rows"]}},
                "diagnostics": None, "bananas_identity": {}, "provenance": [{"argv": argv, "wall_min": 0.0,
                                                                            "load": ["0", "0"], "rows": "x"}]}

    newer = {**first["nb201 linear"], "rows": {"naslib-rs": {**first["nb201 linear"]["rows"]["naslib-rs"], "calls": [0, 0]}}}
    merged = bench.merge(doc(first, ["a"]), doc({"nb201 linear": newer}, ["b"]))
    rows = merged["results"]["nb201 linear"]["rows"]
    assert set(rows) == set(names) and rows["naslib-rs"]["calls"] == [0, 0]
    assert rows["random"] == json_rows(first)["nb201 linear"]["rows"]["random"]
    assert [p["argv"] for p in merged["provenance"]] == [["a"], ["b"]]
    text = "\n".join(bench.markdown(merged))
    assert text.index("| random |") < text.index("| naslib-rs |") < text.index("| naslib-npenas |")


def json_rows(res):
    import json

    return json.loads(json.dumps({k: {**o, "rows": {n: {f: v for f, v in r.items() if f != "cpu"}
                                                    for n, r in o["rows"].items()}} for k, o in res.items()}))


def test_darts_snip_objective_is_deterministic_and_varies():
    """``darts-snip``: SNIP on a 4-channel 5-cell darts network, the same value from a fresh metric, no optimum."""
    bench = _bench()
    obj = bench.objectives(["darts-snip"])[0]
    assert (obj.name, obj.space.name, obj.optimum) == ("darts snip", "darts", None)
    assert "channels=4" in obj.metric.name and "layers=5" in obj.metric.name and obj.metric.name.startswith("proxy:snip")
    archs = obj.space.sample(2, seed=3)
    first = [obj.metric.score(a) for a in archs]
    fresh = bench.objectives(["darts-snip"])[0].metric  # its own cache: computed again
    assert [fresh.score(a) for a in archs] == first
    assert first[0] != first[1] and all(np.isfinite(first))


def test_unknown_objective_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit, match="darts-snip"):
        _bench().objectives(["nope"])
    with pytest.raises(SystemExit) as exit_:  # the command line: exit 2, one line, before any compute
        _bench().main(["--objectives", "linear,nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown objective(s) ['nope']; valid: ") and "darts-snip" in err and "\n" not in err
