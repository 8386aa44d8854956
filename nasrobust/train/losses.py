"""Losses: cross-entropy with hard or soft targets, and distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against class indices or (mixup/cutmix) soft target distributions."""
    if target.dtype.is_floating_point:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, scaled by T^2 (Hinton et al. 2015).

    ``teacher`` are logits and must be detached by the caller (in-place distillation).
    """
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean", log_target=True) * t * t


def correct_count(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Correct predictions as a 0-dim tensor on the logits' device (no host-device sync); soft targets count their arg-max class."""
    if target.dtype.is_floating_point:
        target = target.argmax(dim=-1)
    return (logits.argmax(dim=-1) == target).sum()

