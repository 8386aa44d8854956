"""nasrobust: how neural-architecture choices affect robustness.

The light API (spaces, encodings, cost) imports without torch; the rest is loaded on first
use, so ``nasrobust sample`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from nasrobust.budget import Budget, BudgetSample
from nasrobust.cost import Cost, CostCounter, measure_cost
from nasrobust.errors import EncodingError, NasRobustError, SpaceError, UnknownNameError
from nasrobust.space import SPACES, Arch, SearchSpace, decode, get_space, list_spaces, register_space

__version__ = "0.1.0"

# name -> module that defines it; imported lazily (these modules import torch).
_LAZY = {
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


__all__ = [
    "Arch",
    "Budget",
    "BudgetSample",
    "Cost",
    "CostCounter",
    "EncodingError",
    "NasRobustError",
    "SPACES",
    "SearchSpace",
    "SpaceError",
    "UnknownNameError",
    "decode",
    "get_space",
    "list_spaces",
    "measure_cost",
    "register_space",
    *_LAZY,
]
