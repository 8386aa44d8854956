"""Small real models for suite tests: trained quickly on real MNIST, cached per test process."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from nasrobust.data import load_dataset, stack
from nasrobust.models import ImageClassifier


def small_cnn(width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * 7 * 7, 10),
    )


@functools.lru_cache(maxsize=4)
def trained_mnist_model(width: int = 8, steps: int = 150, seed: int = 0) -> ImageClassifier:
    """A small CNN trained for ``steps`` SGD steps on mnist5k's training split (~96% test accuracy
    at the defaults), in eval mode. Cached so several tests share it; do not modify it."""
    data = load_dataset("mnist5k")
    x, y = stack(data.train)
    torch.manual_seed(seed)
    model = ImageClassifier(small_cnn(width), 28, data.info.mean, data.info.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
