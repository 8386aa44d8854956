"""The DARTS / PC-DARTS cell search space.

Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019; Xu et al.,
"PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search", ICLR 2020.

An architecture is a pair of cells, *normal* and *reduction*. Each cell has two input states
(0 = ``c_{k-2}``, 1 = ``c_{k-1}``) and four intermediate nodes; node ``i`` is state ``i + 2``
and sums two edges ``op(state j)`` from two distinct earlier states ``j < i + 2`` -- the shape
DARTS' derivation produces from its supernet (top-2 incoming edges per node). The cell
output concatenates the four intermediate nodes. Ops: the eight DARTS primitives in
:data:`OP_NAMES`. Networks are DARTS' CIFAR evaluation network (``_darts_net.NetworkCIFAR``:
20 cells, 36 channels, reductions at 1/3 and 2/3 depth, no auxiliary head).

Canonical form (one genome per distinct network; see :func:`canonical_cell`):

1. A ``none`` edge outputs zeros whatever it reads, so its input is ignored ("stripped").
2. The four intermediate nodes are relabelled by every permutation that keeps each remaining
   edge pointing from a lower to a higher state (a topological order); each node's edges are
   sorted by ``(input, op index)``; the relabelling giving the lexicographically smallest
   tuple of nodes (edge keys ``(input, op index)``, a stripped input counting as -1) wins.
   Relabelling only permutes the output's channel blocks; every consumer of a cell output
   (the next cells' 1x1 preprocessing, the pooled classifier) is equivariant to that, so
   relabelled cells give the same network up to a permutation of its weights.
3. Stripped ``none`` edges get the lowest cell input (0, else 1) not used by the node's other
   edge, and the node's edges are sorted again.

``size()`` counts these classes exactly (Burnside's lemma per stripped shape, see
:func:`count_cells`), checked against brute-force enumeration on reduced op sets in the tests.

``none`` is part of the space (the supernet has it on every edge, and pasted genotypes may use
it), but ``random_genome`` and ``neighbors`` use only the seven other ops by default: DARTS'
derivation excludes the zero op, and NAS-Bench-301 (Siems et al., 2020) samples the same seven
ops. ``DartsSpace(sample_none=True)`` includes it.
"""

from __future__ import annotations

import ast
import difflib
import itertools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from nasrobust.cost import Cost, CostCounter
from nasrobust.errors import SpaceError
from nasrobust.space import Arch, SearchSpace, register_space

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from nasrobust.spaces._darts_supernet import DartsSupernet

#: DARTS' PRIMITIVES, in its order (the op index used for sorting and one-hot vectors).
OP_NAMES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
NONE = "none"
OP_INDEX: dict[str, int] = {op: i for i, op in enumerate(OP_NAMES)}
#: Ops with weights at every stride (``skip_connect`` has some only as a stride-2 FactorizedReduce).
CONV_OPS: tuple[str, ...] = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
#: Cell inputs (``c_{k-2}``, ``c_{k-1}``), intermediate nodes, edges per node.
INPUTS, STEPS, EDGES = 2, 4, 2
#: Number of (input state, node) pairs, i.e. DARTS' alpha rows: 2 + 3 + 4 + 5.
ALPHA_ROWS = sum(i + INPUTS for i in range(STEPS))
_STRIPPED = -1  # the input of a ``none`` edge while canonicalising

Edge = tuple[str, int]  # (op, input state)
Node = tuple[Edge, ...]
Cell = tuple[Node, ...]

_GENOTYPE_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_CONCAT = list(range(INPUTS, INPUTS + STEPS))
#: The input pairs node i may read: two distinct states below i + 2.
_PAIRS = [list(itertools.combinations(range(i + INPUTS), EDGES)) for i in range(STEPS)]


@dataclass(frozen=True)
class DartsGenome:
    """A normal and a reduction cell; each cell lists its 4 nodes, each node its 2 ``(op, input)`` edges."""

    normal: Cell
    reduce: Cell

    def cells(self) -> dict[str, Cell]:
        return {"normal": self.normal, "reduce": self.reduce}

    def genotype(self) -> str:
        """DARTS' ``Genotype(...)`` repr, to paste into the DARTS / PC-DARTS code."""
        flat = {k: [(op, j) for node in cell for op, j in node] for k, cell in self.cells().items()}
        return (
            f"Genotype(normal={flat['normal']!r}, normal_concat=range(2, 6), "
            f"reduce={flat['reduce']!r}, reduce_concat=range(2, 6))"
        )


def _from_pairs(pairs: Sequence[tuple[str, int]]) -> Cell:
    """DARTS' flat list of 8 ``(op, input)`` pairs -> 4 nodes of 2 edges."""
    return tuple(tuple((str(op), int(j)) for op, j in pairs[EDGES * i : EDGES * (i + 1)]) for i in range(STEPS))


# Published genotypes, transcribed from DARTS' cnn/genotypes.py (github.com/quark0/darts;
# DARTS_V1 = first order, DARTS_V2 = second order) and PC-DARTS' genotypes.py
# (github.com/yuhuixu1993/PC-DARTS, PC_DARTS_cifar), which repeats DARTS_V1/V2 verbatim.
_PUBLISHED: dict[str, tuple[list[tuple[str, int]], list[tuple[str, int]]]] = {
    "darts-v1": (
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    "darts-v2": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
    "pc-darts": (
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------- canonical form
@lru_cache(maxsize=None)
def _relabellings(steps: int) -> tuple[tuple[tuple[int, ...], tuple[int, ...], int], ...]:
    """Every node relabelling as ``(order, position, allowed)``.

    ``order[new] = old`` node, ``position[old] = new``, and ``allowed`` is the bit mask of the
    dependencies "node ``d`` feeds node ``i``" (bit ``d * steps + i``) it keeps topological.
    """
    out = []
    for order in itertools.permutations(range(steps)):
        position = [0] * steps
        for new, old in enumerate(order):
            position[old] = new
        allowed = sum(_dep_bit(d, i, steps) for d in range(steps) for i in range(steps) if position[d] < position[i])
        out.append((order, tuple(position), allowed))
    return tuple(out)


def _dep_bit(d: int, i: int, steps: int) -> int:
    return 1 << (d * steps + i)


@lru_cache(maxsize=1 << 16)
def _canonical_cell_cached(cell: tuple[tuple[tuple[str, int], ...], ...]) -> Cell:
    stripped = [tuple((_STRIPPED if op == NONE else j, OP_INDEX[op]) for op, j in node) for node in cell]
    best = _smallest_labelling(stripped, {}, ())
    return tuple(_fill_stripped(node) for node in best)


def _smallest_labelling(
    stripped: list[tuple[tuple[int, int], ...]], position: dict[int, int], prefix: tuple
) -> tuple:
    """The lexicographically smallest node sequence over topological relabellings.

    Fills positions one at a time: a node's key depends only on already-placed inputs, so
    only the nodes with the smallest key can start the minimum; ties (rare) are branched.
    """
    if len(position) == len(stripped):
        return prefix
    keys = {}
    for old, node in enumerate(stripped):
        if old in position or any(j >= INPUTS and j - INPUTS not in position for j, _ in node):
            continue
        keys[old] = tuple(sorted([(j if j < INPUTS else position[j - INPUTS] + INPUTS, o) for j, o in node]))
    smallest = min(keys.values())
    best = None
    for old, key in keys.items():
        if key == smallest:
            found = _smallest_labelling(stripped, {**position, old: len(position)}, prefix + (key,))
            if best is None or found < best:
                best = found
    return best


def canonical_cell(cell: Sequence[Sequence[Edge]]) -> Cell:
    """The canonical representative of a cell (module docstring, steps 1-3); any number of nodes.

    Two cells map to the same result exactly when one is a relabelling of the other's
    intermediate nodes, up to the inputs of ``none`` edges.
    """
    return _canonical_cell_cached(tuple(tuple((str(op), int(j)) for op, j in node) for node in cell))


@lru_cache(maxsize=1 << 16)
def draw_count(cell: Cell) -> int:
    """How many cells a uniform draw can produce (an input pair and an op per edge, per node) that
    canonicalise to ``cell``: its topological relabellings times the inputs of its ``none`` edges.

    :meth:`DartsSpace.uniform_genome` accepts a drawn cell with probability ``1 / draw_count``,
    which makes every canonical cell equally likely.
    """
    steps = len(cell)
    stripped = [tuple((op, None if op == NONE else j) for op, j in node) for node in cell]
    deps = sum(_dep_bit(j - INPUTS, i, steps) for i, node in enumerate(stripped) for _, j in node
               if j is not None and j >= INPUTS)
    found: set[tuple[tuple[tuple[int, str], ...], ...]] = set()
    for order, pos, allowed in _relabellings(steps):
        if deps & ~allowed:
            continue  # not a topological order
        move = lambda j: j if j is None or j < INPUTS else pos[j - INPUTS] + INPUTS  # noqa: E731
        nodes = [tuple((op, move(j)) for op, j in stripped[old]) for old in order]
        choices = [_labelled_nodes(node, k + INPUTS) if any(j is None for _, j in node)
                   else (tuple(sorted((j, op) for op, j in node)),) for k, node in enumerate(nodes)]
        found.update(itertools.product(*choices))
    return len(found)


def _labelled_nodes(node: tuple[tuple[str, int | None], ...], states: int) -> set[tuple[tuple[int, str], ...]]:
    """Every drawable node (two distinct inputs below ``states``) matching ``node``; ``None`` inputs are free."""
    out = set()
    for pair in itertools.combinations(range(states), EDGES):
        for edges in itertools.permutations(node):
            if all(j is None or j == p for (_, j), p in zip(edges, pair)):
                out.add(tuple(sorted((p, op) for (op, _), p in zip(edges, pair))))
    return out


def _fill_stripped(node: tuple[tuple[int, int], ...]) -> Node:
    used = {j for j, _ in node}
    free = iter(j for j in range(INPUTS) if j not in used)
    edges = [(OP_NAMES[o], j if j != _STRIPPED else next(free)) for j, o in node]
    return tuple(sorted(edges, key=lambda e: (e[1], OP_INDEX[e[0]])))


@lru_cache(maxsize=None)
def count_cells(real_ops: int, steps: int = STEPS, with_none: bool = True) -> int:
    """The exact number of canonical cells with ``real_ops`` non-zero ops (plus ``none`` if asked).

    Enumerates *shapes* (each node's set of real-edge inputs; with ``none`` a node may have
    2, 1 or 0 real edges) in topological labelling, keeps the smallest labelling of each
    isomorphism class, and counts the op colourings of its real edges up to the shape's
    automorphisms with Burnside's lemma: ``sum_a real_ops ** cycles(a) / |Aut|``.
    """
    per_node = []
    for i in range(steps):
        states = range(i + INPUTS)
        choices: list[tuple[int, ...]] = list(itertools.combinations(states, EDGES))
        if with_none:
            choices = [c for k in range(EDGES) for c in itertools.combinations(states, k)] + choices
        per_node.append(choices)
    # Per relabelling: each node choice's relabelled, sorted inputs.
    needs = [
        {c: sum(_dep_bit(j - INPUTS, i, steps) for j in c if j >= INPUTS) for c in choices}
        for i, choices in enumerate(per_node)
    ]
    every_choice = {c for choices in per_node for c in choices}
    tables = []
    for order, pos, allowed in _relabellings(steps):
        image = {c: tuple(sorted(j if j < INPUTS else pos[j - INPUTS] + INPUTS for j in c)) for c in every_choice}
        tables.append((order, pos, allowed, image))
    total = 0
    for shape in itertools.product(*per_node):
        deps = 0
        for i, c in enumerate(shape):
            deps |= needs[i][c]
        autos: list[tuple[int, ...]] = []
        for order, pos, allowed, image in tables:
            if deps & ~allowed:
                continue
            relabelled = tuple(image[shape[old]] for old in order)
            if relabelled < shape:
                break  # not the class representative
            if relabelled == shape:
                autos.append(pos)
        else:
            edges = [(j, i + INPUTS) for i, node in enumerate(shape) for j in node]
            burnside = sum(real_ops ** _cycles(edges, pos) for pos in autos)
            total += burnside // len(autos)
    return total


def _cycles(edges: list[tuple[int, int]], pos: tuple[int, ...]) -> int:
    """Cycles of the permutation a node relabelling induces on a cell's edges."""
    move = lambda s: s if s < INPUTS else pos[s - INPUTS] + INPUTS  # noqa: E731
    image = {e: (move(e[0]), move(e[1])) for e in edges}
    seen: set[tuple[int, int]] = set()
    cycles = 0
    for e in edges:
        if e not in seen:
            cycles += 1
            while e not in seen:
                seen.add(e)
                e = image[e]
    return cycles


# ---------------------------------------------------------------------------------- cost
def _sep_cost(kernel: int, padding: int) -> Callable[[CostCounter, int, int], None]:
    def cost(cc: CostCounter, c: int, stride: int) -> None:
        cc.conv(c, c, kernel, stride, padding, groups=c).conv(c, c, 1).norm(c)
        cc.conv(c, c, kernel, 1, padding, groups=c).conv(c, c, 1).norm(c)

    return cost


def _dil_cost(kernel: int, padding: int) -> Callable[[CostCounter, int, int], None]:
    def cost(cc: CostCounter, c: int, stride: int) -> None:
        cc.conv(c, c, kernel, stride, padding, dilation=2, groups=c).conv(c, c, 1).norm(c)

    return cost


def _factorized_reduce_cost(cc: CostCounter, c_in: int, c_out: int) -> None:
    halves = [cc.branch().conv(c_in, c_out // 2, 1, 2, 0) for _ in range(2)]
    cc.merge(*halves).norm(c_out)


def _skip_cost(cc: CostCounter, c: int, stride: int) -> None:
    if stride > 1:
        _factorized_reduce_cost(cc, c, c)


#: Analytic twin of ``_darts_net.OPS``: ``OP_COST[name](counter, C, stride)``.
OP_COST: dict[str, Callable[[CostCounter, int, int], None]] = {
    "none": lambda cc, c, stride: cc.pool(1, stride),
    "max_pool_3x3": lambda cc, c, stride: cc.pool(3, stride, 1),
    "avg_pool_3x3": lambda cc, c, stride: cc.pool(3, stride, 1),
    "skip_connect": _skip_cost,
    "sep_conv_3x3": _sep_cost(3, 1),
    "sep_conv_5x5": _sep_cost(5, 2),
    "dil_conv_3x3": _dil_cost(3, 2),
    "dil_conv_5x5": _dil_cost(5, 4),
}


@lru_cache(maxsize=4096)
def _edge_cost(op: str, c: int, stride: int, h: int, w: int) -> tuple[int, int, int, int]:
    """``(params, MACs, out_h, out_w)`` of one op at one input size (cached: cells repeat)."""
    cc = CostCounter(h, w)
    OP_COST[op](cc, c, stride)
    return cc.params, cc.flops, cc.h, cc.w


@lru_cache(maxsize=1024)
def _preprocess_cost(c_in: int, c: int, factorized: bool, h: int, w: int) -> tuple[int, int, int, int]:
    """A cell input's ReLU-1x1 conv-BN, or FactorizedReduce after a reduction cell."""
    cc = CostCounter(h, w)
    if factorized:
        _factorized_reduce_cost(cc, c_in, c)
    else:
        cc.conv(c_in, c, 1).norm(c)
    return cc.params, cc.flops, cc.h, cc.w


def _network_cost(genome: DartsGenome, num_classes: int, size: int, channels: int, layers: int) -> Cost:
    """Params and MACs of ``NetworkCIFAR``, described cell by cell in build order."""
    cc = CostCounter(size)
    c_stem = 3 * channels
    cc.conv(3, c_stem, 3, 1, 1).norm(c_stem)
    params, flops = cc.params, cc.flops
    hw_pp = hw_p = (cc.h, cc.w)
    c_pp, c_p, c = c_stem, c_stem, channels
    reduction_prev = False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if reduction else c
        states = []
        for c_in, factorized, hw in ((c_pp, reduction_prev, hw_pp), (c_p, False, hw_p)):
            p, f, h, w = _preprocess_cost(c_in, c, factorized, *hw)
            params, flops = params + p, flops + f
            states.append((h, w))
        for node in genome.reduce if reduction else genome.normal:
            for op, j in node:
                p, f, h, w = _edge_cost(op, c, 2 if reduction and j < INPUTS else 1, *states[j])
                params, flops = params + p, flops + f
            states.append((h, w))
        hw_pp, hw_p = hw_p, states[-1]
        c_pp, c_p = c_p, STEPS * c
        reduction_prev = reduction
    head = CostCounter(*hw_p).global_pool().linear(c_p, num_classes)
    return Cost(params=params + head.params, flops=flops + head.flops)


# ---------------------------------------------------------------------------------- factors
def _cell_factors(prefix: str, cell: Cell) -> dict[str, float]:
    """Op histogram, conv-op count, depth, width and input edges of one cell.

    Depth is the longest chain of non-``none`` ops from a cell input; width the number of
    nodes fed directly by a cell input -- the two shape statistics of Shu, Wang & Cai,
    "Understanding Architectures Learnt by Cell-based Neural Architecture Search", ICLR 2020.
    """
    ops = Counter(op for node in cell for op, _ in node)
    out: dict[str, float] = {f"{prefix}_{op}": float(ops[op]) for op in OP_NAMES}
    out[f"{prefix}_param_ops"] = float(sum(ops[op] for op in CONV_OPS))
    depth = [0] * INPUTS
    for node in cell:
        depth.append(max((depth[j] + 1 for op, j in node if op != NONE), default=0))
    out[f"{prefix}_depth"] = float(max(depth[INPUTS:]))
    from_inputs = [[op != NONE and j < INPUTS for op, j in node] for node in cell]
    out[f"{prefix}_width"] = float(sum(any(e) for e in from_inputs))
    out[f"{prefix}_input_edges"] = float(sum(sum(e) for e in from_inputs))
    return out


# ---------------------------------------------------------------------------------- the space
@register_space("darts")
class DartsSpace(SearchSpace):
    """DARTS / PC-DARTS cells (8 ops, 4 nodes x 2 inputs) in DARTS' CIFAR network (Liu et al., ICLR 2019)."""

    name = "darts"
    description = "DARTS/PC-DARTS normal+reduction cells, 8 ops, NetworkCIFAR 20x36 (Liu et al. 2019)"
    grammar = (
        "normal=CELL;reduce=CELL, CELL = NODE|NODE|NODE|NODE, NODE = OP~IN+OP~IN, "
        f"OP one of {', '.join(OP_NAMES)}; IN the edge's input state: 0 = c_(k-2), 1 = c_(k-1), "
        "j+2 = node j; node i takes two distinct states below i+2. "
        "Or paste a DARTS repr: Genotype(normal=[(OP, IN), ... 8 pairs], normal_concat=range(2, 6), "
        "reduce=[... 8 pairs], reduce_concat=range(2, 6))"
    )
    num_classes = 10
    input_size = 32

    def __init__(self, sample_none: bool = False):
        self.sample_none = bool(sample_none)
        #: Ops that random_genome and neighbors choose from.
        self.move_ops: tuple[str, ...] = OP_NAMES if sample_none else tuple(op for op in OP_NAMES if op != NONE)
        self._named: dict[str, Arch] | None = None

    # ------------------------------------------------------------------ genome
    def validate(self, genome: Any) -> None:
        if not isinstance(genome, DartsGenome):
            raise SpaceError(f"a darts genome is a DartsGenome, got {type(genome).__name__}")
        for kind, cell in genome.cells().items():
            _validate_cell(kind, cell)

    def canonical(self, genome: DartsGenome) -> DartsGenome:
        return DartsGenome(canonical_cell(genome.normal), canonical_cell(genome.reduce))

    def random_genome(self, rng: np.random.Generator) -> DartsGenome:
        """Each node: two distinct earlier states (a uniform pair) and a uniform op per edge (from :attr:`move_ops`)."""
        pair_index = rng.integers(0, [len(p) for p in _PAIRS] * 2)
        ops = rng.integers(len(self.move_ops), size=2 * STEPS * EDGES)
        edges = [
            (self.move_ops[int(ops[EDGES * n + e])], _PAIRS[n % STEPS][int(pair_index[n])][e])
            for n in range(2 * STEPS)
            for e in range(EDGES)
        ]
        return DartsGenome(_from_pairs(edges[: STEPS * EDGES]), _from_pairs(edges[STEPS * EDGES :]))

    def uniform_genome(self, rng: np.random.Generator) -> DartsGenome:
        """Uniform over distinct (canonical) cell pairs with :attr:`move_ops`, for budgeted sampling.

        :meth:`random_genome` is uniform over labelled cells, so a canonical cell comes up in
        proportion to :func:`draw_count` (its relabellings, 1 to 24 without ``none``). Here each
        drawn cell is kept with probability ``1 / draw_count`` (rejection), per cell.
        """
        return DartsGenome(self._uniform_cell(rng), self._uniform_cell(rng))

    def _uniform_cell(self, rng: np.random.Generator) -> Cell:
        while True:
            pair_index = rng.integers(0, [len(p) for p in _PAIRS])
            ops = rng.integers(len(self.move_ops), size=STEPS * EDGES)
            cell = canonical_cell(_from_pairs([
                (self.move_ops[int(ops[EDGES * n + e])], _PAIRS[n][int(pair_index[n])][e])
                for n in range(STEPS) for e in range(EDGES)
            ]))
            if rng.random() * draw_count(cell) < 1.0:
                return cell

    # ------------------------------------------------------------------ encodings
    def encode_genome(self, genome: DartsGenome) -> str:
        return ";".join(
            f"{kind}=" + "|".join("+".join(f"{op}~{j}" for op, j in node) for node in cell)
            for kind, cell in genome.cells().items()
        )

    def parse_genome(self, body: str) -> DartsGenome:
        text = body.strip()
        if text.startswith("Genotype"):
            return self._parse_genotype(text)
        parts = text.split(";")
        if len(parts) != 2:
            raise self.encoding_error(body, f"expected two cells 'normal=...;reduce=...', got {len(parts)} part(s)")
        texts: dict[str, str] = {}
        for part in parts:
            kind, eq, cell = part.partition("=")
            kind = kind.strip()
            if not eq or kind not in ("normal", "reduce"):
                raise self.encoding_error(body, f"cell {part!r} does not start with 'normal=' or 'reduce='")
            if kind in texts:
                raise self.encoding_error(body, f"cell {kind!r} is given twice")
            texts[kind] = cell
        return DartsGenome(*(self._parse_cell(body, kind, texts[kind]) for kind in ("normal", "reduce")))

    def _parse_cell(self, body: str, kind: str, text: str) -> Cell:
        nodes = text.split("|")
        if len(nodes) != STEPS:
            raise self.encoding_error(body, f"{kind} cell {text!r} has {len(nodes)} node(s) separated by '|'; needs {STEPS}")
        cell = []
        for i, node in enumerate(nodes):
            edges = node.split("+")
            if len(edges) != EDGES:
                raise self.encoding_error(body, f"{kind} node {i} {node!r} has {len(edges)} edge(s) joined by '+'; needs {EDGES}")
            parsed = []
            for edge in edges:
                op, tilde, j = edge.strip().partition("~")
                if not tilde or not j.strip().isdigit():
                    raise self.encoding_error(body, f"{kind} node {i} edge {edge!r} is not OP~IN with IN an integer")
                self._check_op(body, f"{kind} node {i} edge {edge!r}", op)
                parsed.append((op, int(j)))
            cell.append(tuple(parsed))
        return tuple(cell)

    def _check_op(self, body: str, where: str, op: Any) -> None:
        if not isinstance(op, str) or op not in OP_INDEX:
            close = difflib.get_close_matches(str(op), OP_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.encoding_error(body, f"{where}: unknown op {op!r}{hint}")

    def _parse_genotype(self, body: str) -> DartsGenome:
        """DARTS' ``Genotype(...)`` repr, read with :mod:`ast` (literals and ``range`` only, no eval)."""
        try:
            call = ast.parse(body, mode="eval").body
        except SyntaxError as exc:
            raise self.encoding_error(body, f"Genotype repr does not parse: {exc.msg}") from None
        name = getattr(call, "func", None)
        if not isinstance(call, ast.Call) or getattr(name, "id", getattr(name, "attr", None)) != "Genotype":
            raise self.encoding_error(body, "expected a single Genotype(...) call")
        if len(call.args) > len(_GENOTYPE_FIELDS):
            raise self.encoding_error(body, f"Genotype takes {len(_GENOTYPE_FIELDS)} fields, got {len(call.args)}")
        fields: dict[str, ast.expr] = dict(zip(_GENOTYPE_FIELDS, call.args))
        for kw in call.keywords:
            if kw.arg not in _GENOTYPE_FIELDS or kw.arg in fields:
                raise self.encoding_error(body, f"unexpected or repeated Genotype field {kw.arg!r}")
            fields[kw.arg] = kw.value
        missing = [f for f in _GENOTYPE_FIELDS if f not in fields]
        if missing:
            raise self.encoding_error(body, f"Genotype lacks {', '.join(missing)}")
        cells = {}
        for kind in ("normal", "reduce"):
            concat = self._literal(body, f"{kind}_concat", fields[f"{kind}_concat"])
            if sorted(concat) != _CONCAT or len(concat) != STEPS:
                raise self.encoding_error(
                    body, f"{kind}_concat = {concat} but cells of this space concatenate all nodes {_CONCAT}"
                )
            pairs = self._literal(body, kind, fields[kind])
            if len(pairs) != STEPS * EDGES:
                raise self.encoding_error(body, f"{kind} lists {len(pairs)} (op, input) pairs; needs {STEPS * EDGES}")
            for k, pair in enumerate(pairs):
                ok = isinstance(pair, (tuple, list)) and len(pair) == 2
                if not ok or not isinstance(pair[1], int) or isinstance(pair[1], bool):
                    raise self.encoding_error(body, f"{kind} pair {k} = {pair!r} is not (op, input index)")
                self._check_op(body, f"{kind} pair {k}", pair[0])
            cells[kind] = _from_pairs(pairs)
        return DartsGenome(cells["normal"], cells["reduce"])

    def _literal(self, body: str, field: str, node: ast.expr) -> list:
        """A list/tuple literal, or ``range(a, b)`` with integer literals."""
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range" and not node.keywords:
            try:
                return list(range(*(ast.literal_eval(a) for a in node.args)))
            except (ValueError, TypeError):
                pass
        else:
            try:
                value = ast.literal_eval(node)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                value = None
            if isinstance(value, (list, tuple)):
                return list(value)
        raise self.encoding_error(body, f"Genotype field {field} = {ast.unparse(node)!r} is not a list of literals")

    def named(self) -> Mapping[str, Arch]:
        """Published cells: ``darts-v1``/``darts-v2`` (DARTS 1st/2nd order) and ``pc-darts`` (CIFAR-10)."""
        if self._named is None:
            self._named = {
                name: self.arch(DartsGenome(_from_pairs(normal), _from_pairs(reduce)))
                for name, (normal, reduce) in _PUBLISHED.items()
            }
        return self._named

    # ------------------------------------------------------------------ size
    def size(self) -> int:
        """Distinct (normal, reduction) pairs: the square of the canonical-cell count."""
        return count_cells(len(OP_NAMES) - 1, STEPS, with_none=True) ** 2

    # ------------------------------------------------------------------ analysis and search
    def choices(self, arch: Arch) -> dict[str, str]:
        """The op on each (node, input) edge of both cells (DARTS' alpha layout), ``none`` where no edge was kept."""
        self._check_space(arch)
        out = {}
        for cell, nodes in arch.genome.cells().items():
            for i, node in enumerate(nodes):
                ops = {j: op for op, j in node}
                for j in range(i + 2):
                    out[f"{cell}.{i + 2}<-{j}"] = ops.get(j, NONE)
        return out

    def factors(self, arch: Arch) -> dict[str, float]:
        self._check_space(arch)
        g: DartsGenome = arch.genome
        out = {**_cell_factors("normal", g.normal), **_cell_factors("reduce", g.reduce)}
        out["param_ops"] = out["normal_param_ops"] + out["reduce_param_ops"]
        return out

    def to_vector(self, arch: Arch) -> np.ndarray:
        """DARTS' alpha layout, one-hot: per cell 14 rows (node i, input j) x 8 ops, flattened (224)."""
        self._check_space(arch)
        vec = np.zeros((2, ALPHA_ROWS, len(OP_NAMES)), dtype=np.float64)
        for c, cell in enumerate(arch.genome.cells().values()):
            for i, node in enumerate(cell):
                offset = sum(k + INPUTS for k in range(i))
                for op, j in node:
                    vec[c, offset + j, OP_INDEX[op]] = 1.0
        return vec.ravel()

    def path_vector(self, arch: Arch) -> np.ndarray:
        """BANANAS' path encoding (White et al. 2021) of both cells: per cell and cell input, one 0/1
        feature per op sequence of length 1-4 over the 7 non-``none`` ops (7 + 49 + 343 + 2401 = 2800),
        set when a path from that input to an intermediate node (each feeds the cell output) carries
        that sequence; a ``none`` edge is no path. 2 cells x 2 inputs x 2800 = 11,200 values."""
        self._check_space(arch)
        ops = [op for op in OP_NAMES if op != NONE]
        offsets = [sum(len(ops) ** n for n in range(1, length)) for length in range(STEPS + 2)]
        vec = np.zeros(2 * INPUTS * offsets[STEPS + 1], dtype=np.float64)
        for c, cell in enumerate(arch.genome.cells().values()):
            # reach[s]: (cell input, op sequence) of every path from a cell input to state s
            reach: list[list[tuple[int, tuple[int, ...]]]] = [[(k, ())] for k in range(INPUTS)] + [[] for _ in cell]
            for i, node in enumerate(cell):
                for op, j in node:
                    if op != NONE:
                        reach[INPUTS + i] += [(k, seq + (ops.index(op),)) for k, seq in reach[j]]
            for k, seq in (path for state in reach[INPUTS:] for path in state):
                index = (c * INPUTS + k) * offsets[STEPS + 1] + offsets[len(seq)]
                vec[index + sum(o * len(ops) ** pos for pos, o in enumerate(seq))] = 1.0
        return vec

    def neighbors(self, arch: Arch) -> list[Arch]:
        """Change one edge's op (to one of :attr:`move_ops`) or its input, canonicalised, de-duplicated."""
        self._check_space(arch)
        g: DartsGenome = arch.genome
        seen = {arch}
        out: list[Arch] = []
        for kind, cell in g.cells().items():
            for i, node in enumerate(cell):
                for e, (op, j) in enumerate(node):
                    other = {jj for k, (_, jj) in enumerate(node) if k != e}
                    edits = [(o, j) for o in self.move_ops if o != op]
                    edits += [(op, jj) for jj in range(i + INPUTS) if jj != j and jj not in other]
                    for edit in edits:
                        new_node = node[:e] + (edit,) + node[e + 1 :]
                        new_cell = cell[:i] + (new_node,) + cell[i + 1 :]
                        cand = self.arch(DartsGenome(**{**g.cells(), kind: new_cell}))
                        if cand not in seen:
                            seen.add(cand)
                            out.append(cand)
        return out

    # ------------------------------------------------------------------ models and cost
    def build(
        self,
        arch: Arch,
        num_classes: int | None = None,
        input_size: int | None = None,
        *,
        channels: int = 36,
        layers: int = 20,
    ) -> "nn.Module":
        """DARTS' ``NetworkCIFAR`` (fully convolutional: ``input_size`` does not change the module)."""
        self._check_space(arch)
        _check_network(channels, layers)
        from nasrobust.spaces._darts_net import NetworkCIFAR

        g: DartsGenome = arch.genome
        return NetworkCIFAR(g.normal, g.reduce, num_classes or self.num_classes, channels, layers)

    def cost(
        self,
        arch: Arch,
        num_classes: int | None = None,
        input_size: int | None = None,
        *,
        channels: int = 36,
        layers: int = 20,
    ) -> Cost:
        self._check_space(arch)
        _check_network(channels, layers)
        size = self.resolution(arch, input_size)
        return _network_cost(arch.genome, num_classes or self.num_classes, size, channels, layers)

    def supernet(
        self,
        num_classes: int | None = None,
        channels: int = 16,
        layers: int = 8,
        *,
        affine: bool = True,
        partial_channels: int = 1,
        edge_normalization: bool = False,
        alpha_seed: int = 0,
    ) -> "DartsSupernet":
        """DARTS' one-shot search network: all 8 ops on all 14 edges (defaults: 8 cells, 16 channels).

        Single-path (``set_active``, ``extract``) and soft (``set_mode("soft")``, ``derive``) modes.
        DARTS' own search setting is ``affine=False``; PC-DARTS' adds ``partial_channels=4,
        edge_normalization=True``. See ``spaces/_darts_supernet.py``.
        """
        from nasrobust.spaces._darts_supernet import DartsSupernet

        return DartsSupernet(
            self,
            int(num_classes or self.num_classes),
            channels,
            layers,
            affine=affine,
            partial_channels=partial_channels,
            edge_normalization=edge_normalization,
            alpha_seed=alpha_seed,
        )

    def search_supernet(self, *, num_classes: int, channels: int, cells_per_stage: int, layers: int | None,
                        partial_channels: int, edge_normalization: bool, affine: bool, alpha_seed: int) -> "DartsSupernet":
        """The search network of differentiable searchers: ``layers`` cells, by default ``3 * cells_per_stage + 2``
        (DARTS' 8 is ``cells_per_stage=2``: two normal cells per stage and the two reduction cells)."""
        return self.supernet(num_classes, channels, layers or 3 * cells_per_stage + 2, affine=affine,
                             partial_channels=partial_channels, edge_normalization=edge_normalization,
                             alpha_seed=alpha_seed)


def _check_network(channels: int, layers: int) -> None:
    if channels < 1 or layers < 1:
        raise SpaceError(f"a darts network needs channels >= 1 and layers >= 1, got channels={channels}, layers={layers}")


def _validate_cell(kind: str, cell: Any) -> None:
    """Raise :class:`SpaceError` naming the first node or edge that is not in the space."""
    if not isinstance(cell, (tuple, list)) or len(cell) != STEPS:
        raise SpaceError(f"the {kind} cell needs {STEPS} nodes, got {cell!r}")
    for i, node in enumerate(cell):
        where = f"{kind} node {i} (state {i + INPUTS})"
        if not isinstance(node, (tuple, list)) or len(node) != EDGES:
            raise SpaceError(f"{where} needs {EDGES} (op, input) edges, got {node!r}")
        for edge in node:
            if not isinstance(edge, (tuple, list)) or len(edge) != 2:
                raise SpaceError(f"{where}: edge {edge!r} is not (op, input)")
            op, j = edge
            if not isinstance(op, str) or op not in OP_INDEX:
                raise SpaceError(f"{where}: op {op!r} is not a choice; valid: {list(OP_NAMES)}")
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < i + INPUTS:
                raise SpaceError(f"{where}: input {j!r} is not an earlier state; valid: 0..{i + INPUTS - 1}")
        if node[0][1] == node[1][1]:
            raise SpaceError(f"{where}: both edges read state {node[0][1]}; a node takes two distinct inputs")
