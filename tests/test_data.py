"""Datasets: the bundled real data, the fixed splits, and fabricated CIFAR / ImageNet folders."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nasrobust.data import DATASETS, interleave_by_class, load_dataset, stack
from nasrobust.errors import NasRobustError, UnknownNameError


def test_interleave_by_class():
    labels = np.array([2, 0, 0, 1, 2, 1, 0, 2, 1])
    order = interleave_by_class(labels)
    assert sorted(order.tolist()) == list(range(9))
    assert labels[order].tolist() == [0, 1, 2] * 3


def test_mnist5k_split_is_fixed_and_real():
    data = load_dataset("mnist5k")
    assert data.info.num_classes == 10 and data.info.image_size == 28 and data.info.channels == 1
    assert len(data.train) == 4000 and len(data.test) == 1000
    xt, yt = stack(data.test)
    assert xt.shape == (1000, 1, 28, 28) and xt.dtype == torch.float32
    assert 0.0 <= float(xt.min()) and float(xt.max()) <= 1.0
    assert yt[:20].tolist() == list(range(10)) * 2  # class-interleaved
    assert torch.bincount(yt).tolist() == [100] * 10
    xr, yr = stack(data.train)
    assert torch.bincount(yr).tolist() == [400] * 10
    # no image is in both parts
    train_set = {hash(x.numpy().tobytes()) for x in xr}
    assert sum(hash(x.numpy().tobytes()) in train_set for x in xt) <= 2  # MNIST has a few exact duplicates
    again = load_dataset("mnist5k")
    assert torch.equal(stack(again.test)[0], xt)


def test_digits():
    data = load_dataset("digits")
    assert len(data.train) + len(data.test) == 1797
    x, y = stack(data.test)
    assert x.shape[1:] == (1, 8, 8) and y[:10].tolist() == list(range(10))


def test_unknown_dataset_lists_valid():
    with pytest.raises(UnknownNameError, match="mnist5k"):
        load_dataset("mnist6k")


def _fake_cifar(root, n_train=20, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f)
    return folder


def test_cifar_from_fabricated_folder(tmp_path):
    folder = _fake_cifar(tmp_path)
    data = load_dataset("cifar10", root=tmp_path)
    assert len(data.train) == 100 and len(data.test) == 10
    x, y = stack(data.test)
    with (folder / "test_batch").open("rb") as f:
        raw = pickle.load(f)
    # rows hold R(1024) G(1024) B(1024) in row-major order: image i is data[i].reshape(3, 32, 32)
    expected = {bytes(row): label for row, label in zip(raw["data"], raw["labels"])}
    for img, label in zip(x, y):
        key = bytes(np.round(img.numpy() * 255).astype(np.uint8).reshape(-1))
        assert expected[key] == label


def test_cifar_missing_folder_says_how_to_fix(tmp_path):
    with pytest.raises(NasRobustError, match="--download"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(NasRobustError, match="--data-root"):
        load_dataset("cifar10")


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 3), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / part / c / f"{i}.png")
    data = load_dataset("imagefolder", root=tmp_path, image_size=32)
    assert data.info.num_classes == 2 and len(data.train) == 6 and len(data.test) == 4
    x, y = data.test[3]
    assert x.shape == (3, 32, 32) and y == 1
    with pytest.raises(NasRobustError, match="train"):
        load_dataset("imagefolder", root=tmp_path / "nope")


def test_registry_lists_all():
    assert {"mnist5k", "digits", "cifar10", "cifar100", "imagefolder"} <= set(DATASETS.names())
