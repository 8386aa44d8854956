"""A short per-layer summary of a built network (for ``nasrobust describe``)."""

from __future__ import annotations

import torch.nn as nn

from nasrobust.cli.common import format_table


def layer_summary(model: nn.Module, depth: int = 2) -> str:
    """Modules down to ``depth`` levels with their type and parameter count."""
    rows = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if 0 < level <= depth:
            n = sum(p.numel() for p in module.parameters())
            rows.append(("  " * (level - 1) + name.rsplit(".", 1)[-1], type(module).__name__, f"{n:,}"))
    return format_table(rows, ["module", "type", "params"])
