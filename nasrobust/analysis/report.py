"""The analysis report: every analysis of this package on one result store, as HTML, Markdown and CSV.

``nasrobust analyze --db results.db --space bignas --out report/`` writes

* ``report.html`` -- self-contained (figures embedded as base64 PNG);
* ``report.md`` with the same tables, figures in ``figures/*.png``;
* ``tables/*.csv`` -- every number shown, at full precision, so nothing in the report has to
  be read off a figure.

Every number is a deterministic function of the store and the options (seeded bootstrap
resamples, seeded cross-validation, no timestamps), so rerunning the same command on the same
store rewrites identical files; the report states the command and the settings.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import nasrobust
from nasrobust.analysis import correlation, effects, plots, ranking, stats
from nasrobust.analysis.surrogate import Surrogate
from nasrobust.analysis.table import ResultTable, Source, build_table
from nasrobust.errors import NasRobustError
from nasrobust.noise.base import CLEAN

log = logging.getLogger(__name__)


#: Columns shown in the report's tables (the CSV files keep all of them).
_CORR_SHOWN = ["factor", "metric", "n", "r", "ci_low", "ci_high", "p", "p_adj", "significant"]
_PARTIAL_SHOWN = ["factor", "metric", "n", "r_raw", "r", "ci_low", "ci_high", "p_adj", "significant"]
_EFFECT_SHOWN = ["choice", "metric", "groups", "n", "statistic", "effect", "effect_name", "p_adj", "significant"]


@dataclass(frozen=True)
class ReportOptions:
    """Everything that decides the report's numbers (all stated in the report)."""

    space: str | None = None
    dataset: str | None = None
    weights_id: str | None = None
    metrics: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None  # None: the metrics suites declare diagnostic (check flags)
    methods: tuple[str, ...] = stats.METHODS
    n_boot: int = 1000
    seed: int = 0
    correction: str = "bh"
    alpha: float = 0.05
    test: str = "kruskal"
    covariates: tuple[str, ...] = ("params", "flops", "clean")
    surrogate: str | None = "gbt"
    surrogate_metrics: tuple[str, ...] = ()
    pareto_metric: str | None = None
    top: int = 6
    max_heatmap_metrics: int = 40
    min_archs: int = 3


@dataclass(frozen=True)
class Report:
    """Where the report went."""

    out: Path
    html: Path
    markdown: Path
    tables: dict[str, Path]
    figures: dict[str, Path]
    notes: tuple[str, ...]


@dataclass
class _Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # caption, figure name


def build_report(source: Source, out: str | Path, options: ReportOptions = ReportOptions(),
                 command: str | None = None) -> Report:
    """Run every analysis on the store and write the report into ``out`` (see the module docstring)."""
    o = options
    table = build_table(source, o.space, dataset=o.dataset, weights_id=o.weights_id, metrics=o.metrics,
                        exclude=o.exclude, min_archs=o.min_archs)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    notes = list(table.notes)
    csv: dict[str, pd.DataFrame] = {"table": table.frame, "skipped": table.skipped}
    figs: dict[str, bytes] = {}
    sections: list[_Section] = []

    sections.append(_overview(table, o, source, command))
    if len(table.skipped):
        s = _Section("Columns not analysed")
        s.text.append("Constant columns (no variance) and columns measured on too few architectures are listed, not analysed.")
        s.tables.append(("", table.skipped))
        sections.append(s)

    # -- correlations
    corr = correlation.correlations(table, methods=o.methods, n_boot=o.n_boot, seed=o.seed, correction=o.correction,
                                    alpha=o.alpha)
    csv["correlations"] = corr
    main = o.methods[0]
    s = _Section("Factor-metric correlations")
    n_sig = corr.groupby("method")["significant"].sum()
    s.text.append(
        f"{len(table.factors)} factors x {len(table.metrics)} metrics, methods {', '.join(o.methods)}; 95% intervals from "
        f"{o.n_boot} bootstrap resamples of the architectures (seed {o.seed}); p-values adjusted with "
        f"{stats.CORRECTION_NAMES[o.correction]} over all pairs of one method; significant at adjusted p < {o.alpha}: "
        + ", ".join(f"{m} {int(n_sig.get(m, 0))}" for m in o.methods) + "."
    )
    top = correlation.strongest(corr, k=20, method=main, significant_only=False)
    s.tables.append((f"Strongest {main} relations (one per metric; full table in tables/correlations.csv)",
                     _round(top[_CORR_SHOWN])))
    figs["correlations"] = plots.to_png(plots.correlation_heatmap(corr, main, o.max_heatmap_metrics))
    s.figures.append((f"{main} r of every factor with the {min(o.max_heatmap_metrics, len(table.metrics))} metrics "
                      "with the largest |r|; dots: significant after correction", "correlations"))
    pairs = correlation.strongest(corr, k=o.top, method=main, significant_only=True)
    if pairs.empty:
        s.text.append("No factor-metric relation is significant after correction; the scatter plots show the largest |r|.")
        pairs = correlation.strongest(corr, k=o.top, method=main, significant_only=False)
    figs["strongest"] = plots.to_png(plots.strongest_scatter(table, pairs))
    s.figures.append(("Strongest relations, with least-squares line and the mean per factor value", "strongest"))
    sections.append(s)

    # -- partial correlations
    s = _Section("Partial correlations (controlling for capacity)")
    parts = []
    for cov in o.covariates:
        try:
            parts.append(correlation.partial_correlations(table, [cov], methods=("spearman",), n_boot=o.n_boot,
                                                          seed=o.seed, correction=o.correction, alpha=o.alpha))
        except NasRobustError as exc:
            s.text.append(f"Not controlled for {cov}: {exc}")
    if parts:
        partial = pd.concat(parts, ignore_index=True)
        csv["partial_correlations"] = partial
        s.text.append("Spearman partial correlations: factor and metric ranks residualised on the covariate's ranks; "
                      "t test on n - 3 degrees of freedom, same correction. r_raw is the plain correlation.")
        for cov, sub in partial.groupby("covariates", sort=False):
            best = sub.assign(_a=sub["r"].abs()).sort_values("_a", ascending=False, kind="mergesort")
            best = best.drop_duplicates("metric").head(10)
            s.tables.append((f"Given {cov}: strongest remaining relations", _round(best[_PARTIAL_SHOWN])))
    sections.append(s)

    # -- grouped effects
    s = _Section("Effects of categorical choices")
    try:
        eff = effects.grouped_effects(table, test=o.test, n_boot=o.n_boot, seed=o.seed, correction=o.correction,
                                      alpha=o.alpha)
        csv["effects_levels"], csv["effects_tests"] = eff.levels, eff.tests
        s.text.append(f"Per choice value: mean with 95% bootstrap interval. Test: {effects.TEST_NAMES[o.test]} "
                      f"({'epsilon-squared' if o.test == 'kruskal' else 'eta-squared'} as effect size), "
                      f"{stats.CORRECTION_NAMES[o.correction]} over all choice x metric tests; "
                      f"{int(eff.tests['significant'].sum())} of {len(eff.tests)} significant.")
        top_tests = eff.tests.sort_values(["significant", "effect"], ascending=[False, False], kind="mergesort").head(15)
        s.tables.append(("Largest effects", _round(top_tests[_EFFECT_SHOWN])))
        figs["effects"] = plots.to_png(plots.effects_plot(eff.levels, eff.tests, k=o.top))
        s.figures.append(("Mean and 95% CI per choice value, largest effects", "effects"))
    except NasRobustError as exc:
        s.text.append(f"Not computed: {exc}")
    sections.append(s)

    # -- ranking agreement and Pareto fronts
    s = _Section("Do the same architectures win? Ranking agreement")
    scores = None
    try:
        scores = ranking.rank_scores(table)
        agree = ranking.ranking_agreement(table)
        csv["rank_scores"], csv["ranking_agreement"] = scores, agree
        s.text.append("Each noise group ranks the architectures by a Borda score (mean oriented percentile rank over the "
                      "group's columns): " + "; ".join(f"{k}: {g.doc}" for k, g in ranking.rank_groups().items()
                                                      if k in scores.columns) + ".")
        s.tables.append(("Kendall tau and shared top-10% architectures", _round(agree)))
        figs["ranking"] = plots.to_png(plots.agreement_heatmap(ranking.agreement_matrix(agree, "tau")))
        s.figures.append(("Kendall tau between the rankings", "ranking"))
        figs["top_overlap"] = plots.to_png(plots.agreement_heatmap(
            ranking.agreement_matrix(agree, "top_overlap"), "Fraction of top-10% architectures shared"))
        s.figures.append(("Overlap of the top 10% (chance level: 0.1)", "top_overlap"))
    except NasRobustError as exc:
        s.text.append(f"Not computed: {exc}")
    clean = table.clean_column()
    for name, robust in _pareto_targets(table, o.pareto_metric):
        figs[f"pareto_{name}"] = plots.to_png(plots.pareto_plot(table, robust, clean if clean != robust else None))
        caption = (f"Pareto fronts: clean vs {robust} (ringed: non-dominated in clean, robust and FLOPs) "
                   f"and {robust} vs FLOPs")
        s.figures.append((caption, f"pareto_{name}"))
    sections.append(s)

    # -- surrogates
    s = _Section("Surrogate predictors")
    if o.surrogate:
        rows, imps = [], []
        for target in _surrogate_targets(table, scores, o.surrogate_metrics):
            try:
                sur = Surrogate.fit(target[1], metric=target[0], model=o.surrogate, seed=o.seed)
            except NasRobustError as exc:
                s.text.append(f"No surrogate for {target[0]}: {exc}")
                continue
            rows.append(sur.summary())
            imps.append(sur.importance.assign(metric=sur.metric))
        if rows:
            summary = pd.DataFrame(rows)
            csv["surrogates"] = summary
            csv["surrogate_importance"] = pd.concat(imps, ignore_index=True)
            s.text.append(f"{o.surrogate} on space.to_vector(arch); out-of-fold predictions from 5-fold CV (seed {o.seed}). "
                          "cv_kendall_tau is the rank agreement of predictions with measurements on held-out "
                          "architectures; score/<group> targets are the Borda scores above. Feature importance: "
                          "increase of held-out MSE when the feature is permuted.")
            s.tables.append(("Cross-validated quality", _round(summary)))
            s.tables.append(("Top features per target", _round(pd.concat(
                [i.head(3) for i in imps], ignore_index=True)[["metric", "feature", "permutation_mean", "model_importance"]])))
    else:
        s.text.append("Skipped (--surrogate none).")
    sections.append(s)

    if notes:
        sections.insert(1, _Section("Notes", text=[f"- {n}" for n in notes]))

    # -- write
    tables = {}
    for name, frame in csv.items():
        path = out / "tables" / f"{name}.csv"
        frame.to_csv(path, index=name in ("table", "rank_scores"), float_format="%.17g")
        tables[name] = path
    figures = {}
    for name, png in figs.items():
        path = out / "figures" / f"{name}.png"
        path.write_bytes(png)
        figures[name] = path
    md = out / "report.md"
    md.write_text(_markdown(sections, table))
    page = out / "report.html"
    page.write_text(_html(sections, table, figs))
    log.info("wrote %s, %s, %d tables, %d figures", page, md, len(tables), len(figures))
    return Report(out, page, md, tables, figures, tuple(notes))


# ----------------------------------------------------------------------------- choices
def _pareto_targets(table: ResultTable, override: str | None) -> list[tuple[str, str]]:
    """(group, column) of the Pareto plots: the given column, or per noise group its most spread-out column."""
    if override:
        col = table.resolve(override) if override in table.metrics or override == "clean" else \
            table.select_metrics([override])[0]
        return [("custom", col)]
    out = []
    for name, group in ranking.rank_groups().items():
        if name == CLEAN:
            continue
        cols = ranking.group_columns(table, group)
        if cols:
            spread = table.frame[cols].std()
            out.append((name, str(spread.sort_values(ascending=False, kind="mergesort").index[0])))
    return out


def _surrogate_targets(table: ResultTable, scores: pd.DataFrame | None,
                       extra: Sequence[str]) -> list[tuple[str, ResultTable]]:
    """Clean accuracy, each noise group's Borda score and any requested metric, with the table to fit on."""
    targets: list[tuple[str, ResultTable]] = []
    clean = table.clean_column()
    if clean:
        targets.append((clean, table))
    if scores is not None:
        derived = {f"score/{c}": scores[c] for c in scores.columns if c != CLEAN}
        if derived:
            frame = pd.concat([table.frame, pd.DataFrame(derived, index=table.frame.index)], axis=1)
            scored = dataclasses.replace(table, frame=frame, metrics=(*table.metrics, *derived),
                                         directions={**table.directions, **{k: 1 for k in derived}})
            targets += [(name, scored) for name in derived]
    for pattern in extra:
        for col in table.select_metrics([pattern]):
            targets.append((col, table))
    return targets


# ----------------------------------------------------------------------------- rendering
def _round(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    out = frame.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}g}")
    return out


def _overview(table: ResultTable, o: ReportOptions, source: Source, command: str | None) -> _Section:
    s = _Section("Overview")
    store = getattr(source, "path", source)
    s.text.append(f"Store {store}: space **{table.space}**, dataset **{table.dataset}**, {table.n_archs} architectures, "
                  f"{table.n_records} records, {len(table.factors)} factors, {len(table.metrics)} metrics analysed.")
    settings = {k: v for k, v in dataclasses.asdict(o).items()}
    s.text.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + f"; nasrobust {nasrobust.__version__}.")
    if command:
        s.text.append(f"Reproduce with `{command}` (same store, same numbers).")
    return s


def _md_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines)


def _markdown(sections: list[_Section], table: ResultTable) -> str:
    parts = [f"# Robustness analysis: {table.space} on {table.dataset}", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        for t in s.text:
            parts += [t, ""]
        for caption, frame in s.tables:
            if caption:
                parts += [f"**{caption}**", ""]
            parts += [_md_table(frame), ""]
        for caption, name in s.figures:
            parts += [f"![{caption}](figures/{name}.png)", "", f"*{caption}*", ""]
    return "\n".join(parts)


_CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}img{max-width:100%}figcaption{font-style:italic;font-size:13px}code{background:#f3f3f3}"""


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code` (the only markup the report text uses)."""
    out = html.escape(text)
    for mark, tag in (("**", "b"), ("`", "code")):
        pieces = out.split(mark)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
    return out


def _html(sections: list[_Section], table: ResultTable, figs: dict[str, bytes]) -> str:
    title = html.escape(f"Robustness analysis: {table.space} on {table.dataset}")
    body = [f"<h1>{title}</h1>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{_inline(t)}</p>" for t in s.text]
        for caption, frame in s.tables:
            if caption:
                body.append(f"<p><b>{html.escape(caption)}</b></p>")
            body.append(frame.to_html(index=False, escape=True, border=0))
        for caption, name in s.figures:
            data = base64.b64encode(figs[name]).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")
