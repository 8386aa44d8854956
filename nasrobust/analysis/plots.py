"""Figures of the analysis report (matplotlib, Agg, no pyplot state).

Each function takes the DataFrames the analyses return and gives back a
:class:`matplotlib.figure.Figure`; :func:`to_png` renders one to PNG bytes without metadata
that changes between runs, so a rerun of ``nasrobust analyze`` writes byte-identical images.
Figures are built on ``Figure`` objects directly (not ``pyplot``), so nothing depends on the
interactive backend or leaks between figures.
"""

from __future__ import annotations

import io
import math
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nasrobust.analysis.ranking import pareto_front
from nasrobust.analysis.table import ResultTable

DPI = 100


def to_png(fig: Figure) -> bytes:
    """PNG bytes of a figure, with no software/version metadata (reproducible files)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.0, 3.2)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def correlation_heatmap(corr: pd.DataFrame, method: str = "spearman", max_metrics: int = 40) -> Figure:
    """Factors x metrics heatmap of one method's r; a dot marks pairs significant after correction.

    With more than ``max_metrics`` metrics, the ones with the largest |r| for any factor are shown.
    """
    sub = corr[corr["method"] == method]
    r = sub.pivot(index="factor", columns="metric", values="r")
    sig = sub.pivot(index="factor", columns="metric", values="significant").reindex_like(r)
    factors = list(dict.fromkeys(sub["factor"]))
    metrics = list(dict.fromkeys(sub["metric"]))
    if len(metrics) > max_metrics:
        strength = r.abs().max(axis=0).reindex(metrics).fillna(0.0)
        keep = set(strength.sort_values(ascending=False, kind="mergesort").index[:max_metrics])
        metrics = [m for m in metrics if m in keep]
    r = r.reindex(index=factors, columns=metrics)
    sig = sig.reindex(index=factors, columns=metrics).fillna(False).astype(bool)
    fig = Figure(figsize=(2.5 + 0.32 * len(metrics), 1.8 + 0.3 * len(factors)))
    ax = fig.subplots()
    im = ax.imshow(r.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ys, xs = np.nonzero(sig.to_numpy())
    ax.scatter(xs, ys, s=8, c="k", marker="o", label="significant (adjusted)")
    ax.set_xticks(range(len(metrics)), [_short(m) for m in metrics], rotation=90, fontsize=7)
    ax.set_yticks(range(len(factors)), factors, fontsize=8)
    ax.set_title(f"{method} correlation of architecture factors with metrics")
    fig.colorbar(im, ax=ax, shrink=0.8, label=method)
    return fig


def strongest_scatter(table: ResultTable, pairs: pd.DataFrame, ncols: int = 3) -> Figure:
    """Scatter plots of the given (factor, metric) pairs with a least-squares line and per-value means."""
    fig, axes = _grid(max(1, len(pairs)), ncols)
    if pairs.empty:
        axes[0].text(0.5, 0.5, "no significant relation", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, (_, row) in zip(axes, pairs.iterrows()):
        data = table.frame[[row["factor"], row["metric"]]].dropna()
        x = data[row["factor"]].to_numpy(dtype=float)
        y = data[row["metric"]].to_numpy(dtype=float)
        ax.scatter(x, y, s=14, alpha=0.6, color="tab:blue", label="architectures")
        if np.ptp(x) > 0:
            slope, icept = np.polyfit(x, y, 1)
            grid = np.linspace(x.min(), x.max(), 50)
            ax.plot(grid, slope * grid + icept, color="tab:red", lw=1.5, label="least squares")
        if len(np.unique(x)) <= 12:
            means = data.groupby(row["factor"])[row["metric"]].mean()
            ax.plot(means.index, means.to_numpy(), "o-", color="k", ms=4, lw=1, label="mean per value")
        ax.set_xlabel(row["factor"])
        ax.set_ylabel(_short(row["metric"], 30), fontsize=8)
        ax.set_title(f"{row['method']} {row['r']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}], "
                     f"p_adj {row['p_adj']:.1e}", fontsize=8)
    axes[0].legend(fontsize=6, loc="best")
    return fig


def effects_plot(levels: pd.DataFrame, tests: pd.DataFrame, k: int = 6, ncols: int = 3) -> Figure:
    """Mean and bootstrap CI of a metric per value of a choice, for the ``k`` largest effects."""
    ranked = tests.dropna(subset=["effect"]).sort_values(["significant", "effect"], ascending=[False, False], kind="mergesort")
    top = ranked.head(k)
    fig, axes = _grid(max(1, len(top)), ncols)
    if top.empty:
        axes[0].text(0.5, 0.5, "no testable choice", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, (_, t) in zip(axes, top.iterrows()):
        sub = levels[(levels["choice"] == t["choice"]) & (levels["metric"] == t["metric"])]
        pos = np.arange(len(sub))
        mean = sub["mean"].to_numpy(dtype=float)
        err = np.vstack([mean - sub["ci_low"].to_numpy(dtype=float), sub["ci_high"].to_numpy(dtype=float) - mean])
        ax.errorbar(pos, mean, yerr=np.nan_to_num(err), fmt="o", capsize=4, color="tab:blue")
        ax.set_xticks(pos, [f"{v}\n(n={n})" for v, n in zip(sub["value"], sub["n"])], fontsize=7)
        ax.set_xlabel(t["choice"])
        ax.set_ylabel(_short(t["metric"], 30), fontsize=8)
        ax.set_title(f"{t['effect_name']} {t['effect']:.2f}, p_adj {t['p_adj']:.1e}", fontsize=8)
    return fig


def pareto_plot(table: ResultTable, robust: str, clean: str | None, cost: str = "flops") -> Figure:
    """Left: clean vs robust accuracy coloured by cost, the architectures non-dominated in
    (clean, robust, cost) ringed. Right: robust accuracy vs cost with its two-objective front.

    Metric orientation (higher or lower is better) follows :attr:`ResultTable.directions`.
    """
    cols = [c for c in (clean, robust, cost) if c]
    data = table.frame[cols].dropna()
    sign = {c: table.directions.get(c, 1) for c in cols}
    maximize = [sign[c] > 0 for c in cols[:-1]] + [False]
    front = pareto_front(data[cols].to_numpy(dtype=float), maximize)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    c = np.log10(np.maximum(data[cost].to_numpy(dtype=float), 1.0))
    if clean:
        sc = ax1.scatter(data[clean], data[robust], c=c, cmap="viridis", s=16)
        ax1.scatter(data.loc[front, clean], data.loc[front, robust], s=60, facecolors="none", edgecolors="r",
                    label="Pareto-optimal")
        ax1.set_xlabel(_short(clean, 40))
        ax1.set_ylabel(_short(robust, 40))
        fig.colorbar(sc, ax=ax1, label=f"log10 {cost}")
        ax1.legend(fontsize=7)
    else:
        ax1.set_axis_off()
    ax2.scatter(data[cost], data[robust], s=16, color="tab:blue")
    front2 = pareto_front(data[[robust, cost]].to_numpy(dtype=float), [sign[robust] > 0, False])
    pts = data.loc[front2, [cost, robust]].sort_values(cost)
    ax2.step(pts[cost], pts[robust], where="post", color="r", lw=1, marker="o", ms=4,
             label=f"Pareto front of {cost} vs robust")
    ax2.set_xlabel(cost)
    ax2.set_ylabel(_short(robust, 40))
    ax2.legend(fontsize=7)
    return fig


def agreement_heatmap(matrix: pd.DataFrame, title: str = "Kendall tau between architecture rankings") -> Figure:
    """Square matrix with values written in the cells."""
    n = len(matrix)
    fig = Figure(figsize=(2 + 0.9 * n, 1.5 + 0.8 * n))
    ax = fig.subplots()
    vals = matrix.to_numpy(dtype=float)
    im = ax.imshow(vals, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(n):
        for j in range(n):
            if not np.isnan(vals[i, j]):
                ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="w" if abs(vals[i, j]) > 0.6 else "k")
    labels = [_short(str(x), 24) for x in matrix.index]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _cka_panel(ax, matrix: pd.DataFrame, title: str, label_every: int | None):
    vals = matrix.to_numpy(dtype=float)
    rows, cols = vals.shape
    im = ax.imshow(vals, cmap="magma", vmin=0, vmax=1, origin="lower", aspect="auto")
    step = label_every or max(1, max(rows, cols) // 25)
    ax.set_yticks(range(0, rows, step), [_short(str(x), 28) for x in matrix.index[::step]], fontsize=6)
    ax.set_xticks(range(0, cols, step), [_short(str(x), 28) for x in matrix.columns[::step]], rotation=90, fontsize=6)
    ax.set_ylabel(matrix.index.name or "layer")
    ax.set_xlabel(matrix.columns.name or "layer")
    ax.set_title(title, fontsize=9)
    return im


def cka_heatmap(matrix: pd.DataFrame, title: str = "linear CKA", label_every: int | None = None) -> Figure:
    """Layer x layer CKA heatmap (layer 0 at the bottom left, as in Kornblith et al. / Nguyen et al.)."""
    return cka_heatmaps([(title, matrix)], label_every=label_every)


def cka_heatmaps(panels: list[tuple[str, pd.DataFrame]], title: str | None = None,
                 label_every: int | None = None) -> Figure:
    """CKA heatmaps side by side on one colour scale (e.g. model a, model b, a vs b as in Cianfarani et al.)."""
    side = 1.5 + min(10, 0.2 * max(max(m.shape) for _, m in panels) + 3)
    fig = Figure(figsize=(side * len(panels) + 1.0, side), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    im = None
    for ax, (name, matrix) in zip(axes, panels):
        im = _cka_panel(ax, matrix, name, label_every)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="CKA")
    return fig


def blank(message: str) -> Figure:
    fig = Figure(figsize=(4, 1.2))
    ax = fig.subplots()
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return fig
