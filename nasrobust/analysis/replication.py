"""Replicated findings: factor <-> metric relations checked across K supernets (seeds) and T techniques.

One supernet's bootstrap over architectures does not capture the variance of training the
supernet (two seeds gave opposite, both "significant" signs), so a relation counts as a
*finding* only when it is significant with the same sign in every replicate. The study's runs
come from ``[[runs]]`` in its config.toml (see /work/coord/RUNS.md); each run's rows are told
apart in the store by ``weights_id``.

Pooled estimate: the mean of the per-replicate estimates, with a percentile interval from a
*paired* bootstrap over subnets: one resample of the common subnets is applied to every
replicate and the replicate estimates are averaged per resample. The replicates score the same
subnets, so resampling subnets jointly keeps the architecture variance shared by the
replicates (an independent bootstrap per replicate would count it K times as independent).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats as sps

from nasrobust.analysis import correlation, stats
from nasrobust.analysis.table import ResultTable, Source, build_table, open_source
from nasrobust.errors import NasRobustError

if TYPE_CHECKING:
    from nasrobust.store import ResultStore

KINDS = ("supernet", "standalone")


@dataclass(frozen=True)
class RunLabel:
    """One trained model of a study: its store weights id and what it replicates."""

    weights_id: str
    technique: str = "standard"
    replicate: int = 0
    seed: int = 0
    kind: str = "supernet"


def read_runs(path: str | Path) -> list[RunLabel]:
    """The ``[[runs]]`` of a TOML file (a study's config.toml)."""
    path = Path(path)
    if not path.exists():
        raise NasRobustError(f"no runs file at {path}; pass the study's config.toml")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise NasRobustError(f"{path} is not valid TOML ({e}); fix or regenerate the study's config.toml") from None
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise NasRobustError(f"{path} has no [[runs]] tables; run `nasrobust study` to record them")
    out = []
    allowed = set(RunLabel.__dataclass_fields__)
    for i, r in enumerate(runs):
        unknown = set(r) - allowed
        if unknown or "weights_id" not in r:
            raise NasRobustError(f"{path}: run {i} needs weights_id and only {', '.join(sorted(allowed))} "
                                 f"(got {', '.join(sorted(r))})")
        label = RunLabel(weights_id=str(r["weights_id"]), technique=str(r.get("technique", "standard")),
                         replicate=int(r.get("replicate", 0)), seed=int(r.get("seed", 0)),
                         kind=str(r.get("kind", "supernet")))
        if label.kind not in KINDS:
            raise NasRobustError(f"{path}: run {i} kind {label.kind!r}; use one of {', '.join(KINDS)}")
        out.append(label)
    return out


@dataclass(frozen=True)
class ReplicationOptions:
    """What decides the replication report's numbers (all stated in it)."""

    space: str | None = None
    dataset: str | None = None
    metrics: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    methods: tuple[str, ...] = ("spearman", "kendall")
    n_boot: int = 1000
    seed: int = 0
    correction: str = "bh"
    alpha: float = 0.05
    power: float = 0.8
    min_archs: int = 3


# ----------------------------------------------------------------------------- estimators
def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b of two score vectors (NaN when one is constant)."""
    return float(stats.corr_matrix(np.asarray(a, float)[:, None], np.asarray(b, float)[:, None], "kendall")[0, 0])


def min_detectable_r(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |r| a two-sided test at ``alpha`` detects with ``power`` on ``n`` pairs (Fisher z)."""
    if n <= 3:
        return float("nan")
    z = (sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) / math.sqrt(n - 3)
    return float(np.tanh(z))


def permutation_p(a: np.ndarray, b: np.ndarray, seed: int = 0, n_perm: int = 10000) -> tuple[float, str]:
    """Two-sided permutation p of Kendall tau: exact for n <= 8, else ``n_perm`` seeded permutations."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    obs = abs(kendall_tau(a, b))
    n = len(a)
    if np.isnan(obs):  # a constant ranking: no tau, so no p (it used to read 0, "significant")
        return float("nan"), "undefined (a constant ranking)"
    if n <= 8:
        taus = np.array([kendall_tau(a, b[list(p)]) for p in itertools.permutations(range(n))])
        return float(np.mean(np.abs(taus) >= obs - 1e-12)), "exact"
    rng = np.random.default_rng([seed, n])
    taus = np.array([kendall_tau(a, b[rng.permutation(n)]) for _ in range(n_perm)])
    return float((1 + np.sum(np.abs(taus) >= obs - 1e-12)) / (n_perm + 1)), f"{n_perm} permutations"


def _boot_tau(a: np.ndarray, b: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return stats.boot_corr(a[:, None], b[:, None], "kendall", idx)[:, 0, 0]


# ----------------------------------------------------------------------------- the tables
def _tables(store: "ResultStore", runs: Sequence[RunLabel], o: ReplicationOptions) -> dict[RunLabel, ResultTable]:
    out = {}
    for run in runs:
        if run.kind != "supernet":
            continue
        out[run] = build_table(store, o.space, dataset=o.dataset, weights_id=run.weights_id, metrics=o.metrics,
                               exclude=o.exclude, min_archs=o.min_archs)
    return out


def _common(tables: Sequence[ResultTable]) -> tuple[list[str], list[str], list[str]]:
    """Subnets, factors and metrics present in every table (in the first table's order)."""
    first = tables[0]
    subnets = [s for s in first.frame.index if all(s in t.frame.index for t in tables[1:])]
    factors = [f for f in first.factors if all(f in t.factors for t in tables[1:])]
    metrics = [m for m in first.metrics if all(m in t.metrics for t in tables[1:])]
    return subnets, factors, metrics


def per_replicate(tables: dict[RunLabel, ResultTable], o: ReplicationOptions) -> pd.DataFrame:
    """The usual correlation table of each supernet run, tagged with technique and replicate."""
    frames = []
    for run, table in tables.items():
        corr = correlation.correlations(table, methods=o.methods, n_boot=o.n_boot, seed=o.seed,
                                        correction=o.correction, alpha=o.alpha)
        frames.append(corr.assign(technique=run.technique, replicate=run.replicate, weights_id=run.weights_id))
    return pd.concat(frames, ignore_index=True)


def _paired_boot(tables: Sequence[ResultTable], subnets: list[str], factors: list[str], metrics: list[str],
                 method: str, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-replicate point estimates (K, F, M) and resampled ones (K, B, F, M) on a shared subnet resample."""
    n = len(subnets)
    idx = stats.bootstrap_indices(n, n_boot, stats.resample_rng(seed, "|".join(subnets).encode()))
    points, boots = [], []
    for t in tables:
        x = t.frame.loc[subnets, factors].to_numpy(np.float64)
        y = t.frame.loc[subnets, metrics].to_numpy(np.float64)
        points.append(stats.corr_matrix(x, y, method))
        boots.append(stats.boot_corr(x, y, method, idx) if n_boot else np.full((0, len(factors), len(metrics)), np.nan))
    return np.stack(points), np.stack(boots)


def classify(per_rep: pd.DataFrame, method: str, replicates: Mapping[str, int] | None = None) -> pd.DataFrame:
    """One row per (technique, factor, metric): the replicates' r, their signs and significance, and
    ``status``: "finding" (significant, same sign in every replicate), "not replicated", or "K=1".
    ``replicates`` (technique -> K trained): a relation analysable in fewer of them (a metric constant or
    missing in the others) is not replicated, rather than a K=1 study."""
    rows = []
    sub = per_rep[per_rep["method"] == method]
    for (tech, f, m), g in sub.groupby(["technique", "factor", "metric"], sort=False):
        g = g.sort_values("replicate")
        k = len(g)
        total = (replicates or {}).get(tech, k)
        signs = np.sign(g["r"].to_numpy())
        sig = g["significant"].to_numpy(bool)
        if k < total:
            status = f"not replicated (analysable in {k} of {total} replicates)"
        elif k < 2:
            status = "cannot replicate (K=1)"
        elif sig.all() and (signs == signs[0]).all() and signs[0] != 0:
            status = "finding"
        else:
            status = "not replicated"
        rows.append({"technique": tech, "factor": f, "metric": m, "method": method, "k": k,
                     "r_per_replicate": "; ".join(f"{r:+.3f}" for r in g["r"]),
                     "p_adj_per_replicate": "; ".join(f"{p:.3g}" for p in g["p_adj"]),
                     "n_significant": int(sig.sum()), "status": status})
    return pd.DataFrame(rows)


def pooled(tables: dict[RunLabel, ResultTable], o: ReplicationOptions, method: str) -> pd.DataFrame:
    """Per technique: mean of the replicates' r with a paired-bootstrap percentile CI (module docstring)."""
    rows = []
    for tech in sorted({r.technique for r in tables}):
        ts = [tables[r] for r in sorted(tables, key=lambda r: r.replicate) if r.technique == tech]
        subnets, factors, metrics = _common(ts)
        if len(subnets) < o.min_archs:
            continue
        pts, boots = _paired_boot(ts, subnets, factors, metrics, method, o.n_boot, o.seed)
        est = pts.mean(0)
        ci = stats.percentile_interval(boots.mean(0)) if o.n_boot else None
        for fi, f in enumerate(factors):
            for mj, m in enumerate(metrics):
                rows.append({"technique": tech, "factor": f, "metric": m, "method": method, "k": len(ts),
                             "n_subnets": len(subnets), "r_pooled": est[fi, mj],
                             "ci_low": ci.low[fi, mj] if ci else np.nan, "ci_high": ci.high[fi, mj] if ci else np.nan})
    return pd.DataFrame(rows)


def technique_differences(tables: dict[RunLabel, ResultTable], o: ReplicationOptions, method: str) -> pd.DataFrame:
    """Every pair of techniques: pooled r of each and their difference, with a paired bootstrap CI
    (one subnet resample shared by every run, so the difference's CI keeps the shared subnets)."""
    techs = sorted({r.technique for r in tables})
    if len(techs) < 2:
        return pd.DataFrame()
    runs = sorted(tables, key=lambda r: (r.technique, r.replicate))
    ts = [tables[r] for r in runs]
    subnets, factors, metrics = _common(ts)
    if len(subnets) < o.min_archs:
        return pd.DataFrame()
    pts, boots = _paired_boot(ts, subnets, factors, metrics, method, o.n_boot, o.seed)
    by = {t: [i for i, r in enumerate(runs) if r.technique == t] for t in techs}
    rows = []
    for a, b in itertools.combinations(techs, 2):
        diff = pts[by[b]].mean(0) - pts[by[a]].mean(0)
        ci = stats.percentile_interval(boots[by[b]].mean(0) - boots[by[a]].mean(0)) if o.n_boot else None
        for fi, f in enumerate(factors):
            for mj, m in enumerate(metrics):
                lo = ci.low[fi, mj] if ci else np.nan
                hi = ci.high[fi, mj] if ci else np.nan
                rows.append({"factor": f, "metric": m, "method": method, "technique_a": a, "technique_b": b,
                             "r_a": pts[by[a]].mean(0)[fi, mj], "r_b": pts[by[b]].mean(0)[fi, mj],
                             "diff_b_minus_a": diff[fi, mj], "ci_low": lo, "ci_high": hi,
                             "changes": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows)


def ranking_agreement(tables: dict[RunLabel, ResultTable], o: ReplicationOptions) -> pd.DataFrame:
    """Per technique and metric: mean pairwise Kendall tau between replicates' subnet scores, with a
    bootstrap CI over subnets (one resample shared by every pair)."""
    rows = []
    for tech in sorted({r.technique for r in tables}):
        ts = [tables[r] for r in sorted(tables, key=lambda r: r.replicate) if r.technique == tech]
        if len(ts) < 2:
            continue
        subnets, _, metrics = _common(ts)
        n = len(subnets)
        if n < 3:
            continue
        for m in metrics:
            vals = [t.frame.loc[subnets, m].to_numpy(np.float64) for t in ts]
            # a suite scored on a subset of the subnets (study --suite-archs): the subnets every replicate measured
            ok = np.logical_and.reduce([~np.isnan(v) for v in vals])
            names = [s for s, keep in zip(subnets, ok) if keep]
            vals = [v[ok] for v in vals]
            tau = lo = hi = np.nan
            if len(names) >= 3:
                pairs = list(itertools.combinations(range(len(ts)), 2))
                tau = float(np.nanmean([kendall_tau(vals[i], vals[j]) for i, j in pairs]))
                if o.n_boot:
                    idx = stats.bootstrap_indices(len(names), o.n_boot,
                                                  stats.resample_rng(o.seed, ("rank|" + "|".join(names)).encode()))
                    boot = np.nanmean(np.stack([_boot_tau(vals[i], vals[j], idx) for i, j in pairs]), axis=0)
                    ci = stats.percentile_interval(boot[:, None])
                    lo, hi = float(ci.low[0]), float(ci.high[0])
            rows.append({"technique": tech, "metric": m, "k": len(ts), "n_subnets": len(names), "tau": tau,
                         "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def standalone_agreement(store: "ResultStore", runs: Sequence[RunLabel], tables: dict[RunLabel, ResultTable],
                         o: ReplicationOptions) -> pd.DataFrame:
    """Per technique and metric: Kendall tau between the supernet ranking (mean over replicates) and the
    stand-alone ranking of the checked subnets; bootstrap CI and a permutation p (N is small)."""
    alone = [r for r in runs if r.kind == "standalone"]
    rows: list[dict] = []
    for tech in sorted({r.technique for r in alone}):
        ids = [r.weights_id for r in alone if r.technique == tech]
        sup = [tables[r] for r in tables if r.technique == tech]
        if not sup:
            continue
        st = build_table(store, o.space, dataset=o.dataset, weights_id=ids, metrics=o.metrics, exclude=o.exclude,
                         min_archs=2)
        subnets = [s for s in st.frame.index if all(s in t.frame.index for t in sup)]
        n = len(subnets)
        metrics = [m for m in st.metrics if all(m in t.metrics for t in sup)]
        if n < 3:
            continue
        idx = stats.bootstrap_indices(n, o.n_boot, stats.resample_rng(o.seed, ("alone|" + "|".join(subnets)).encode()))
        for m in metrics:
            a = np.mean([t.frame.loc[subnets, m].to_numpy(np.float64) for t in sup], axis=0)
            b = st.frame.loc[subnets, m].to_numpy(np.float64)
            tau = kendall_tau(a, b)
            p, how = permutation_p(a, b, o.seed)
            ci = stats.percentile_interval(_boot_tau(a, b, idx)[:, None]) if o.n_boot else None
            rows.append({"technique": tech, "metric": m, "n_subnets": n, "tau": tau,
                         "ci_low": float(ci.low[0]) if ci else np.nan, "ci_high": float(ci.high[0]) if ci else np.nan,
                         "p_permutation": p, "p_method": how})
    return pd.DataFrame(rows)


def _n_examples(store: "ResultStore", tables: dict[RunLabel, ResultTable]) -> dict[str, int]:
    """Test images behind each metric column (the smallest protocol n_examples among the runs)."""
    table = next(iter(tables.values()))
    weights_ids = [r.weights_id for r in tables]
    long = store.to_pandas(space=table.space, dataset=table.dataset, weights_id=list(weights_ids))
    if "n_examples" not in long.columns:
        return {}
    from nasrobust.analysis.table import _column_names

    long = long.assign(column=_column_names(long))
    return {str(c): int(v) for c, v in long.groupby("column")["n_examples"].min().dropna().items()}


# ----------------------------------------------------------------------------- the report
def _md(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    f = frame.copy()
    for c in f.columns:
        if f[c].dtype.kind == "f":
            f[c] = f[c].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    head = "| " + " | ".join(map(str, f.columns)) + " |"
    sep = "|" + "---|" * len(f.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in f.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def replication_report(source: Source, runs: Sequence[RunLabel] | str | Path, out: str | Path,
                       options: ReplicationOptions = ReplicationOptions()) -> Path:
    """Write ``out/replication.md`` and ``out/tables/replication_*.csv``; returns the markdown path.

    ``source``: a result store or its path; ``runs``: the labels or the config.toml holding ``[[runs]]``.
    """
    o = options
    labels = read_runs(runs) if isinstance(runs, (str, Path)) else list(runs)
    if not any(r.kind == "supernet" for r in labels):
        raise NasRobustError("the runs list no supernet; replication needs at least one [[runs]] with kind = 'supernet'")
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    store, opened = open_source(source)
    try:
        tables = _tables(store, labels, o)
        method = o.methods[0]
        per_rep = per_replicate(tables, o)
        cls = classify(per_rep, method, Counter(r.technique for r in tables))
        pool = pooled(tables, o, method)
        merged = cls.merge(pool.drop(columns=["k"]), on=["technique", "factor", "metric", "method"], how="left") \
            if not pool.empty else cls
        agree = ranking_agreement(tables, o)
        diffs = technique_differences(tables, o, method)
        alone = standalone_agreement(store, labels, tables, o)
        images = _n_examples(store, tables)
    finally:
        if opened:
            store.close()
    findings = merged[merged["status"] == "finding"].copy()
    if not findings.empty:
        findings["n_images"] = findings["metric"].map(images)
        findings["min_detectable_r"] = findings["n_subnets"].map(lambda n: min_detectable_r(int(n), o.alpha, o.power))
    others = merged[merged["status"] != "finding"]
    csv = {"per_replicate": per_rep, "classified": merged, "ranking_agreement": agree,
           "technique_differences": diffs, "standalone_agreement": alone}
    for name, frame in csv.items():
        frame.to_csv(out / "tables" / f"replication_{name}.csv", index=False)

    ks = sorted({(r.technique, sum(1 for x in tables if x.technique == r.technique)) for r in tables})
    lines = ["# Replicated findings", "",
             f"Runs: {', '.join(f'{t} x {k} replicate(s)' for t, k in ks)}; method {method}; "
             f"{o.n_boot} bootstrap resamples (seed {o.seed}); {o.correction} correction per replicate; alpha {o.alpha}.",
             "A relation is a *finding* only when it is significant with the same sign in every replicate. "
             "Pooled r: mean of the replicates' r, 95% CI from a paired bootstrap over the common subnets "
             "(one resample shared by every replicate).", ""]
    if all(k < 2 for _, k in ks):
        lines += ["**Cannot replicate with K=1**: only one replicate per technique; no relation can be called a "
                  "finding. Run `nasrobust study --replicates 2` or more.", ""]
    lines += ["## Findings (replicated)", "",
              _md(findings[[c for c in ("technique", "factor", "metric", "r_per_replicate", "r_pooled", "ci_low",
                                        "ci_high", "n_subnets", "n_images", "min_detectable_r") if c in findings]]
                  if not findings.empty else findings),
              f"Power note: min_detectable_r is the smallest |r| a two-sided test at alpha {o.alpha} detects with "
              f"power {o.power} on n_subnets architectures (Fisher z); n_images is the test images per subnet score.", "",
              "## Not replicated", "",
              _md(others[[c for c in ("technique", "factor", "metric", "r_per_replicate", "p_adj_per_replicate",
                                      "status") if c in others]].head(200)),
              "(first 200; all in tables/replication_classified.csv)", "",
              "## Cross-replicate ranking agreement", "",
              "Mean pairwise Kendall tau between replicates' subnet scores per metric; 95% CI from a bootstrap over "
              "subnets.", "", _md(agree),
              "## Technique x factor", "",
              "Pooled r per technique and the difference (b - a) with a paired bootstrap CI; 'changes' when the CI "
              "excludes 0.", "", _md(diffs),
              "## Supernet vs stand-alone", "",
              "Kendall tau between the supernet ranking (mean over replicates) and the stand-alone ranking of the "
              "checked subnets; small N: the permutation p is exact up to 8 subnets.", "", _md(alone)]
    path = out / "replication.md"
    path.write_text("\n".join(lines))
    return path
