"""Batched prediction and clean accuracy, shared by the trainer and the evaluator."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for ``images`` (N, C, H, W) in eval mode, on the model's device; returned on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        outs = [model(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``dataset``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            correct += int((model(x.to(device)).argmax(-1).cpu() == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(1, total)
