"""Same command, same seed, same machine and thread count: bit-identical weights, store rows and reports.

Every test runs the same thing twice *from scratch* -- never a resume -- in a fresh process
(the CLI through ``subprocess``) or in-process after :func:`fresh_process_rngs` has reseeded
every global generator from OS entropy, as a new interpreter does (torch 2.14's
``torch.initial_seed()`` differs between two processes, like numpy's and ``random``'s state).
The CLI runs also get different ``PYTHONHASHSEED`` values, so set and dict orders of strings differ.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nasrobust import checkpoint, get_space
from nasrobust.data import load_dataset
from nasrobust.store import open_results
from nasrobust.train import Recipe
from nasrobust.train.api import train_standalone, train_supernet

TINY_SUPERNET = {"channels": 4, "cells_per_stage": 1}  # nb201, ~1 s per epoch on digits
SUPERNET_CLI = ["--space", "nb201", "--dataset", "digits", "--epochs", "1", "--no-progress",
                "--supernet-option", "channels=4", "--supernet-option", "cells_per_stage=1"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _restore_global_rngs():
    """The tests scramble the global generators; leave them as found for the rest of the session."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    yield
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


def fresh_process_rngs() -> None:
    """Reseed torch's, numpy's and Python's global generators from OS entropy (a new process's state)."""
    torch.seed()
    np.random.seed(None)
    random.seed(None)


def tiny_recipe(**kw) -> Recipe:
    return Recipe(**{"epochs": 1, "batch_size": 64, "lr": 0.1, "warmup_epochs": 0.2, "bn_recalib_images": 200, **kw})


def assert_same_weights(a: str | Path, b: str | Path) -> None:
    """Same weights_id and bit-identical state dicts (every tensor, buffers included)."""
    pa, pb = checkpoint.read(a), checkpoint.read(b)
    assert pa["weights_id"] == pb["weights_id"]
    assert pa["model"].keys() == pb["model"].keys()
    differ = [k for k in pa["model"] if not torch.equal(pa["model"][k], pb["model"][k])]
    assert not differ, f"tensors differ: {differ[:5]}"


def history_without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def log_rows(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return history_without_time(list(csv.DictReader(f)))


def store_content(db: str | Path) -> tuple[list, list]:
    """Every result row (key, value, protocol hash) and completed unit; not who wrote them or when."""
    with open_results(db, create=False) as store:
        rows = sorted((r.key.as_tuple(), r.value, r.protocol.hash) for r in store.query())
        units = sorted(dataclass_tuple(u) for u in store.completed_units())
    return rows, units


def dataclass_tuple(obj) -> tuple:
    import dataclasses

    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


# ----------------------------------------------------------------------------- training
def run_cli(*args: str, hash_seed: str) -> None:
    """``nasrobust ARGS`` in a new process (one thread; ``hash_seed``: string hashing differs, as between runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run([sys.executable, "-m", "nasrobust", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_train_supernet_twice_in_fresh_processes_gives_identical_weights(tmp_path):
    """The reported bug: two `train-supernet` commands, same default seed, different weights."""
    for name, hash_seed in (("a", "1"), ("b", "2")):
        run_cli("train-supernet", *SUPERNET_CLI, "--out", str(tmp_path / name), hash_seed=hash_seed)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert log_rows(tmp_path / "a" / "log.csv") == log_rows(tmp_path / "b" / "log.csv")


@pytest.mark.parametrize("recipe", [
    tiny_recipe(),
    tiny_recipe(random_crop=True, mixup=0.2, label_smoothing=0.1, adversarial="fgsm-rs", adv_eps=0.1),
], ids=["plain", "augment+adversarial"])
def test_two_supernet_trainings_are_bit_identical(tmp_path, digits, recipe):
    results = []
    for name in ("a", "b"):
        fresh_process_rngs()
        results.append(train_supernet("nb201", digits, recipe, tmp_path / name, progress=False, **TINY_SUPERNET))
    assert results[0].weights_id == results[1].weights_id
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert history_without_time(results[0].history) == history_without_time(results[1].history)


@pytest.fixture(scope="module")
def supernet_ckpt(tmp_path_factory, digits) -> Path:
    out = tmp_path_factory.mktemp("supernet")
    return train_supernet("nb201", digits, tiny_recipe(), out, progress=False, **TINY_SUPERNET).checkpoint


STANDALONE = {
    "scratch": (dict(random_crop=True, label_smoothing=0.1), False),
    "adversarial": (dict(adversarial="pgd", adv_eps=0.1, adv_steps=2, mixup=0.2), False),
    "finetune": (dict(precise_bn=True), True),
}


@pytest.mark.parametrize("kind", list(STANDALONE))
def test_two_standalone_trainings_are_bit_identical(tmp_path, digits, supernet_ckpt, kind):
    overrides, finetune = STANDALONE[kind]
    if finetune:
        space, arch = "nb201", checkpoint.load_supernet(supernet_ckpt)[0].supernet.smallest()
    else:
        space, arch = "bignas", get_space("bignas-small").smallest()
    results = []
    for name in ("a", "b"):
        fresh_process_rngs()
        results.append(train_standalone(space, arch, digits, tiny_recipe(**overrides), tmp_path / name,
                                        from_supernet=supernet_ckpt if finetune else None, progress=False))
    assert results[0].weights_id == results[1].weights_id
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert history_without_time(results[0].history) == history_without_time(results[1].history)


# ----------------------------------------------------------------------------- evaluate
EVAL_ARGS = ["--n", "1", "--dataset", "digits", "--n-examples", "20", "--recalib-images", "100", "--no-progress",
             "--suite-option", "adversarial.attacks=fgsm,pgd_linf", "--suite-option", "adversarial.steps=3",
             "--suite-option", "natural.corruptions=gaussian_noise,frost",
             "--suite-option", "natural.severities=1,5",
             "--suite-option", "system.decoders=pil,opencv", "--suite-option", "system.resizers=pil_bilinear,opencv_area",
             "--suite-option", "certified.n_examples=10"]


def test_two_evaluations_write_identical_rows(tmp_path, supernet_ckpt):
    for name, hash_seed in (("a", "1"), ("b", "2")):  # separate caches: the corrupted images are made twice, too
        run_cli("evaluate", "--supernet", str(supernet_ckpt), *EVAL_ARGS, "--db", str(tmp_path / f"{name}.db"),
                "--cache-dir", str(tmp_path / f"cache-{name}"), hash_seed=hash_seed)
    a, b = store_content(tmp_path / "a.db"), store_content(tmp_path / "b.db")
    assert len(a[0]) > 50 and {r[0][4] for r in a[0]} == {"adversarial", "natural", "system", "certified"}
    assert a == b


# ----------------------------------------------------------------------------- search
def _search_result(path: Path) -> dict:
    """The result file without wall-clock fields (seconds, elapsed)."""
    data = json.loads(path.read_text())

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in ("seconds", "elapsed")}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(data)


def test_two_searches_give_identical_results(tmp_path, supernet_ckpt):
    live = f"live:{supernet_ckpt}#adversarial/pgd_linf@0.1?n=20&recalib=100&steps=3"
    for name, hash_seed in (("a", "1"), ("b", "2")):
        run_cli("search", "--space", "nb201", "--searcher", "evolution", "--metric", live, "--budget", "4",
                "--option", "population_size=2", "--option", "sample_size=2", "--out", str(tmp_path / name),
                "--no-progress", hash_seed=hash_seed)
    a, b = _search_result(tmp_path / "a" / "result.json"), _search_result(tmp_path / "b" / "result.json")
    assert len(a["history"]) == 4
    assert a == b


def test_two_differentiable_searches_give_identical_results(tmp_path):
    options = ["channels=4", "cells_per_stage=1", "n_train=64", "batch_size=16", "steps_per_epoch=2",
               "warmup_epochs=0", "n_score=16", "recalib_images=16"]
    for name, hash_seed in (("a", "1"), ("b", "2")):
        run_cli("search", "--space", "nb201", "--searcher", "dsrna-jacobian", "--dataset", "digits",
                "--budget", "2", *[x for o in options for x in ("--option", o)], "--out", str(tmp_path / name),
                "--no-progress", hash_seed=hash_seed)
    a, b = _search_result(tmp_path / "a" / "result.json"), _search_result(tmp_path / "b" / "result.json")
    assert len(a["trajectory"]) == 2
    assert a == b


# ----------------------------------------------------------------------------- study
STUDY = ["--space", "nb201", "--num-archs", "6", "--dataset", "digits", "--epochs", "1", "--eval-archs", "3",
         "--supernet-option", "channels=4", "--supernet-option", "cells_per_stage=1", "--n-examples", "20",
         "--n-boot", "20", "--no-progress", "--replicates", "1",
         "--suite-option", "natural.corruptions=contrast,gaussian_noise", "--suite-option", "natural.severities=1,5",
         "--suite-option", "system.decoders=pil,opencv", "--suite-option", "system.resizers=pil_bilinear,opencv_area",
         "--suite-option", "certified.n_examples=10"]


@pytest.mark.slow
def test_two_studies_give_identical_supernets_stores_and_reports(tmp_path):
    for name, hash_seed in (("a", "1"), ("b", "2")):
        run_cli("study", *STUDY, "--out", str(tmp_path / name), "--cache-dir", str(tmp_path / f"cache-{name}"),
                hash_seed=hash_seed)
    a, b = tmp_path / "a", tmp_path / "b"
    assert_same_weights(a / "supernet", b / "supernet")
    assert store_content(a / "results.db") == store_content(b / "results.db")
    assert (a / "archs.jsonl").read_text() == (b / "archs.jsonl").read_text()
    tables = sorted(p.name for p in (a / "report" / "tables").iterdir())
    assert tables and tables == sorted(p.name for p in (b / "report" / "tables").iterdir())
    for t in tables:
        assert (a / "report" / "tables" / t).read_bytes() == (b / "report" / "tables" / t).read_bytes(), t
    # the report names its own folder; everything else is the same text
    md_a = (a / "report" / "report.md").read_text().replace(str(a), "OUT")
    md_b = (b / "report" / "report.md").read_text().replace(str(b), "OUT")
    assert md_a == md_b
    figures = sorted(p.name for p in (a / "report" / "figures").iterdir())
    assert figures
    for f in figures:
        assert (a / "report" / "figures" / f).read_bytes() == (b / "report" / "figures" / f).read_bytes(), f


# ----------------------------------------------------------------------------- CUDA
def test_cuda_runs_select_deterministic_kernels(monkeypatch):
    """The settings are made without touching a GPU, so this runs everywhere; restored afterwards."""
    from nasrobust.determinism import CUBLAS_WORKSPACE, deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        deterministic_kernels(torch.device("cpu"))
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and not torch.are_deterministic_algorithms_enabled()
        deterministic_kernels(torch.device("cuda", 0))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_two_cuda_supernet_trainings_are_bit_identical(tmp_path, digits):
    """On a GPU (AMP and channels_last on, as the recipe defaults there)."""
    for name in ("a", "b"):
        fresh_process_rngs()
        train_supernet("nb201", digits, tiny_recipe(random_crop=True), tmp_path / name, device=torch.device("cuda"),
                       progress=False, **TINY_SUPERNET)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
