"""The evaluator over supernet subnets: records keyed by encoding, resume after a kill, sharding."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from nasrobust import get_space
from nasrobust.cli.main import main
from nasrobust.data import load_dataset
from nasrobust.errors import NasRobustError
from nasrobust.evaluator import Evaluator, Reference, make_suites
from nasrobust.store import open_results
from nasrobust.train import Recipe
from nasrobust.train.api import train_supernet

SUITE_OPTIONS = [
    "natural.corruptions=contrast,glass_blur", "natural.severities=1,5", "natural.fp_kinds=translate",
    "natural.fp_examples=20", "system.formats=png", "system.decoders=pil,opencv",
    "system.resizers=pil_bilinear,opencv_area",
]
N_ARCHS = 4


@pytest.fixture(scope="module")
def supernet_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("supernet")
    recipe = Recipe(epochs=1, batch_size=64, lr=0.05, bn_recalib_images=200)
    train_supernet("nb201", "digits", recipe, out, progress=False, channels=4, cells_per_stage=1)
    return out


def evaluate_argv(ckpt, db, cache, *extra):
    options = [x for o in SUITE_OPTIONS for x in ("--suite-option", o)]
    return ["evaluate", "--supernet", str(ckpt), "--num-archs", str(N_ARCHS), "--suites", "natural,system", *options,
            "--db", str(db), "--n-examples", "60", "--recalib-images", "200", "--cache-dir", str(cache), "--no-progress", *extra]


def table(db):
    with open_results(db, create=False) as store:
        return {(r.key.encoding, r.key.suite, r.key.noise, r.key.level, r.key.metric): r.value for r in store.query()}


def runs_of(db):
    with open_results(db, create=False) as store:
        return store.runs()


def test_evaluate_writes_every_arch_and_suite(supernet_ckpt, tmp_path, capsys):
    db = tmp_path / "r.db"
    assert main(evaluate_argv(supernet_ckpt, db, tmp_path / "cache")) == 0
    out = capsys.readouterr().out
    rows = table(db)
    archs = get_space("nb201").sample(N_ARCHS, seed=0)
    for arch in archs:
        assert (arch.encoding, "natural", "clean", 0.0, "accuracy") in rows
        assert (arch.encoding, "system", "summary", 0.0, "mean") in rows
    assert "corruption acc" in out and "system mean" in out
    # the mCE reference is the supernet's largest subnet, evaluated too (first), so every arch has an mCE
    largest = get_space("nb201").supernet(channels=4, cells_per_stage=1).largest().encoding
    assert rows[(largest, "natural", "mce", 0.0, "mce")] == pytest.approx(1.0)
    assert all((a.encoding, "natural", "mce", 0.0, "mce") in rows for a in archs)
    # a rerun finds every unit complete and writes nothing new: no row changes, and no run is recorded
    # (the store records a run with its first write)
    runs = len(runs_of(db))
    assert main(evaluate_argv(supernet_ckpt, db, tmp_path / "cache")) == 0
    assert table(db) == rows
    assert len(runs_of(db)) == runs


def test_killed_evaluation_resumes_to_the_same_table(supernet_ckpt, tmp_path):
    full = tmp_path / "full.db"
    assert main(evaluate_argv(supernet_ckpt, full, tmp_path / "cache")) == 0
    cut = tmp_path / "cut.db"
    cmd = [sys.executable, "-m", "nasrobust", *evaluate_argv(supernet_ckpt, cut, tmp_path / "cache")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it once some, but not all, results are stored
        if cut.exists():
            try:
                n = len(table(cut))
            except Exception:
                n = 0
            if 0 < n < len(table(full)):
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = table(cut)
    assert 0 < len(partial) < len(table(full))
    assert main(evaluate_argv(supernet_ckpt, cut, tmp_path / "cache")) == 0
    assert table(cut) == table(full)


@pytest.mark.slow
def test_torchrun_sharded_evaluation_equals_one_process(supernet_ckpt, tmp_path):
    one = tmp_path / "one.db"
    assert main(evaluate_argv(supernet_ckpt, one, tmp_path / "cache")) == 0
    two = tmp_path / "two.db"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "nasrobust",
           *evaluate_argv(supernet_ckpt, two, tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table(two) == pytest.approx(table(one))
    with open_results(two, create=False) as store:
        ranks = {r.rank for r in store.runs()}
    assert ranks == {0, 1}


def test_python_api(supernet_ckpt, tmp_path):
    from nasrobust.checkpoint import load_supernet

    model, payload = load_supernet(supernet_ckpt)
    data = load_dataset("digits")
    suites = make_suites(["natural"], {"natural": {"corruptions": ("contrast",), "severities": (3,), "fp_kinds": ()}})
    store = open_results(tmp_path / "api.db", create=True)
    arch = model.supernet.largest()
    ev = Evaluator(store, data, suites, n_examples=40, cache_dir=tmp_path / "cache", progress=False,
                   reference=Reference(arch.encoding, payload["weights_id"]))
    reports = ev.evaluate_supernet(model, [arch], payload["weights_id"])
    assert reports[0].written["natural"] > 0
    values = {(r.key.noise, r.key.metric): r.value for r in store.query(arch)}
    assert values[("mce", "mce")] == pytest.approx(1.0)


def test_the_entry_point_writes_what_the_cli_writes(supernet_ckpt, tmp_path):
    """nasrobust.evaluate is what `nasrobust evaluate` runs: the same arguments give the same rows."""
    import nasrobust
    from nasrobust.cli.evaluate_cmd import parse_suite_options

    cli = tmp_path / "cli.db"
    assert main(evaluate_argv(supernet_ckpt, cli, tmp_path / "cache")) == 0
    protocol = nasrobust.EvalProtocol(n_examples=60, suite_options=parse_suite_options(SUITE_OPTIONS), recalib_images=200)
    result = nasrobust.evaluate(supernet_ckpt, db=tmp_path / "api.db", suites=["natural", "system"], protocol=protocol,
                                n_archs=N_ARCHS, cache_dir=tmp_path / "cache")
    assert table(tmp_path / "api.db") == table(cli)
    assert result.encodings == [a.encoding for a in get_space("nb201").sample(N_ARCHS, seed=0)]
    assert result.dataset == "digits" and len(result.reports) == N_ARCHS + 1  # + the mCE reference, scored first


def test_the_entry_point_scores_a_model_object(supernet_ckpt, tmp_path):
    """A stand-alone module (here an extracted, re-calibrated subnet) is one architecture under its weights id."""
    import nasrobust
    from nasrobust.checkpoint import load_supernet
    from nasrobust.supernet import recalibrated_subnet

    model, _ = load_supernet(supernet_ckpt)
    data = load_dataset("digits")
    arch = model.supernet.smallest()
    net = recalibrated_subnet(model, arch, data, 200)
    protocol = nasrobust.EvalProtocol(n_examples=40, suite_options={"system": {"formats": ("png",),
                                                                             "decoders": ("pil",)}})
    with pytest.raises(NasRobustError, match="weights_id"):
        nasrobust.evaluate(net, db=tmp_path / "m.db", suites=["system"], protocol=protocol, archs=[arch], data=data)
    with pytest.raises(NasRobustError, match="ENCODING@WEIGHTS_ID"):
        nasrobust.evaluate(net, db=tmp_path / "m.db", suites=["system"], protocol=protocol, archs=[arch], data=data,
                           weights_id="mine", reference=arch.encoding)
    with pytest.raises(NasRobustError, match="read from the checkpoint"):
        nasrobust.evaluate(supernet_ckpt, db=tmp_path / "m.db", suites=["system"], weights_id="mine")
    result = nasrobust.evaluate(net, db=tmp_path / "m.db", suites=["system"], protocol=protocol, archs=[arch],
                                data=data, weights_id="mine", cache_dir=tmp_path / "cache")
    assert result.archs == (arch,) and result.reports[0].written["system"] > 0
    with open_results(tmp_path / "m.db", create=False) as store:
        assert {r.key.weights_id for r in store.query(arch)} == {"mine"}


def test_pretrained_needs_a_space_with_published_weights(capsys):
    assert main(["evaluate", "--pretrained", "--space", "nb201", "--arch", "x", "--dataset", "digits"]) == 2
    assert "space 'nb201' has no published weights; --pretrained works with zoo" in capsys.readouterr().err


def test_bn_recalibration_runs_once_per_subnet_for_all_suites(supernet_ckpt, tmp_path, monkeypatch):
    """Issue 12 item 2: one BN re-calibration per subnet, shared by every pending suite."""
    import nasrobust.evaluator as evaluator_mod
    from nasrobust.checkpoint import load_supernet

    calls: list[str] = []
    real = evaluator_mod.recalibrated_subnet

    def counting(model, arch, *args, **kwargs):
        calls.append(arch.encoding)
        return real(model, arch, *args, **kwargs)

    monkeypatch.setattr(evaluator_mod, "recalibrated_subnet", counting)
    model, payload = load_supernet(supernet_ckpt)
    suites = make_suites(["natural", "system"], {"natural": {"corruptions": ("contrast",), "severities": (3,), "fp_kinds": ()},
                                                 "system": {"formats": ("png",), "decoders": ("pil",), "resizers": ("pil_bilinear",)}})
    store = open_results(tmp_path / "once.db", create=True)
    archs = [model.supernet.largest(), model.supernet.smallest()]
    ev = Evaluator(store, load_dataset("digits"), suites, n_examples=20, cache_dir=tmp_path / "cache", progress=False)
    reports = ev.evaluate_supernet(model, archs, payload["weights_id"])
    assert all(r.written.get("natural") and r.written.get("system") for r in reports)
    assert sorted(calls) == sorted(a.encoding for a in archs)
