"""Layers read top-down (DESIGN.md): a lower layer never imports an upper one, and no module imports itself back.

cli -> study/search -> evaluate/train -> noise/analysis/store -> spaces/supernet -> arch/registry.
Imports are read with ``ast`` from the source, including imports inside functions (a lazy import
is still a dependency); imports under ``if TYPE_CHECKING:`` are left out (they never run). The
``spaces`` and ``searchers`` folders are read as ``nasrobust.spaces`` / ``nasrobust.searchers``,
as they are installed. ``from nasrobust import NAME`` is followed to the module the package
facade takes ``NAME`` from.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Installed package name of each source folder.
FOLDERS = {"nasrobust": "nasrobust", "spaces": "nasrobust.spaces", "searchers": "nasrobust.searchers"}

#: Layer of every module, by dotted prefix (the longest prefix wins); higher numbers sit above.
LAYERS: dict[str, tuple[int, str]] = {}
for _number, _name, _prefixes in (
    (6, "cli", ("nasrobust.cli", "nasrobust.__main__")),
    (5, "study/search", ("nasrobust.study", "nasrobust.search", "nasrobust.diffsearch", "nasrobust.searchers")),
    (4, "evaluate/train", ("nasrobust.evaluation", "nasrobust.evaluator", "nasrobust.workers", "nasrobust.train", "nasrobust.metrics")),
    (3, "noise/analysis/store", ("nasrobust.noise", "nasrobust.analysis", "nasrobust.store", "nasrobust.records",
                                 "nasrobust.checkpoint", "nasrobust.proxies", "nasrobust.bounds", "nasrobust.headlines",
                                 "nasrobust.inference", "nasrobust.rankstore", "nasrobust.claims")),
    (2, "spaces/supernet", ("nasrobust", "nasrobust.spaces", "nasrobust.supernet",
                            "nasrobust.oneshot", "nasrobust.elastic", "nasrobust.models", "nasrobust.data",
                            "nasrobust.distributed")),
    # nasrobust.space holds the Arch value with the space abstraction and registry that give it meaning
    (1, "arch/registry", ("nasrobust.space", "nasrobust.registry", "nasrobust.errors", "nasrobust.cost",
                          "nasrobust.options", "nasrobust.io", "nasrobust.outputs", "nasrobust.fieldtypes",
                          "nasrobust.allocator")),
):
    LAYERS.update({prefix: (_number, _name) for prefix in _prefixes})


def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the installed package."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            out[".".join([package, *(p for p in parts if p != "__init__")])] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _facade(known: dict[str, Path]) -> dict[str, str]:
    """``NAME -> module`` for the names the package ``nasrobust`` hands on (eagerly or through ``_LAZY``)."""
    tree = ast.parse(known["nasrobust"].read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.update({a.asname or a.name: node.module for a in node.names})
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_LAZY" for t in node.targets):
            out.update(ast.literal_eval(node.value))
    return out


def imports_of(name: str, source: str, known: dict[str, Path], facade: dict[str, str]) -> set[str]:
    """The project modules ``source`` (module ``name``) imports at run time, lazy imports included."""
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    is_package = name in known and known[name].name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    out.add(f"{base}.{alias.name}")
                elif base == "nasrobust" and alias.name in facade:
                    out.add(facade[alias.name])
                else:
                    out.add(base)
    return {m for m in out if m in known and m != name}


def layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise KeyError(module)


def graph() -> dict[str, set[str]]:
    known = modules()
    facade = _facade(known)
    return {name: imports_of(name, path.read_text(), known, facade) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


# ----------------------------------------------------------------------------- the project
def test_every_module_has_a_layer():
    missing = [m for m in modules() if not any(m == p or m.startswith(p + ".") for p in LAYERS)]
    assert not missing, f"give these modules a layer in tests/test_layering.py LAYERS: {missing}"


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a module to a module of a higher layer, as text."""
    bad = []
    for module, deps in sorted(edges.items()):
        mine = layer(module)
        bad.extend(f"{module} ({mine[1]}) imports {dep} ({layer(dep)[1]})"
                   for dep in sorted(deps) if layer(dep)[0] > mine[0])
    return bad


def test_no_lower_layer_imports_an_upper_one():
    bad = upward(graph())
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


#: Neighbours in one layer that must stay apart: evaluation scores models, training makes them; what
#: both need (BN re-calibration of a subnet) lives below them, in ``nasrobust.supernet``.
APART = (
    (("nasrobust.evaluation", "nasrobust.evaluator", "nasrobust.workers", "nasrobust.metrics"), "nasrobust.train"),
)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_evaluation_does_not_import_training():
    bad = [f"{m} imports {d}" for m, deps in sorted(graph().items()) for d in sorted(deps)
           for sources, target in APART if any(_within(m, p) for p in sources) and _within(d, target)]
    assert not bad, "\n".join(bad)


def component(module: str, known: set[str]) -> str:
    """The component a module belongs to: a space's private modules (``spaces/_<space>_net.py``, imported
    lazily by the space so that sampling stays free of torch) are parts of ``spaces/<space>.py``."""
    package, _, leaf = module.rpartition(".")
    if package == "nasrobust.spaces" and leaf.startswith("_"):
        owners = [m for m in known if m.startswith(package + ".") and leaf.startswith(f"_{m.rpartition('.')[2]}_")]
        if owners:
            return max(owners, key=len)
    return module


def test_no_import_cycles():
    edges = graph()
    units: dict[str, set[str]] = {}
    for module, deps in edges.items():
        unit = component(module, set(edges))
        units.setdefault(unit, set()).update(d for d in (component(x, set(edges)) for x in deps) if d != unit)
    found = cycles(units)
    assert not found, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in found)


# ----------------------------------------------------------------------------- the checker itself
KNOWN = {name: Path(f"{name.replace('.', '/')}.py") for name in
         ("nasrobust", "nasrobust.registry", "nasrobust.cli.main", "nasrobust.store", "nasrobust.space")}


def test_checker_sees_lazy_imports_and_ignores_type_checking_ones():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from nasrobust.space import SearchSpace\n"
        "def f():\n    from nasrobust.cli.main import main\n    return main\n"
        "from nasrobust import open_results\n"
    )
    deps = imports_of("nasrobust.registry", source, KNOWN, {"open_results": "nasrobust.store"})
    assert deps == {"nasrobust.cli.main", "nasrobust.store"}


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_checker_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_a_space_and_its_private_modules_are_one_component():
    known = {"nasrobust.spaces.ofa_mbv3", "nasrobust.spaces._ofa_mbv3_net", "nasrobust.spaces.nb201"}
    assert component("nasrobust.spaces._ofa_mbv3_net", known) == "nasrobust.spaces.ofa_mbv3"
    assert component("nasrobust.spaces.nb201", known) == "nasrobust.spaces.nb201"
    assert component("nasrobust.noise.attacks.pgd", known) == "nasrobust.noise.attacks.pgd"


def test_an_upward_import_is_reported():
    edges = {"nasrobust.headlines": {"nasrobust.cli.common", "nasrobust.store"}, "nasrobust.cli.common": set()}
    assert upward(edges) == ["nasrobust.headlines (noise/analysis/store) imports nasrobust.cli.common (cli)"]
    assert layer("nasrobust.metrics.live") == LAYERS["nasrobust.metrics"]
