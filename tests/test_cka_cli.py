"""``nasrobust cka`` end to end on real checkpoints and mnist5k test digits, and its errors."""

from __future__ import annotations

import json

import pytest
import torch

from nasrobust import checkpoint, get_space
from nasrobust.cli.main import main
from nasrobust.data import load_dataset
from nasrobust.models import ImageClassifier
from nasrobust.supernet import build_supernet
from nasrobust.train import Recipe

SPACE = get_space("bignas-small")
ARCH = SPACE.smallest()


def _standalone(path, seed: int, dataset: str = "mnist5k"):
    """A stand-alone checkpoint of ``ARCH`` initialised with ``seed`` (CKA needs no training to be defined)."""
    info = load_dataset(dataset).info
    torch.manual_seed(seed)
    model = ImageClassifier(SPACE.build(ARCH, num_classes=info.num_classes, input_size=info.image_size),
                            SPACE.resolution(ARCH, info.image_size), info.mean, info.std)
    meta = checkpoint.CheckpointMeta(kind="standalone", space=SPACE.name, arch=ARCH.encoding, dataset=info.__dict__,
                                     recipe=Recipe().to_dict())
    return checkpoint.save(path, meta, model.state_dict())


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cka")
    info = load_dataset("mnist5k").info
    supernet = build_supernet(SPACE.name, info.image_size, info.mean, info.std, num_classes=10)
    meta = checkpoint.CheckpointMeta(kind="supernet", space=SPACE.name, dataset=info.__dict__, recipe=Recipe().to_dict(),
                                     supernet={"num_classes": 10})
    return {
        "a": _standalone(root / "a" / "checkpoint.pt", 0),
        "b": _standalone(root / "b" / "checkpoint.pt", 1),
        "digits": _standalone(root / "digits" / "checkpoint.pt", 2, "digits"),
        "supernet": checkpoint.save(root / "super" / "checkpoint.pt", meta, supernet.state_dict()),
    }


FAST = ["--n-examples", "200", "--batch-size", "50", "--n-boot", "200"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["cka", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_two_models_happy_path_rerun_and_force(ckpts, tmp_path, capsys):
    out = tmp_path / "ab.png"
    rc, stdout, _ = _run(capsys, "--a", ckpts["a"], "--b", ckpts["b"], *FAST, "--out", out)
    assert rc == 0
    for name in ("ab.png", "ab.csv", "ab.json", "ab_self_a.csv", "ab_self_b.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "ab.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "ab.json").read_text())
    assert report["n_examples"] == 200 and report["batches"] == 4 and report["bootstrap"]["n_boot"] == 200
    assert report["command"].startswith("nasrobust cka --a ") and "--seed 0" in report["command"]
    per_layer = report["per_layer"]
    assert [p["layer"] for p in per_layer] == report["layers_a"] == report["layers_b"]
    assert all(p["cka"]["low"] <= p["cka"]["value"] + 1e-9 and p["cka"]["value"] <= p["cka"]["high"] + 1e-9
               for p in per_layer)
    for key in ("a", "b"):
        assert report["block_structure"][key]["score"]["low"] is not None
    assert "block score a - b" in stdout and "long range a - b" in stdout and "per-layer CKA a vs b" in stdout
    assert report["models"]["a"]["label"] == "a"  # the run folder of a/checkpoint.pt
    # no silent overwrite; --force reruns and gives the same numbers (seeded images, batches, bootstrap)
    rc, _, err = _run(capsys, "--a", ckpts["a"], "--b", ckpts["b"], *FAST, "--out", out)
    assert rc == 2 and "--force" in err
    rc, _, _ = _run(capsys, "--a", ckpts["a"], "--b", ckpts["b"], *FAST, "--out", out, "--force")
    assert rc == 0 and json.loads((tmp_path / "ab.json").read_text()) == report


def test_identical_models_have_cka_one_on_the_diagonal(ckpts, tmp_path, capsys):
    rc, stdout, _ = _run(capsys, "--a", ckpts["a"], "--b", ckpts["a"], *FAST, "--out", tmp_path / "aa.png")
    assert rc == 0
    report = json.loads((tmp_path / "aa.json").read_text())
    assert all(p["cka"]["value"] == pytest.approx(1.0, abs=1e-9) for p in report["per_layer"])
    assert report["depth_trend"] is None and "identical" in stdout


def test_one_model_self_similarity(ckpts, tmp_path, capsys):
    rc, stdout, _ = _run(capsys, "--a", ckpts["a"], *FAST, "--layers", "ReLU", "--out", tmp_path / "self.png")
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["self.csv", "self.json", "self.png"]
    report = json.loads((tmp_path / "self.json").read_text())
    assert report["per_layer"] is None and list(report["block_structure"]) == ["a"]
    assert any(name.endswith("#1") for name in report["layers_a"])  # a block's ReLU runs twice
    assert stdout.count("block structure of") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "{tmp}/x.jpg"], "give a .png"),
        (["--batch-size", "3"], "at least 4 examples per batch"),
        (["--n-examples", "3"], "at least 4 examples"),
        (["--n-boot", "-1"], "--n-boot must be >= 0"),
        (["--epochs", "2"], "--n-boot 0"),
        (["--n-examples", "60", "--batch-size", "50"], "--batch-size 30 or less"),
        (["--confidence", "95"], "between 0 and 1"),
        (["--min-block", "1"], "--min-block must be at least 2"),
        (["--kernel", "rbf", "--rbf-threshold", "0"], "--rbf-threshold must be positive"),
        (["--n-examples", "5000"], "--n-examples 1000 or less"),
        (["--layers", "Attention"], "no module matches --layers Attention"),
        (["--b", "{digits}"], "pass --dataset NAME"),
        (["--b", "{tmp}/missing"], "no checkpoint at"),
        (["--b", "{b}#"], "encoding after '#'"),
        (["--b", "{b}#bignas-small:r24"], "drop '#bignas-small:r24'"),
        (["--b", "{supernet}"], "#ENCODING"),
        (["--dataset", "imagenet21k"], "imagenet21k"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_exit_2(ckpts, tmp_path, capsys, argv, message):
    fill = {"tmp": tmp_path, "digits": ckpts["digits"], "b": ckpts["b"], "supernet": ckpts["supernet"]}
    argv = [a.format(**fill) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "cka.png")]
    rc, _, err = _run(capsys, "--a", ckpts["a"], "--n-examples", "100", "--batch-size", "25", "--n-boot", "20",
                      *argv, *out)
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("nasrobust cka: error:")
    assert message in err
    assert not (tmp_path / "cka.png").exists()
