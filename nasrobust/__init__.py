"""nasrobust: how neural-architecture choices affect robustness.

Every public name is loaded on first use (the spaces need numpy, most of the rest torch), so
``import nasrobust`` costs nothing and ``nasrobust query`` starts fast; the light API (spaces,
encodings, cost, budgets) still imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from nasrobust.errors import EncodingError, NasRobustError, SpaceError, UnknownNameError

__version__ = "0.1.0"

# name -> module that defines it; imported lazily.
_LAZY = {
    "Arch": "nasrobust.space",
    "SPACES": "nasrobust.space",
    "SearchSpace": "nasrobust.space",
    "decode": "nasrobust.space",
    "get_space": "nasrobust.space",
    "list_spaces": "nasrobust.space",
    "register_space": "nasrobust.space",
    "Budget": "nasrobust.budget",
    "BudgetSample": "nasrobust.budget",
    "Cost": "nasrobust.cost",
    "CostCounter": "nasrobust.cost",
    "measure_cost": "nasrobust.cost",
    "ImageClassifier": "nasrobust.models",
    "open_results": "nasrobust.store",
    "ResultStore": "nasrobust.store",
    "Protocol": "nasrobust.records",
    "Record": "nasrobust.records",
    "ResultKey": "nasrobust.records",
    "WorkUnit": "nasrobust.records",
    "RobustnessMetric": "nasrobust.metrics",
    "parse_metric": "nasrobust.metrics",
    "SEARCHERS": "nasrobust.search",
    "create_searcher": "nasrobust.search",
    "evaluate": "nasrobust.evaluation",
    "EvalProtocol": "nasrobust.evaluation",
    "EvaluationResult": "nasrobust.evaluation",
    "load_checkpoint": "nasrobust.evaluation",
    "Evaluator": "nasrobust.evaluator",
    "load_dataset": "nasrobust.data",
    "Recipe": "nasrobust.train.recipe",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasrobust' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["EncodingError", "NasRobustError", "SpaceError", "UnknownNameError", *_LAZY]
