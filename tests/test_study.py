"""`nasrobust study`: one command from sampling to the report; resumes, reproduces from its config, shards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import sys

import pytest

from nasrobust.cli.main import main
from nasrobust.errors import NasRobustError
from nasrobust.store import open_results
from nasrobust.study import CPU_PROTOCOL, StudyConfig

# a tiny nb201 supernet on the bundled 8-px digits, every suite on a few images
TINY = [
    "--space", "nb201", "--num-archs", "8", "--dataset", "digits", "--epochs", "1", "--eval-archs", "5",
    "--supernet-option", "channels=4", "--supernet-option", "cells_per_stage=1", "--n-examples", "40",
    "--n-boot", "20", "--no-progress", "--replicates", "1", "--standalone-check", "0",
    "--suite-option", "natural.corruptions=contrast,gaussian_noise", "--suite-option", "natural.severities=1,5",
    "--suite-option", "system.decoders=pil,opencv", "--suite-option", "system.resizers=pil_bilinear,opencv_area",
    "--suite-option", "certified.n_examples=20", "--suite-archs", "certified=3",
]
SUITES = {"adversarial", "natural", "system", "certified"}


def rows(db):
    with open_results(db, create=False) as store:
        return {(r.key.encoding, r.key.suite, r.key.noise, r.key.level, r.key.metric): r.value for r in store.query()}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    cache = out.parent / "cache"
    assert main(["study", *TINY, "--out", str(out), "--cache-dir", str(cache)]) == 0
    return out


@pytest.mark.slow
def test_study_writes_every_stage(study):
    assert (study / "config.toml").exists() and (study / "archs.jsonl").exists()
    assert (study / "supernet" / "checkpoint.pt").exists()
    table = rows(study / "results.db")
    archs = {k[0] for k in table}
    assert len(archs) >= 5  # the 5 sampled subnets (+ the mCE reference, the largest)
    sampled = [json.loads(line)["encoding"] for line in (study / "archs.jsonl").read_text().splitlines()][:5]
    for i, arch in enumerate(sampled):  # --suite-archs certified=3: certified on the first 3 only
        assert {k[1] for k in table if k[0] == arch} == (SUITES if i < 3 else SUITES - {"certified"}), i
    for arch in archs - set(sampled):  # the reference: scored by the suites that read it, certified does not
        assert "natural" in {k[1] for k in table if k[0] == arch}
    assert tomllib.loads((study / "config.toml").read_text())["suite_archs"] == {"certified": 3}
    html = (study / "report" / "report.html").read_text()
    assert "spearman" in html.lower()
    assert (study / "report" / "tables").is_dir()


@pytest.mark.slow
def test_rerun_and_config_reproduce_without_new_work(study, capsys):
    ckpt = study / "supernet" / "checkpoint.pt"
    before, mtime = rows(study / "results.db"), ckpt.stat().st_mtime
    assert main(["study", "--config", str(study / "config.toml"), "--no-progress"]) == 0
    assert ckpt.stat().st_mtime == mtime  # the finished supernet is reused
    assert rows(study / "results.db") == before  # every unit was complete
    assert "reproduce: nasrobust study --config" in capsys.readouterr().out


def test_config_round_trips_and_resolves(tmp_path):
    c = StudyConfig(space="bignas", n=50, out=str(tmp_path / "s"), suite_options={"natural": {"severities": (1, 2)}})
    r = c.resolved(has_gpu=False)
    assert r.protocol == "cpu" and r.eval_archs == min(CPU_PROTOCOL.eval_archs, 50)
    assert r.suite_options["natural"]["severities"] == (1, 2)  # user option on top of the protocol's
    assert r.suite_options["adversarial"] == CPU_PROTOCOL.suite_options["adversarial"]
    assert r.recipe["epochs"] > 0
    path = tmp_path / "config.toml"
    path.write_text(r.to_toml())
    again = StudyConfig.from_toml(path)
    assert again.resolved(has_gpu=False) == r
    g = c.resolved(has_gpu=True)
    assert g.protocol == "full" and g.eval_archs == 50


def test_suite_archs_resolve_against_the_protocol_and_eval_archs():
    cpu = StudyConfig(space="nb201", n=50).resolved(has_gpu=False)
    assert cpu.suite_archs == dict(CPU_PROTOCOL.suite_archs)
    assert cpu.suite_groups() == [(cpu.eval_archs, ("adversarial", "natural", "system")),
                                  (CPU_PROTOCOL.suite_archs["certified"], ("certified",))]
    small = StudyConfig(space="nb201", n=50, eval_archs=4, suite_archs={"natural": 2}).resolved(has_gpu=False)
    assert small.suite_archs == {"certified": 4, "natural": 2}  # capped at the evaluated subnets
    assert small.suite_groups() == [(4, ("adversarial", "certified", "system")), (2, ("natural",))]
    assert StudyConfig(space="nb201", n=50, protocol="full").resolved(has_gpu=False).suite_archs == {}
    assert StudyConfig(space="nb201", n=50, suites=("natural",)).resolved(has_gpu=False).suite_archs == {}
    for bad in ({"certfied": 2}, {"certified": 0}):
        with pytest.raises(NasRobustError, match="--suite-archs"):
            StudyConfig(space="nb201", n=50, suite_archs=bad).resolved(has_gpu=False)


def test_study_seed_reaches_the_supernet_recipe(tmp_path):
    """`study --seed` trains the supernet with that seed (it used to be the preset's 0 whatever --seed said)."""
    assert StudyConfig(space="bignas", n=5, seed=7).resolved(has_gpu=False).recipe["seed"] == 7
    assert StudyConfig(space="bignas", n=5, seed=0).resolved(has_gpu=False).recipe["seed"] == 0
    # an explicit recipe seed still wins, and the resolved config round-trips through TOML
    r = StudyConfig(space="bignas", n=5, seed=7, out=str(tmp_path / "s"), recipe={"seed": 3}).resolved(has_gpu=False)
    assert r.recipe["seed"] == 3
    (tmp_path / "config.toml").write_text(r.to_toml())
    assert StudyConfig.from_toml(tmp_path / "config.toml").resolved(has_gpu=False) == r


def test_bad_configs_are_clear(tmp_path):
    with pytest.raises(NasRobustError, match="unknown space"):
        StudyConfig(space="nope").resolved(False)
    with pytest.raises(NasRobustError, match="unknown suite"):
        StudyConfig(suites=("adversarial", "vibes")).resolved(False)
    with pytest.raises(NasRobustError, match="unknown nb201 supernet option 'chanels'. Did you mean 'channels'"):
        StudyConfig(space="nb201", supernet={"chanels": 4}).resolved(False)
    with pytest.raises(NasRobustError, match="natural.severities"):
        StudyConfig(suite_options={"natural": {"severities": "a"}}).resolved(False)
    bad = tmp_path / "c.toml"
    bad.write_text("space = 'bignas'\nepochz = 3\n")
    with pytest.raises(NasRobustError, match="epochz"):
        StudyConfig.from_toml(bad)


def test_a_folder_holds_one_study(tmp_path, capsys):
    from nasrobust.study import Study

    out = tmp_path / "s"
    Study(StudyConfig(space="nb201", n=5, dataset="digits", out=str(out)), progress=False)._write_config()
    code = main(["study", "--space", "nb201", "--n", "6", "--dataset", "digits", "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "n: 5 -> 6" in err and "--config" in err


def test_a_study_written_before_new_recipe_fields_is_the_same_study(tmp_path):
    from nasrobust.study import Study

    config = StudyConfig(space="nb201", n=5, dataset="digits", out=str(tmp_path / "s"))
    Study(config, progress=False)._write_config()
    file = tmp_path / "s" / "config.toml"
    text = file.read_text()
    old = re.sub(r"lr_milestones = \[[^\]]*\]\n", "", text).replace("lr_decay = 0.1\n", "")
    assert "lr_milestones" in text and "lr_" not in old.replace("lr_ratio", "")  # the fields the old code lacked
    file.write_text(old)
    Study(config, progress=False)._write_config()  # no "holds a study with other settings"
    assert "lr_milestones" in file.read_text()


@pytest.mark.slow
def test_torchrun_study_merges_into_one_store(study, tmp_path):
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "nasrobust",
           "study", *TINY, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = rows(out / "results.db")
    assert {k[0] for k in table} == {k[0] for k in rows(study / "results.db")}
    with open_results(out / "results.db", create=False) as store:
        assert {r.rank for r in store.runs()} == {0, 1}
    assert (out / "report" / "report.html").exists()


def test_replicates_score_the_same_subnets_under_two_weights(tmp_path):
    """`--replicates 2`: two supernets (seeds 0 and 1), the same subnets in each, told apart by weights_id;
    config.toml records them as [[runs]] and still reproduces the study."""
    import tomllib

    out = tmp_path / "s"
    args = [*TINY, "--suites", "adversarial", "--n-examples", "20", "--replicates", "2", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(["study", *args]) == 0
    runs = tomllib.loads((out / "config.toml").read_text())["runs"]
    assert [(r["replicate"], r["seed"], r["kind"], r["technique"]) for r in runs] == [
        (0, 0, "supernet", "standard"), (1, 1, "supernet", "standard")]
    assert len({r["weights_id"] for r in runs}) == 2
    by_weights = _encodings_by_weights(out / "results.db")
    assert set(by_weights) == {r["weights_id"] for r in runs}
    first, second = by_weights.values()
    assert first == second and len(first) >= 5
    assert all((out / "report" / r["weights_id"] / "report.html").exists() for r in runs)  # one report per run
    replication = (out / "report" / "replication.md").read_text()  # the replicated-findings report over both runs
    assert "## Findings (replicated)" in replication and "## Not replicated" in replication
    assert "standard x 2 replicate(s)" in replication
    assert (out / "report" / "tables" / "replication_classified.csv").exists()
    assert main(["study", "--config", str(out / "config.toml"), "--no-progress"]) == 0  # resumes: nothing new
    assert tomllib.loads((out / "config.toml").read_text())["runs"] == runs


def _encodings_by_weights(db) -> dict[str, set]:
    """The scored subnets of each weights id (one per trained supernet) in the store ``db``."""
    with open_results(db, create=False) as store:
        by_weights: dict[str, set] = {}
        for row in store.query():
            by_weights.setdefault(row.key.weights_id, set()).add(row.key.encoding)
    return by_weights


def test_techniques_score_the_same_subnets_under_each_technique(tmp_path):
    """`--techniques standard,pgd-at`: one supernet per technique (same seed), the same subnets scored under each,
    both recorded as [[runs]] with their technique; the PGD-AT supernet's recipe differs only in its options."""
    import tomllib

    from nasrobust import checkpoint
    from nasrobust.train.recipe import TECHNIQUES

    out = tmp_path / "t"
    args = [*TINY, "--suites", "adversarial", "--n-examples", "20", "--techniques", "standard,pgd-at",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(["study", *args]) == 0
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["techniques"] == ["standard", "pgd-at"]
    runs = config["runs"]
    assert [(r["technique"], r["replicate"], r["seed"], r["kind"]) for r in runs] == [
        ("standard", 0, 0, "supernet"), ("pgd-at", 0, 0, "supernet")]
    assert len({r["weights_id"] for r in runs}) == 2
    trained = checkpoint.read(checkpoint.checkpoint_path(out / "supernet-pgd-at"))
    assert trained["weights_id"] == runs[1]["weights_id"]
    standard = checkpoint.meta_of(checkpoint.read(checkpoint.checkpoint_path(out / "supernet"))).recipe
    pgd_at = checkpoint.meta_of(trained).recipe
    assert {k: v for k, v in pgd_at.items() if standard.get(k) != v} == TECHNIQUES["pgd-at"]
    by_weights = _encodings_by_weights(out / "results.db")
    assert set(by_weights) == {r["weights_id"] for r in runs}
    first, second = by_weights.values()
    assert first == second and len(first) >= 5
    replication = (out / "report" / "replication.md").read_text()
    assert "pgd-at x 1 replicate(s)" in replication and "standard x 1 replicate(s)" in replication
    assert "## Technique x factor" in replication


def test_unknown_technique_is_a_did_you_mean_error():
    with pytest.raises(NasRobustError, match="unknown technique 'pgd_at'. Did you mean 'pgd-at'"):
        StudyConfig(space="nb201", n=5, techniques=("standard", "pgd_at")).resolved(has_gpu=False)


def test_replicates_default_to_the_protocols():
    """The CPU protocol checks findings across 2 supernets; the full protocol trains 1 unless told; a given K wins."""
    assert StudyConfig(space="nb201", n=5).resolved(has_gpu=False).replicates == 2
    assert StudyConfig(space="nb201", n=5).resolved(has_gpu=True).replicates == 1
    assert StudyConfig(space="nb201", n=5, replicates=3).resolved(has_gpu=False).replicates == 3
    assert StudyConfig(space="nb201", n=5, protocol="full").resolved(has_gpu=False).replicates == 1


def test_zero_replicates_is_a_clear_error(tmp_path):
    with pytest.raises(NasRobustError, match="--replicates must be >= 1"):
        StudyConfig(space="bignas", n=5, replicates=0).resolved(has_gpu=False)
