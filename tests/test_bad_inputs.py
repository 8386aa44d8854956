"""Bad inputs a new user makes, one table: each gives exit code 2, one clear line, no traceback, and
changes no file. Plus the Python API's equivalents, the advice that must work, and a seeded fuzz test
of malformed encodings and options for every sub-command."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from nasrobust.cli.main import main
from nasrobust.records import Protocol, Record, ResultKey

PGD = Protocol.make(eps=0.1, norm="Linf", steps=10, restarts=1, seed=0, n_examples=40)
ENC = "nb201:|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
BIGNAS = "bignas:r224-s32k3-d2w32k3e1-d2w64k3e1-d2w128k3e1-d2w256k3e1"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """Real inputs: a tiny nb201 supernet on digits, a store, files of every kind a user mixes up."""
    from nasrobust.store import open_results
    from nasrobust.train import Recipe
    from nasrobust.train.api import train_supernet

    d = tmp_path_factory.mktemp("bad")
    train_supernet("nb201", "digits", Recipe(epochs=1, batch_size=64, lr=0.05, bn_recalib_images=100), d / "sn",
                   progress=False, channels=4, cells_per_stage=1)
    with open_results(d / "r.db", create=True) as store:
        store.write_many([Record(ResultKey("nb201", e, "w", "digits", "adversarial", "pgd_linf", 0.1, "accuracy"),
                                 0.5, PGD) for e in (ENC, ENC.replace("nor_conv_3x3", "skip_connect"))])
        store.checkpoint()
    (d / "afile").write_text("a regular file\n")
    (d / "archs.jsonl").write_text(json.dumps({"encoding": ENC}) + "\n")
    (d / "old.csv").write_text("kept\n")
    (d / "old.png").write_bytes(b"\x89PNG kept")
    (d / "report").mkdir()
    (d / "report" / "report.html").write_text("<p>an earlier report</p>")
    (d / "noenc.csv").write_text("arch,params\nx,1\n")
    (d / "bignas.jsonl").write_text(json.dumps({"encoding": BIGNAS}) + "\n")
    (d / "garbage.pt").write_bytes(b"garbage, not a checkpoint\n" * 10)
    ckpt = (d / "sn" / "checkpoint.pt").read_bytes()
    (d / "truncated.pt").write_bytes(ckpt[: len(ckpt) // 3])
    (d / "n.toml").write_text('space = "nb201"\nn = "many"\n')
    (d / "epochs.toml").write_text('space = "nb201"\nrecipe = {epochs = "ten"}\n')
    (d / "other-study").mkdir()
    (d / "other-study" / "config.toml").write_text('space = "nb201"\nn = 5\ndataset = "digits"\nprotocol = "cpu"\n')
    assert main(["search", "--space", "nb201", "--searcher", "random", "--metric", "cost:params", "--budget", "2",
                 "--out", str(d / "search"), "--no-progress"]) == 0
    return {"dir": d, "sn": d / "sn", "db": d / "r.db"}


@pytest.fixture(scope="module")
def locked(env):
    """A folder and a store that cannot be written even by root (``chattr +i``; else ``chmod`` when not root)."""
    d = env["dir"] / "locked"
    d.mkdir()
    shutil.copy(env["db"], env["dir"] / "ro.db")
    paths = [env["dir"] / "ro.db", d]
    if os.geteuid() != 0:
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
    elif not shutil.which("chattr") or subprocess.run(["chattr", "+i", *map(str, paths)]).returncode:
        pytest.skip("running as root without a working chattr: no way to make a file read-only here")
    yield d
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", *map(str, paths)])
    else:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)


def snapshot(paths: list[Path]) -> dict[str, str | None]:
    """Content hash of each watched file (every file under a watched folder); None when absent."""
    out: dict[str, str | None] = {}
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            out[str(f)] = hashlib.sha1(f.read_bytes()).hexdigest() if f.exists() else None
    return out


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process; an exception escaping it is the traceback a user would see."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[dict[str, Path]], list]
    phrase: str
    watch: Callable[[dict[str, Path]], list[Path]] = lambda e: [e["dir"] / "afile", e["db"]]
    absent: Callable[[dict[str, Path]], list[Path]] = lambda e: []  # must not be created


D = lambda e, name: e["dir"] / name  # noqa: E731
TINY_TRAIN = ["--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--no-progress"]
NB = ["--supernet-option", "channels=4", "--supernet-option", "cells_per_stage=1"]

CASES = [
    # data loss: outputs are never the input store; existing results need --force
    Case("export-over-its-db", lambda e: ["export", "--db", e["db"], "--out", e["db"], "--format", "csv"],
         "is the input --db"),
    Case("sample-existing-out", lambda e: ["sample", "--space", "nb201", "--n", "2", "--out", D(e, "archs.jsonl")],
         "pass --force", lambda e: [D(e, "archs.jsonl")]),
    Case("export-existing-out", lambda e: ["export", "--db", e["db"], "--out", D(e, "old.csv")], "pass --force",
         lambda e: [D(e, "old.csv")]),
    Case("analyze-existing-report", lambda e: ["analyze", "--db", e["db"], "--out", D(e, "report")], "pass --force",
         lambda e: [D(e, "report")]),
    Case("analyze-into-its-db", lambda e: ["analyze", "--db", e["db"], "--out", e["db"]], "is the input --db"),
    Case("cka-existing-out", lambda e: ["cka", "--a", e["sn"], "--out", D(e, "old.png")], "pass --force",
         lambda e: [D(e, "old.png")]),
    Case("study-other-settings", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset", "digits", "--out",
                                            D(e, "other-study"), "--no-progress"], "pass --force to replace it",
         lambda e: [D(e, "other-study")]),
    Case("study-zero-replicates", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset", "digits", "--out",
                                             D(e, "rep0-study"), "--replicates", "0", "--no-progress"],
         "--replicates must be >= 1", absent=lambda e: [D(e, "rep0-study")]),
    Case("study-negative-standalone-check", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset", "digits",
                                                        "--out", D(e, "alone-neg-study"), "--standalone-check", "-1",
                                                        "--no-progress"],
         "--standalone-check must be >= 0 (0 turns the check off), got -1",
         absent=lambda e: [D(e, "alone-neg-study")]),
    Case("study-standalone-check-over-eval-archs", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset",
                                                               "digits", "--eval-archs", "4", "--out",
                                                               D(e, "alone-big-study"), "--standalone-check", "5",
                                                               "--no-progress"],
         "exceeds the 4 evaluated subnets; pass --standalone-check 4 or less, or more --eval-archs",
         absent=lambda e: [D(e, "alone-big-study")]),
    Case("study-suite-archs-malformed", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset", "digits",
                                                   "--out", D(e, "sa-study"), "--suite-archs", "certified", "--no-progress"],
         "expected SUITE=N with N >= 1, e.g. --suite-archs certified=10", absent=lambda e: [D(e, "sa-study")]),
    Case("study-suite-archs-unknown-suite", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset", "digits",
                                                       "--out", D(e, "sa2-study"), "--suite-archs", "certfied=3",
                                                       "--no-progress"],
         "expected a registered suite", absent=lambda e: [D(e, "sa2-study")]),
    Case("study-suite-archs-zero", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset", "digits",
                                              "--out", D(e, "sa3-study"), "--suite-archs", "certified=0",
                                              "--no-progress"],
         "a number of subnets >= 1", absent=lambda e: [D(e, "sa3-study")]),
    Case("study-unknown-technique", lambda e: ["study", "--space", "nb201", "--n", "6", "--dataset", "digits", "--out",
                                                D(e, "tech-study"), "--techniques", "standard,pgd_at", "--no-progress"],
         "Did you mean 'pgd-at'", absent=lambda e: [D(e, "tech-study")]),
    Case("train-into-a-supernet-run", lambda e: ["train", "--space", "nb201", "--arch", ENC, "--out", e["sn"],
                                                 "--build-option", "channels=4", *TINY_TRAIN],
         "pass --force to replace it", lambda e: [e["sn"]]),
    Case("train-decreasing-lr-milestones", lambda e: ["train", "--space", "nb201", "--arch", ENC, "--out", D(e, "t-ms"),
                                                      *TINY_TRAIN, "--schedule", "step", "--lr-milestones", "0.75", "0.5"],
         "must be increasing fractions of the run", absent=lambda e: [D(e, "t-ms")]),
    Case("merge-into-an-input", lambda e: ["merge", e["db"], e["db"]], "is the input"),
    Case("describe-unknown-space", lambda e: ["describe", "--space", "nbx201", "--arch", ENC], "Did you mean 'nb201'"),
    Case("describe-malformed-encoding", lambda e: ["describe", "--space", "nb201", "--arch", "garbage"],
         "malformed nb201 encoding"),
    Case("spaces-unknown-option", lambda e: ["spaces", "--space", "nbx201"], "unrecognized arguments"),
    # an --out that is a file or cannot be written
    Case("sample-out-under-a-file", lambda e: ["sample", "--space", "nb201", "--n", "2", "--out",
                                               D(e, "afile") / "x.jsonl"], "is a file, not a folder"),
    Case("sample-out-in-proc", lambda e: ["sample", "--space", "nb201", "--n", "2", "--out", "/proc/nasrobust.jsonl"],
         "is not writable"),
    Case("analyze-out-under-a-file", lambda e: ["analyze", "--db", e["db"], "--out", D(e, "afile") / "rep"],
         "is a file, not a folder"),
    Case("search-out-is-a-file", lambda e: ["search", "--space", "nb201", "--metric", "cost:params", "--budget", "2",
                                            "--out", D(e, "afile"), "--no-progress"], "is a file; give a folder"),
    Case("study-out-under-a-file", lambda e: ["study", "--space", "nb201", "--dataset", "digits", "--out",
                                              D(e, "afile") / "s", "--no-progress"], "is a file, not a folder"),
    Case("train-supernet-out-under-a-file", lambda e: ["train-supernet", "--space", "nb201", "--out",
                                                       D(e, "afile") / "sn", *TINY_TRAIN, *NB],
         "is a file, not a folder"),
    Case("export-out-under-a-file", lambda e: ["export", "--db", e["db"], "--out", D(e, "afile") / "x.csv"],
         "is a file, not a folder"),
    Case("export-out-in-proc", lambda e: ["export", "--db", e["db"], "--out", "/proc/x.csv"], "is not writable"),
    # wrong types and shapes of input files
    Case("config-n-many", lambda e: ["study", "--config", D(e, "n.toml")], "n = 'many' is not an integer; e.g. n = 1200"),
    Case("config-epochs-ten", lambda e: ["study", "--config", D(e, "epochs.toml")],
         "epochs = 'ten' is not an integer; e.g. epochs = 10"),
    Case("archs-csv-without-encoding", lambda e: ["evaluate", "--supernet", e["sn"], "--archs", D(e, "noenc.csv"),
                                                  "--db", D(e, "new.db"), "--no-progress"],
         "has no 'encoding' column", absent=lambda e: [D(e, "new.db")]),
    Case("garbage-checkpoint", lambda e: ["evaluate", "--checkpoint", D(e, "garbage.pt"), "--db", D(e, "new.db")],
         "is not a readable checkpoint", absent=lambda e: [D(e, "new.db")]),
    Case("truncated-supernet", lambda e: ["evaluate", "--supernet", D(e, "truncated.pt"), "--num-archs", "1",
                                          "--db", D(e, "new.db")], "truncated, corrupt",
         absent=lambda e: [D(e, "new.db")]),
    *(Case(f"{cmd}-workers-{n}", lambda e, cmd=cmd, n=n: [cmd, *(["--supernet", e["sn"], "--db", D(e, "new.db")]
                                                                if cmd == "evaluate" else ["--out", D(e, "st9")]),
                                                          "--workers", n],
           "--workers must be >= 1", absent=lambda e: [D(e, "new.db"), D(e, "st9")])
      for cmd in ("evaluate", "study") for n in ("0", "-2")),
    # accepted and ignored before
    Case("train-supernet-kd-teacher", lambda e: ["train-supernet", "--space", "nb201", "--out", D(e, "sn2"),
                                                 "--kd-teacher", D(e, "truncated.pt"), *TINY_TRAIN, *NB],
         "not used by supernet training", absent=lambda e: [D(e, "sn2")]),
    Case("train-truncated-teacher", lambda e: ["train", "--space", "nb201", "--arch", ENC, "--out", D(e, "t1"),
                                               "--kd-teacher", D(e, "truncated.pt"), *TINY_TRAIN],
         "is not a readable checkpoint", absent=lambda e: [D(e, "t1")]),
    Case("bignas-archs-for-an-nb201-supernet", lambda e: ["evaluate", "--supernet", e["sn"], "--archs",
                                                          D(e, "bignas.jsonl"), "--db", D(e, "new.db")],
         "give an encoding of nb201 (`nasrobust sample --space nb201`)", absent=lambda e: [D(e, "new.db")]),
    Case("query-typo-db", lambda e: ["query", "--db", D(e, "typo.db"), "--arch", ENC], "no result store",
         absent=lambda e: [D(e, "typo.db")]),
    Case("query-suite-typo", lambda e: ["query", "--db", e["db"], "--arch", ENC, "--suite", "adversrial"],
         "Did you mean 'adversarial'"),
    # advice that works
    Case("search-metric-typo", lambda e: ["search", "--space", "nb201", "--metric",
                                          f"store:{e['db']}:adversarial/pgd_lnf/accuracy@0.1", "--budget", "2",
                                          "--out", D(e, "s2"), "--no-progress"],
         "Did you mean 'adversarial/pgd_linf/accuracy'", absent=lambda e: [D(e, "s2")]),
    Case("search-holds-another", lambda e: ["search", "--space", "nb201", "--metric", "cost:flops", "--searcher",
                                            "random", "--budget", "2", "--out", D(e, "search"), "--no-progress"],
         "pass --fresh", lambda e: [D(e, "search")]),
]
LOCKED_CASES = [
    Case("evaluate-read-only-db", lambda e: ["evaluate", "--supernet", e["sn"], "--num-archs", "1", "--suites", "natural",
                                             "--db", D(e, "ro.db"), "--no-progress"], "ro.db is read-only",
         lambda e: [D(e, "ro.db")]),
    *(Case(f"{name}-read-only-out", argv, "not writable", lambda e: [e["locked"]]) for name, argv in (
        ("sample", lambda e: ["sample", "--space", "nb201", "--n", "2", "--out", e["locked"] / "a.jsonl"]),
        ("analyze", lambda e: ["analyze", "--db", e["db"], "--out", e["locked"] / "rep"]),
        ("search", lambda e: ["search", "--space", "nb201", "--metric", "cost:params", "--budget", "2",
                              "--out", e["locked"] / "s", "--no-progress"]),
        ("study", lambda e: ["study", "--space", "nb201", "--dataset", "digits", "--out", e["locked"] / "st"]),
        ("train-supernet", lambda e: ["train-supernet", "--space", "nb201", "--out", e["locked"] / "sn",
                                      *TINY_TRAIN, *NB]),
        ("export", lambda e: ["export", "--db", e["db"], "--out", e["locked"] / "x.csv"]),
    )),
]


def check_case(case: Case, e: dict[str, Path], capsys) -> None:
    watched = case.watch(e)
    before = snapshot(watched)
    code, out, err = run_cli(capsys, case.argv(e))
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err + out
    assert case.phrase in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO ", "WARNING "))]
    assert len(lines) <= 2, err  # the error itself (argparse adds a usage line)
    assert snapshot(watched) == before, "a watched file changed"
    for path in case.absent(e):
        assert not path.exists(), f"{path} was created"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", LOCKED_CASES, ids=[c.id for c in LOCKED_CASES])
def test_unwritable_output(case, env, locked, capsys):
    check_case(case, {**env, "locked": locked}, capsys)


# ----------------------------------------------------------------------------- the fixes work
def test_force_overwrites_and_the_corrected_search_runs(env, tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    out.write_text("old\n")
    assert run_cli(capsys, ["sample", "--space", "nb201", "--n", "2", "--out", out, "--force"])[0] == 0
    assert out.read_text().count("encoding") == 2
    search = tmp_path / "s"
    typo = ["search", "--space", "nb201", "--budget", "2", "--out", search, "--no-progress", "--metric"]
    assert run_cli(capsys, [*typo, f"store:{env['db']}:adversarial/pgd_lnf/accuracy@0.1"])[0] == 2
    assert not search.exists()  # nothing written before the metric was checked
    code, out_text, err = run_cli(capsys, [*typo, "cost:params"])
    assert code == 0, err
    assert (search / "result.json").exists()


def test_search_state_without_evaluations_is_replaced(tmp_path, capsys):
    """A search killed (or failed) before its first evaluation left only a header: the next command runs."""
    search = tmp_path / "s"
    search.mkdir()
    (search / "state.jsonl").write_text(json.dumps({"format": "nasrobust-search/1", "space": "nb201",
                                                    "searcher": "random", "seed": 0, "options": {},
                                                    "objectives": [{"name": "typo", "higher_is_better": True}]}) + "\n")
    code, _, err = run_cli(capsys, ["search", "--space", "nb201", "--searcher", "random", "--metric", "cost:params",
                                    "--budget", "2", "--out", search, "--no-progress"])
    assert code == 0, err


def test_sample_input_size_picks_the_small_variant_that_evaluate_accepts(tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    code, text, _ = run_cli(capsys, ["sample", "--space", "bignas", "--n", "3", "--input-size", "28", "--out", out])
    assert code == 0 and "using bignas-small" in text
    assert all(json.loads(line)["encoding"].startswith("bignas-small:") for line in out.read_text().splitlines())


def test_version(capsys):
    import nasrobust

    assert run_cli(capsys, ["--version"]) == (0, f"nasrobust {nasrobust.__version__}\n", "")


def test_no_progress_hides_the_corruption_cache_bar(env, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["evaluate", "--supernet", env["sn"], "--num-archs", "1", "--suites", "natural",
                                      "--suite-option", "natural.corruptions=contrast", "--suite-option",
                                      "natural.severities=1", "--suite-option", "natural.fp_kinds=",
                                      "--n-examples", "20", "--recalib-images", "100", "--db", tmp_path / "r.db",
                                      "--cache-dir", tmp_path / "cache", "--no-progress"])
    assert code == 0, err
    assert "corrupting" not in err and "it/s" not in err


# ----------------------------------------------------------------------------- the Python API
def test_python_api_fails_as_clearly_as_the_cli(env, tmp_path):
    import nasrobust
    from nasrobust.errors import EncodingError, UnknownNameError
    from nasrobust.store import StoreNotFoundError

    with pytest.raises(StoreNotFoundError, match="create=True"):
        nasrobust.open_results(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()
    nasrobust.open_results(tmp_path / "new.db", create=True).close()
    with nasrobust.open_results(env["db"], readonly=True) as store:
        assert len(store.query(ENC)) == 1
        assert store.query(ENC, suite="natural") == []  # a registered suite with nothing stored: empty, not an error
        with pytest.raises(UnknownNameError, match="Did you mean 'adversarial'"):
            store.query(ENC, suite="adversrial")
        with pytest.raises(UnknownNameError, match="Did you mean 'nb201'"):
            store.query("nb2001:" + ENC.partition(":")[2])
        with pytest.raises(EncodingError, match="malformed nb201 encoding"):
            store.query("nb201:|nor_conv_3x3~0|+|bogus~0|")
        with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
            store.count(dataset="digitz")
        with pytest.raises(nasrobust.NasRobustError, match="opened with readonly=True"):
            store.write(Record(ResultKey("nb201", ENC, "w", "digits", "natural", "clean", 0.0, "accuracy"), 1.0, PGD))
        with pytest.raises(nasrobust.NasRobustError, match="is the input store"):
            store.export(env["db"])


def test_query_imports_neither_numpy_nor_torch(env):
    code = ("import sys; from nasrobust.cli.main import main; "
            f"main(['query', '--db', {str(env['db'])!r}, '--arch', {ENC!r}]); "
            "heavy = {'numpy', 'torch', 'pandas'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# ----------------------------------------------------------------------------- fuzz
GARBAGE = ["", " ", "x", "-1", "0", "1e999", "nan", "None", "[", "a,b", "=", "1=2", "..", "/proc/x", "\u00e9\u00e8",
           "nb201:", "nb201:|", "bignas:r", ":", "zoo:", "store:", "adversarial.eps=", "a" * 300]


def malformed_encoding(rng: random.Random) -> str:
    base = rng.choice([ENC, BIGNAS, "darts:" + "x" * 8, "robarch-s", "nb201:123", "ofa-mbv3:"])
    chars = list(base)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(chars) + 1)
        op = rng.random()
        if op < 0.4 and chars:
            del chars[min(i, len(chars) - 1)]
        elif op < 0.8:
            chars.insert(i, rng.choice("|+~:-0123456789xyz_ "))
        else:
            chars[min(i, len(chars) - 1):] = []
    return "".join(chars)


def fuzz_argv(rng: random.Random, e: dict[str, Path], out: Path) -> list:
    """One sub-command with a valid, cheap base argv and one or two options made malformed."""
    enc = lambda: malformed_encoding(rng)  # noqa: E731
    junk = lambda: rng.choice(GARBAGE)  # noqa: E731
    d = e["dir"]
    bases = {
        "describe": (["describe", "--space", "nb201", "--arch", enc()], ["--num-classes", "--input-size"]),
        "sample": (["sample", "--space", rng.choice(["nb201", "bignas", junk()]), "--n", "2", "--out", out / "a.jsonl"],
                   ["--n", "--seed", "--input-size", "--num-classes", "--out"]),
        "query": (["query", "--db", e["db"], "--arch", enc()], ["--suite", "--dataset", "--space", "--metric"]),
        "export": (["export", "--db", e["db"], "--out", out / "x.csv", "--arch", enc()], ["--format", "--suite", "--out"]),
        "evaluate": (["evaluate", "--supernet", e["sn"], "--arch", enc(), "--suites", "natural", "--db", out / "r.db",
                      "--n-examples", "8", "--recalib-images", "50", "--cache-dir", out / "c", "--no-progress"],
                     ["--suites", "--suite-option", "--n-examples", "--batch-size", "--reference", "--dataset"]),
        "search": (["search", "--space", "nb201", "--metric", rng.choice(["cost:params", f"store:{e['db']}:x/y", junk()]),
                    "--budget", "2", "--out", out / "s", "--no-progress"],
                   ["--searcher", "--option", "--max-flops", "--penalty", "--budget"]),
        "analyze": (["analyze", "--db", e["db"], "--out", out / "rep", "--n-boot", "10"],
                    ["--space", "--metrics", "--methods", "--covariates", "--alpha", "--top"]),
        "cka": (["cka", "--a", f"{e['sn']}#{enc()}", "--out", out / "c.png", "--n-examples", "16"],
                ["--layers", "--kernel", "--batch-size", "--dataset"]),
        "train": (["train", "--space", "nb201", "--arch", enc(), "--out", out / "t", *TINY_TRAIN],
                  ["--preset", "--lr", "--optimizer", "--build-option", "--adv"]),
        "train-supernet": (["train-supernet", "--space", rng.choice(["nb201", junk()]), "--out", out / "sn",
                            "--dataset", "digits", "--epochs", "1", "--no-progress", *NB],
                           ["--preset", "--batch-size", "--schedule", "--supernet-option", "--lr"]),
        "study": (["study", "--space", rng.choice(["nb201", junk()]), "--num-archs", "3", "--dataset", "digits",
                   "--out", out / "st", "--epochs", "1", "--eval-archs", "1", "--n-examples", "8", "--no-progress", *NB],
                  ["--suites", "--protocol", "--preset", "--suite-option", "--num-archs"]),
        "merge": (["merge", out / "m.db", rng.choice([e["db"], d / "afile", d / "garbage.pt", junk()])], []),
        "spaces": (["spaces"], ["--json"]),
    }
    name = rng.choice(sorted(bases))
    argv, options = bases[name]
    for flag in rng.sample(options, k=min(len(options), rng.randint(1, 2))):
        argv += [flag, junk() if rng.random() < 0.7 else enc()]
    return argv


@pytest.mark.slow
def test_fuzz_malformed_encodings_and_options(env, tmp_path, capsys):
    """80 seeded random commands: each ends with exit 0 or 2 and never a traceback."""
    rng = random.Random(20260101)
    for i in range(80):
        out = tmp_path / f"run{i}"
        out.mkdir()
        argv = fuzz_argv(rng, env, out)
        code, stdout, err = run_cli(capsys, argv)
        assert code in (0, 2), f"{argv}: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in err, f"{argv}\n{err[-2000:]}"
