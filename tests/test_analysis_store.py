"""Analysis table: a result store -> architectures x (factors, params, FLOPs, metrics).

Also home of :func:`planted_store`, the synthetic store the other ``test_analysis_*`` modules
share: real ``Record`` s of real ``bignas-small`` encodings (``space.sample``), with values
from known formulas, so each analysis can be checked to recover the planted relations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nasrobust.analysis.table import build_table, direction, format_level, metric_column
from nasrobust.errors import NasRobustError
from nasrobust.records import Protocol, Record, ResultKey
from nasrobust.space import get_space
from nasrobust.store import open_results

SPACE = "bignas-small"
DATASET = "mnist5k"
WEIGHTS = "w-super"
N_ARCHS = 40
EPS = (1 / 255, 4 / 255, 8 / 255)
PGD = Protocol.make(eps=8 / 255, norm="Linf", steps=20, restarts=1, seed=0, n_examples=500,
                    params={"step_size": 2 / 255, "random_start": True})
NAT = Protocol.make(seed=0, n_examples=500, params={"severities": (1, 2, 3)})
SYS = Protocol.make(n_examples=500, params={"grid": "pil+opencv"})
CERT = Protocol.make(norm="Linf", n_examples=100, params={"method": "crown"})


def planted_values(arch, rng: np.random.Generator) -> dict[tuple[str, str, float, str], float]:
    """Values of one architecture. The planted relations:

    * clean accuracy rises with mean width;
    * every adversarial accuracy rises with total depth (and falls with eps);
    * natural accuracy rises with the stage-3 kernel (3 -> 5), mCE falls with it;
    * system-noise accuracy is pure noise; its summary std is constant (no variance);
    * certified radius rises with resolution.
    """
    f = get_space(SPACE).factors(arch)
    g = arch.genome
    noise = lambda s: float(rng.normal(0.0, s))  # noqa: E731
    out = {("adversarial", "clean", 0.0, "accuracy"): 0.80 + 0.002 * f["width_mean"] + noise(0.01)}
    for i, eps in enumerate(EPS):
        acc = 0.10 + 0.06 * f["depth"] - 0.05 * i + noise(0.03)
        out[("adversarial", "pgd_linf", eps, "accuracy")] = acc
        out[("adversarial", "pgd_linf", eps, "ar")] = acc / 0.95
    out[("adversarial", "sanity", 0.0, "eps0_equals_clean")] = 1.0
    k3 = 1.0 if g.stages[2].kernel == 5 else 0.0
    for sev in (1, 2, 3):
        out[("natural", "gaussian_noise", float(sev), "accuracy")] = 0.7 + 0.1 * k3 - 0.05 * sev + noise(0.02)
    out[("natural", "mce", 0.0, "mce")] = 1.0 - 0.2 * k3 + noise(0.02)
    out[("system", "png/pil/pil_bilinear", 0.0, "accuracy")] = 0.9 + noise(0.02)
    out[("system", "summary", 0.0, "std")] = 0.01
    out[("certified", "crown-ibp_linf", 0.0, "radius_mean")] = 0.001 * f["resolution"] + noise(0.001)
    return out


def planted_store(path, n_archs: int = N_ARCHS, seed: int = 0):
    """Write the planted store at ``path``; returns the architectures."""
    space = get_space(SPACE)
    archs = space.sample(n_archs, seed=seed)
    rng = np.random.default_rng(seed)
    protocols = {"adversarial": PGD, "natural": NAT, "system": SYS, "certified": CERT}
    records = []
    for arch in archs:
        for (suite, noise, level, metric), value in planted_values(arch, rng).items():
            key = ResultKey.of(arch, weights_id=WEIGHTS, dataset=DATASET, suite=suite, noise=noise, level=level, metric=metric)
            records.append(Record(key, float(value), protocols[suite]))
    with open_results(path, create=True) as store:
        store.write_many(records)
    return archs


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted") / "results.db"
    archs = planted_store(path)
    return path, archs


# ----------------------------------------------------------------------------- names
def test_level_and_column_names():
    assert format_level(0.0) == "0" and format_level(3.0) == "3"
    assert format_level(8 / 255) == "8/255" and format_level(1 / 255) == "1/255"
    assert format_level(0.5) == "0.5" and format_level(0.123456789) == "0.123457"
    assert metric_column("adversarial", "pgd_linf", "accuracy", 8 / 255) == "adversarial/pgd_linf/accuracy@8/255"
    assert metric_column("system", "summary", "worst", None) == "system/summary/worst"
    assert direction("natural/mce/mce") == -1 and direction("natural/fp/translate/fp") == -1
    assert direction("system/summary/std") == -1 and direction("system/summary/worst") == 1
    assert direction("adversarial/pgd_linf/accuracy@8/255") == 1
    assert direction("natural/gaussian_noise/relative_ce") == -1 and direction("natural/fp/translate/fp") == -1
    assert direction("certified/jacobian_linf/jacobian_norm_mean") == -1
    assert direction("certified/jacobian_linf/jacobian_estimate@0.1") == 1


# ----------------------------------------------------------------------------- the table
def test_table_rows_factors_and_metrics(planted):
    path, archs = planted
    table = build_table(path, "bignas-small")
    assert table.space == SPACE and table.dataset == DATASET and table.n_archs == N_ARCHS
    assert set(table.frame["encoding"]) == {a.encoding for a in archs}
    # level-free columns lose "@0"; levelled ones keep k/255 or the severity
    assert "adversarial/clean/accuracy" in table.metrics
    assert "adversarial/pgd_linf/accuracy@8/255" in table.metrics
    assert "natural/gaussian_noise/accuracy@3" in table.metrics and "natural/mce/mce" in table.metrics
    # sanity flags are excluded by default, constant columns are skipped with the reason
    assert not any(m.startswith("adversarial/sanity/") for m in table.metrics)
    skipped = dict(zip(table.skipped["column"], table.skipped["reason"]))
    assert "no variance" in skipped["system/summary/std"]
    assert table.directions["natural/mce/mce"] == -1
    # factors: the space's own plus analytic params / FLOPs at mnist5k's 10 classes, 28 px
    space = get_space(SPACE)
    arch = archs[0]
    row = table.frame.loc[arch.encoding]
    for name, value in space.factors(arch).items():
        if name in table.factors:
            assert row[name] == pytest.approx(value)
    cost = space.cost(arch, num_classes=10, input_size=28)
    assert row["params"] == cost.params and row["flops"] == cost.flops
    # the values are the stored ones
    with open_results(path, create=False) as store:
        rec = store.query(arch, suite="adversarial", noise="pgd_linf", metric="accuracy")
    stored = {r.key.level: r.value for r in rec}
    assert row["adversarial/pgd_linf/accuracy@4/255"] == stored[4 / 255]


def test_family_name_matches_small_variant_and_globs(planted):
    path, _ = planted
    table = build_table(path, "bignas", metrics=["adversarial/*"])
    assert table.space == SPACE
    assert table.metrics and all(m.startswith("adversarial/") for m in table.metrics)
    with_sanity = build_table(path, None, exclude=(), min_archs=3)
    assert any(s.startswith("adversarial/sanity/") for s in with_sanity.skipped["column"])  # constant 1.0 -> skipped


def test_space_mismatch_lists_the_stored_spaces(planted):
    path, _ = planted
    with pytest.raises(NasRobustError, match=r"no results for space 'nb201'.*holds: bignas-small"):
        build_table(path, "nb201")


def test_empty_store_and_unknown_glob(tmp_path, planted):
    empty = tmp_path / "empty.db"
    open_results(empty, create=True).close()
    with pytest.raises(NasRobustError, match="holds no results"):
        build_table(empty, "bignas")
    with pytest.raises(NasRobustError, match="no stored metric"):
        build_table(planted[0], metrics=["nothing/*"])
    with pytest.raises(NasRobustError, match="no result store"):
        build_table(tmp_path / "missing.db")


def test_several_datasets_need_a_choice(tmp_path):
    path = tmp_path / "two.db"
    archs = get_space(SPACE).sample(4, seed=1)
    recs = [Record(ResultKey.of(a, weights_id="w", dataset=d, suite="adversarial", noise="clean", level=0.0,
                                metric="accuracy"), 0.5 + i / 10, PGD)
            for i, a in enumerate(archs) for d in ("mnist5k", "digits")]
    with open_results(path, create=True) as store:
        store.write_many(recs)
    with pytest.raises(NasRobustError, match="several datasets.*--dataset"):
        build_table(path)
    assert build_table(path, dataset="digits").n_archs == 4


def test_all_metrics_constant_is_a_clear_error(tmp_path):
    path = tmp_path / "flat.db"
    archs = get_space(SPACE).sample(5, seed=2)
    recs = [Record(ResultKey.of(a, weights_id="w", dataset=DATASET, suite="adversarial", noise="clean", level=0.0,
                                metric="accuracy"), 0.5, PGD) for a in archs]
    with open_results(path, create=True) as store:
        store.write_many(recs)
    with pytest.raises(NasRobustError, match="no variance"):
        build_table(path)


def test_same_arch_with_two_weights_is_two_rows(tmp_path):
    path = tmp_path / "w.db"
    archs = get_space(SPACE).sample(3, seed=3)
    recs = [Record(ResultKey.of(a, weights_id=w, dataset=DATASET, suite="adversarial", noise="clean", level=0.0,
                                metric="accuracy"), 0.5 + i / 10 + j / 100, PGD)
            for i, a in enumerate(archs) for j, w in enumerate(("w1", "w2"))]
    with open_results(path, create=True) as store:
        store.write_many(recs)
    table = build_table(path)
    assert table.n_archs == 6 and all("@w" in label for label in table.frame.index)
    assert any("share an architecture" in n for n in table.notes)
    assert isinstance(table.frame, pd.DataFrame)


def test_resolve_space_rules():
    from nasrobust.analysis.table import resolve_space

    assert resolve_space(["bignas-small"], "bignas") == "bignas-small"  # the small-input variant
    assert resolve_space(["bignas", "bignas-small"], "bignas") == "bignas"  # the exact name wins
    assert resolve_space(["bignas", "bignas-small"], "bignas-small") == "bignas-small"
    assert resolve_space(["nb201"], None) == "nb201"
    with pytest.raises(NasRobustError, match="several spaces"):
        resolve_space(["nb201", "darts"], None)
    with pytest.raises(NasRobustError, match="holds: nb201"):
        resolve_space(["nb201"], "bignas-r50")
