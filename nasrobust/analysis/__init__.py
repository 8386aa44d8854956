"""Analysis: which architecture factors go with robustness, representation similarity, and the report.

* :func:`build_table` -- the store as architectures x (factors, params, FLOPs, metrics);
* :func:`correlations` / :func:`partial_correlations` -- Spearman / Kendall / Pearson with
  bootstrap CIs and corrected p-values, optionally controlling for capacity;
* :func:`grouped_effects` -- per-choice means and Kruskal-Wallis / ANOVA tests
  (each space declares its choices, :meth:`nasrobust.space.SearchSpace.choices`);
* :func:`ranking_agreement` -- do the same architectures win under every noise type;
* :class:`Surrogate` -- a cross-validated predictor of one metric for unevaluated architectures;
* :func:`layer_cka` / :func:`block_structure` -- minibatch CKA between layers (torch, lazy);
  :mod:`~nasrobust.analysis.cka_compare` adds bootstrap intervals and per-layer comparisons;
* :func:`replication_report` -- findings that replicate across supernet seeds, technique x factor
  effects, supernet vs stand-alone agreement (``nasrobust analyze --runs config.toml``);
* :func:`build_report` -- all of it as HTML + Markdown + CSV (``nasrobust analyze``).

Every function returns pandas DataFrames (or frozen dataclasses holding them). The modules
that need torch, scikit-learn or matplotlib are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from nasrobust.analysis.correlation import correlations, partial_correlations, strongest
from nasrobust.analysis.effects import Effects, choice_frame, grouped_effects
from nasrobust.analysis.ranking import (
    agreement_matrix,
    pareto_front,
    rank_scores,
    rank_groups,
    ranking_agreement,
)
from nasrobust.analysis.replication import ReplicationOptions, RunLabel, read_runs, replication_report
from nasrobust.analysis.table import ResultTable, build_table, metric_column, table_from_frame

_LAZY = {
    "Surrogate": "nasrobust.analysis.surrogate",
    "Prediction": "nasrobust.analysis.surrogate",
    "layer_cka": "nasrobust.analysis.cka",
    "block_structure": "nasrobust.analysis.cka",
    "MinibatchCKA": "nasrobust.analysis.cka",
    "build_report": "nasrobust.analysis.report",
    "ReportOptions": "nasrobust.analysis.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasrobust.analysis' has no attribute {name!r}")


__all__ = [
    "ReplicationOptions",
    "RunLabel",
    "read_runs",
    "replication_report",
    "Effects",
    "ResultTable",
    "agreement_matrix",
    "build_table",
    "choice_frame",
    "correlations",
    "grouped_effects",
    "metric_column",
    "pareto_front",
    "partial_correlations",
    "rank_groups",
    "rank_scores",
    "ranking_agreement",
    "strongest",
    "table_from_frame",
    *_LAZY,
]
