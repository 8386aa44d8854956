"""The NAS-Bench-201 cell space ``nb201`` (Dong & Yang, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search", ICLR 2020).

A cell is a 4-node DAG: node 0 is the cell input, node ``j`` is the sum of one operation applied
to every earlier node, node 3 is the cell output. Each of the 6 edges carries one of 5 operations,
so there are 5**6 = 15,625 cells. The network stacks the cell (see ``spaces/_nb201_net.py``).

Genome: a tuple of 6 op names in the official edge order ``EDGES`` = 1<-0, 2<-0, 2<-1, 3<-0,
3<-1, 3<-2. The encoding body is the official NAS-Bench-201 string of the cell, e.g.
``nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|``.

**Isomorphism.** Many cells compute the same network. NAS-Bench-201 decides this with
``Structure.to_unique_str(consider_zero=True)`` (AutoDL-Projects / xautodl
``models/cell_searchs/genotypes.py``). It builds one expression string per node: node 0 is ``0``.
An edge whose op is ``none``, or whose input string is exactly ``#``, gives ``#``. A
``skip_connect`` edge passes its input's string on unchanged. Any other op gives
``(<input>)@<op>``. A node joins its edge strings, sorted, with ``+``. Two cells are isomorphic when
their output strings are equal. This module reimplements that definition (:func:`unique_key`) and
gets the published 6,466 classes. The count depends on quirks of the official rule. Only a
single-edge node (node 1) can become ``#``, so ``#+#`` is not treated as zero. Sums are compared
as sorted strings, not as multisets. Treating every all-zero node as zero gives 6,285 classes,
which the tests check. We keep the official definition so that our keys match the literature.

**Canonical representative.** Members of a class can differ in parameter count: a conv on a
dead edge still holds weights, as in the benchmark's own ``InferCell``. So the canonical member
is the *leanest* one (:func:`leanness`): fewest conv weights, then fewest convs, then fewest
non-``none`` edges, then the smallest official index. ``build`` and ``cost`` use exactly that
cell. The zero class is therefore the all-``none`` cell. The member with the smallest index would
instead be a cell with three dead 3x3 convs (0.80M params).

**Official index.** The benchmark file's ``meta_archs`` come from the
``generate_meta_info`` step of ``exps/NAS-Bench-201/main.py`` (and from NATS-Bench's
``exps/NATS-Bench/tss-collect.py``, which keeps the same order; NATS-Bench issue #5 confirms that the
indices agree). That step enumerates ``CellStructure.gen_all(['none', 'skip_connect',
'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3'], 4)``, which is ``itertools.product`` order with
edge 1<-0 varying slowest and 3<-2 fastest, then runs ``random.seed(88); random.shuffle(archs)``.
:func:`_official_order` replays that shuffle with CPython's Fisher-Yates and ``_randbelow``
(rejection sampling on ``getrandbits``), written out here so a future change to
``random.shuffle`` cannot move the indices. How this was checked (``tests/test_space_nb201.py``):

* the three assertions in the official script (indices 0, 9 and 123);
* index 0 in HW-NAS-Bench's README, printed by ``get_net_config(0, 'cifar10')``;
* index 1, printed by ``query_info_str_by_arch(1)`` in NATS-Bench issue #18 (the NAS-Bench-201
  README uses the same string in its query example);
* index 9930, in an API log (``arch-index=9930``) with its FLOPs and parameters on CIFAR-10,
  CIFAR-100 and ImageNet16-120;
* index 10820, in a comment on ``api.get_net_config`` output in a third-party NASWOT-style
  script.

The index tables (15,625 cells -> class) are built lazily, once, in pure Python (about 0.1 s).
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from nasrobust.cost import Cost, CostCounter
from nasrobust.errors import SpaceError
from nasrobust.space import Arch, SearchSpace, register_space

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from nasrobust.spaces._nb201_supernet import NB201Supernet

log = logging.getLogger(__name__)

#: The 5 operations in NAS-Bench-201's official order (``NAS_BENCH_201`` in xautodl).
OP_NAMES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
OP_INDEX: Mapping[str, int] = {op: i for i, op in enumerate(OP_NAMES)}
#: Kernel size of the parameterised (ReLU-Conv-BN) ops; the other ops hold no weights.
CONV_KERNELS: Mapping[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}

#: The 6 edges ``(to, from)`` in the official order (node-major, then input index).
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4
#: The 4 paths from the cell input (node 0) to its output (node 3), as tuples of edge positions.
PATHS: tuple[tuple[int, ...], ...] = ((3,), (0, 4), (1, 5), (0, 2, 5))

NUM_CELLS = len(OP_NAMES) ** len(EDGES)  # 15,625
#: Published number of non-isomorphic cells (NAS-Bench-201, Sec. 2.1).
NUM_UNIQUE = 6466
#: Seed of the official shuffle (``random.seed(88)`` in ``generate_meta_info``).
OFFICIAL_SEED = 88

#: Benchmark defaults: C=16 channels in the first stage, N=5 cells per stage.
DEFAULT_CHANNELS = 16
DEFAULT_CELLS_PER_STAGE = 5

Genome = tuple[str, ...]


# --------------------------------------------------------------------------- official strings
def official_string(genome: Sequence[str]) -> str:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: NAS-Bench-201's ``Structure.tostr``."""
    nodes: list[list[str]] = [[] for _ in range(NUM_NODES - 1)]
    for (to, src), op in zip(EDGES, genome):
        nodes[to - 1].append(f"{op}~{src}")
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


def genome_code(genome: Sequence[str]) -> int:
    """Position of the cell in ``gen_all`` order (base 5, edge 1<-0 most significant)."""
    code = 0
    for op in genome:
        code = code * len(OP_NAMES) + OP_INDEX[op]
    return code


def code_genome(code: int) -> Genome:
    ops = []
    for _ in EDGES:
        code, digit = divmod(code, len(OP_NAMES))
        ops.append(OP_NAMES[digit])
    return tuple(reversed(ops))


#: For nodes 1..3, the ``(edge position, input node)`` pairs of their incoming edges.
NODE_INPUTS: tuple[tuple[tuple[int, int], ...], ...] = tuple(
    tuple((e, src) for e, (dst, src) in enumerate(EDGES) if dst == to) for to in range(1, NUM_NODES)
)


def unique_key(genome: Sequence[str]) -> str:
    """NAS-Bench-201's ``to_unique_str(consider_zero=True)``: equal keys = isomorphic cells."""
    nodes = ["0"]
    for inputs in NODE_INPUTS:
        terms = []
        for e, src in inputs:
            op, value = genome[e], nodes[src]
            if op == "none" or value == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(value)
            else:
                terms.append(f"({value})@{op}")
        nodes.append("+".join(sorted(terms)))
    return nodes[-1]


def leanness(genome: Sequence[str]) -> tuple[int, int, int]:
    """Sort key of the canonical choice: conv weights (9 per 3x3, 1 per 1x1, times C**2), then
    conv count (BN weights, times 2C), then edges that are not ``none``. The order does not depend
    on the width C."""
    n3, n1 = genome.count("nor_conv_3x3"), genome.count("nor_conv_1x1")
    return 9 * n3 + n1, n3 + n1, len(genome) - genome.count("none")


# --------------------------------------------------------------------------- index tables
def _randbelow(rng: random.Random, n: int) -> int:
    """CPython's ``Random._randbelow_with_getrandbits`` (since 3.2)."""
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return r


def _official_order() -> list[int]:
    """``gen_all`` codes in benchmark-index order: ``random.seed(88); random.shuffle(archs)``."""
    rng = random.Random(OFFICIAL_SEED)
    order = list(range(NUM_CELLS))
    for i in reversed(range(1, NUM_CELLS)):
        j = _randbelow(rng, i + 1)
        order[i], order[j] = order[j], order[i]
    return order


@dataclass(frozen=True)
class IndexTables:
    """Official index <-> cell <-> isomorphism class, for all 15,625 cells."""

    genomes: tuple[Genome, ...]  # gen_all code -> cell
    code_of_index: tuple[int, ...]  # official index -> gen_all code
    index_of_code: tuple[int, ...]  # gen_all code -> official index
    rep_of_code: tuple[int, ...]  # gen_all code -> official index of its class's canonical cell
    members: Mapping[int, tuple[int, ...]]  # representative index -> sorted member indices
    representatives: tuple[int, ...]  # representative indices, ascending

    @classmethod
    def build(cls) -> "IndexTables":
        genomes = tuple(itertools.product(OP_NAMES, repeat=len(EDGES)))  # gen_all order
        code_of_index = _official_order()
        index_of_code = [0] * NUM_CELLS
        for index, code in enumerate(code_of_index):
            index_of_code[code] = index
        keys = [unique_key(g) for g in genomes]
        lean = [leanness(g) for g in genomes]
        classes: dict[str, list[int]] = {}
        for index, code in enumerate(code_of_index):  # ascending index within each class
            classes.setdefault(keys[code], []).append(index)
        members = {
            min(group, key=lambda i: (*lean[code_of_index[i]], i)): tuple(group) for group in classes.values()
        }
        rep_of_index = [0] * NUM_CELLS
        for rep, group in members.items():
            for index in group:
                rep_of_index[index] = rep
        return cls(
            genomes=genomes,
            code_of_index=tuple(code_of_index),
            index_of_code=tuple(index_of_code),
            rep_of_code=tuple(rep_of_index[index_of_code[c]] for c in range(NUM_CELLS)),
            members=MappingProxyType(members),
            representatives=tuple(sorted(members)),
        )


@functools.cache
def index_tables() -> IndexTables:
    """The tables, built on first use and shared."""
    tables = IndexTables.build()
    log.debug("nb201: %d cells in %d isomorphism classes", NUM_CELLS, len(tables.representatives))
    return tables


# --------------------------------------------------------------------------- analytic cost
def _cost_zero(c: CostCounter, cin: int, cout: int, stride: int, affine: bool) -> None:
    c.pool(1, stride)  # strided zeros, no weights


def _cost_relu_conv_bn(kernel: int) -> Callable[[CostCounter, int, int, int, bool], None]:
    def cost(c: CostCounter, cin: int, cout: int, stride: int, affine: bool) -> None:
        c.conv(cin, cout, kernel, stride, bias=not affine).norm(cout, affine)

    return cost


def _cost_skip(c: CostCounter, cin: int, cout: int, stride: int, affine: bool) -> None:
    if stride == 1 and cin == cout:
        return
    if stride == 1:  # FactorizedReduce, stride 1: one 1x1 conv + BN
        c.conv(cin, cout, 1, bias=not affine).norm(cout, affine)
        return
    halves = (cout // 2, cout - cout // 2)  # FactorizedReduce: two shifted 1x1/2 convs, concatenated
    paths = [c.branch().conv(cin, h, 1, stride, bias=not affine) for h in halves]
    c.merge(*paths).norm(cout, affine)


def _cost_avg_pool(c: CostCounter, cin: int, cout: int, stride: int, affine: bool) -> None:
    if cin != cout:
        c.conv(cin, cout, 1, bias=not affine).norm(cout, affine)
    c.pool(3, stride, padding=1)


#: Analytic cost of each op, mirroring ``_nb201_net.OPS`` for any (C_in, C_out, stride).
OP_COSTS: Mapping[str, Callable[[CostCounter, int, int, int, bool], None]] = {
    "none": _cost_zero,
    "skip_connect": _cost_skip,
    "nor_conv_1x1": _cost_relu_conv_bn(1),
    "nor_conv_3x3": _cost_relu_conv_bn(3),
    "avg_pool_3x3": _cost_avg_pool,
}


def cell_cost(c: CostCounter, genome: Sequence[str], cin: int, cout: int, stride: int = 1, affine: bool = True) -> None:
    """Add one cell: edges from node 0 map ``cin -> cout`` with ``stride``; the rest ``cout -> cout``."""
    sizes = {0: (c.h, c.w)}
    for (to, src), op in zip(EDGES, genome):
        edge = c.branch().resize(*sizes[src])
        OP_COSTS[op](edge, cin if src == 0 else cout, cout, stride if src == 0 else 1, affine)
        sizes[to] = (edge.h, edge.w)
        c.merge(edge)
    c.resize(*sizes[NUM_NODES - 1])


def residual_block_cost(c: CostCounter, cin: int, cout: int, stride: int, affine: bool = True) -> None:
    """NAS-Bench-201's ``ResNetBasicblock``: two ReLU-Conv-BN 3x3 plus a shortcut."""
    shortcut = c.branch()
    c.conv(cin, cout, 3, stride, bias=not affine).norm(cout, affine)
    c.conv(cout, cout, 3, bias=not affine).norm(cout, affine)
    if stride == 2:  # AvgPool2d(2, 2) -> Conv2d 1x1, no BN
        shortcut.pool(2, 2).conv(cin, cout, 1)
    elif cin != cout:
        shortcut.conv(cin, cout, 1, bias=not affine).norm(cout, affine)
    size = (c.h, c.w)
    c.merge(shortcut).resize(*size)


def stage_plan(channels: int, cells_per_stage: int) -> list[tuple[str, int, int]]:
    """``(kind, C_in, C_out)`` of every cell in order: N cells, reduction, N cells, reduction, N cells."""
    plan: list[tuple[str, int, int]] = []
    c_prev = channels
    for stage in range(3):
        c = channels * 2**stage
        if stage:
            plan.append(("reduce", c_prev, c))
        plan.extend(("cell", c, c) for _ in range(cells_per_stage))
        c_prev = c
    return plan


def check_input_size(input_size: int) -> None:
    """The residual block's shortcut (2x2 average pool) and main path (3x3/2 conv) agree only on
    even sizes, so each of the two reductions needs one: the input must be a multiple of 4."""
    if input_size < 4 or input_size % 4:
        raise SpaceError(
            f"nb201 networks need an input size divisible by 4 (two stride-2 residual blocks), "
            f"got {input_size}; use e.g. 32 (CIFAR), 28 (MNIST) or 16 (ImageNet16-120)"
        )


def check_network_options(channels: int, cells_per_stage: int) -> None:
    for value, what in ((channels, "channels"), (cells_per_stage, "cells_per_stage")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpaceError(f"nb201 {what} must be a positive integer, got {value!r}")


@functools.lru_cache(maxsize=1 << 16)
def network_cost(
    genome: tuple[str, ...], num_classes: int, input_size: int, channels: int, cells_per_stage: int
) -> Cost:
    """Params and MACs of ``_nb201_net.build_network`` with the same arguments.

    The cells of a stage are identical and map C -> C at stride 1, where only the convs cost
    anything and no op changes the size. So one cell is counted, conv by conv (the general
    :func:`cell_cost` gives the same numbers, more slowly), and repeated.
    """
    check_input_size(input_size)
    check_network_options(channels, cells_per_stage)
    c = CostCounter(input_size)
    c.conv(3, channels, 3).norm(channels)  # stem
    for stage in range(3):
        width = channels * 2**stage
        if stage:
            residual_block_cost(c, width // 2, width, 2)
        one = c.branch()
        for op in genome:
            if op in CONV_KERNELS:
                one.conv(width, width, CONV_KERNELS[op]).norm(width)
        c.merge(*[one] * cells_per_stage)
    c_last = channels * 4
    c.norm(c_last).global_pool().linear(c_last, num_classes)  # lastact BN + ReLU, pool, classifier
    return c.result()


# --------------------------------------------------------------------------- the space
GRAMMAR = (
    "nb201:|<op>~0|+|<op>~0|<op>~1|+|<op>~0|<op>~1|<op>~2|  (the official NAS-Bench-201 string; "
    "node j lists one '<op>~<i>' per input node i < j; the 'nb201:' prefix is optional) with "
    f"<op> in {{{', '.join(OP_NAMES)}}}; `resolve` also takes an official index 0..{NUM_CELLS - 1}"
)

#: Named cells (NAS-Bench-201's ``CellArchitectures`` plus the README example, index 1).
NAMED_CELLS: Mapping[str, str] = {
    "resnet": "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
    "all-conv3x3": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "all-conv1x1": "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "all-skip": "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "readme-example": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
}


@register_space("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201 cell space: 5 ops on 6 edges, 15,625 cells, 6,466 non-isomorphic."""

    name = "nb201"
    description = "NAS-Bench-201 cell (Dong & Yang, ICLR 2020): 5 ops x 6 edges, 6,466 unique of 15,625 cells"
    grammar = GRAMMAR
    num_classes = 10
    input_size = 32

    # ------------------------------------------------------------------ genome hooks
    def encode_genome(self, genome: Hashable) -> str:
        return official_string(genome)  # type: ignore[arg-type]

    def parse_genome(self, body: str) -> Genome:
        text = body.strip()
        nodes = text.split("+")
        if len(nodes) != NUM_NODES - 1:
            raise self.encoding_error(
                body, f"expected {NUM_NODES - 1} nodes separated by '+', got {len(nodes)}"
            )
        ops: dict[tuple[int, int], str] = {}
        for to, node in enumerate(nodes, start=1):
            node = node.strip()
            if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
                raise self.encoding_error(body, f"node {to} {node!r} must look like '|<op>~<i>|...|'")
            entries = node[1:-1].split("|")
            if len(entries) != to:
                raise self.encoding_error(
                    body, f"node {to} {node!r} has {len(entries)} edges; it needs exactly {to} (one from each of nodes 0..{to - 1})"
                )
            for entry in entries:
                op, sep, src_text = entry.partition("~")
                if not sep:
                    raise self.encoding_error(body, f"edge {entry!r} in node {to} is not '<op>~<input node>'")
                if op not in OP_INDEX:
                    raise self.encoding_error(body, f"unknown op {op!r} in node {to}; valid ops: {', '.join(OP_NAMES)}")
                if not src_text.isdigit() or int(src_text) >= to:
                    raise self.encoding_error(
                        body, f"edge {entry!r} in node {to}: input node must be one of 0..{to - 1}"
                    )
                if (to, int(src_text)) in ops:
                    raise self.encoding_error(body, f"node {to} has two edges from node {src_text}")
                ops[(to, int(src_text))] = op
        return tuple(ops[edge] for edge in EDGES)

    def random_genome(self, rng: np.random.Generator) -> Genome:
        """Uniform over the 15,625 cells, as NAS-Bench-201's random search samples."""
        return tuple(OP_NAMES[i] for i in rng.integers(len(OP_NAMES), size=len(EDGES)))

    def uniform_genome(self, rng: np.random.Generator) -> Genome:
        """Uniform over the 6,466 distinct (non-isomorphic) cells, as budgeted sampling needs.

        :meth:`random_genome` is uniform over the 15,625 cells instead, so a class is drawn in
        proportion to its size (``class_size`` factor: 1 to 275 cells).
        """
        tables = index_tables()
        rep = tables.representatives[int(rng.integers(len(tables.representatives)))]
        return tables.genomes[tables.code_of_index[rep]]

    def validate(self, genome: Any) -> None:
        if not isinstance(genome, tuple) or len(genome) != len(EDGES):
            raise SpaceError(f"an nb201 genome is a tuple of {len(EDGES)} op names (edges {_edge_names()}), got {genome!r}")
        for (to, src), op in zip(EDGES, genome):
            if op not in OP_INDEX:
                raise SpaceError(f"edge {to}<-{src} op {op!r} is not a choice; valid: {list(OP_NAMES)}")

    def canonical(self, genome: Hashable) -> Genome:
        """The leanest member of the genome's isomorphism class (see the module docstring)."""
        tables = index_tables()
        rep = tables.rep_of_code[genome_code(genome)]  # type: ignore[arg-type]
        return tables.genomes[tables.code_of_index[rep]]

    # ------------------------------------------------------------------ official indices
    def from_index(self, index: int) -> Arch:
        """The architecture (canonicalised) of official NAS-Bench-201 index ``index``."""
        return self.arch(self.cell(index))

    def cell(self, index: int) -> Genome:
        """The raw cell (not canonicalised) at official index ``index``."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < NUM_CELLS:
            raise SpaceError(f"an official nb201 index is an integer in 0..{NUM_CELLS - 1}, got {index!r}")
        tables = index_tables()
        return tables.genomes[tables.code_of_index[int(index)]]

    def official_string(self, index: int) -> str:
        """The official NAS-Bench-201 string of index ``index`` (``api.arch(index)``)."""
        return official_string(self.cell(index))

    def raw_index(self, cell: str | Sequence[str]) -> int:
        """Official index of one exact cell (an official string or a genome), not canonicalised."""
        genome = self.parse_genome(cell) if isinstance(cell, str) else tuple(cell)
        self.validate(genome)
        return index_tables().index_of_code[genome_code(genome)]

    def index(self, arch: Arch) -> int:
        """Official index of ``arch``'s canonical cell (one of :meth:`indices`)."""
        self._check_space(arch)
        return self.raw_index(arch.genome)  # type: ignore[arg-type]

    def indices(self, arch: Arch) -> tuple[int, ...]:
        """Every official index whose cell is isomorphic to ``arch``, ascending."""
        return index_tables().members[self.index(arch)]

    def named(self) -> Mapping[str, Arch]:
        return {name: self.decode(text) for name, text in NAMED_CELLS.items()}

    def resolve(self, text: str) -> Arch:
        """A named cell, an encoding (prefix optional) or an official index such as ``"123"``."""
        body = text.strip()
        if body.startswith(f"{self.name}:"):
            body = body[len(self.name) + 1 :].strip()
        if body.isdigit():
            index = int(body)
            if index >= NUM_CELLS:
                raise self.encoding_error(text, f"official index {index} is out of range 0..{NUM_CELLS - 1}")
            return self.from_index(index)
        return super().resolve(text)

    # ------------------------------------------------------------------ size and sampling
    def size(self) -> int:
        return len(index_tables().representatives)

    def enumerate(self) -> Iterator[Arch]:
        """The 6,466 canonical cells, in ascending official index of the canonical cell."""
        tables = index_tables()
        for rep in tables.representatives:
            yield Arch(self.name, tables.genomes[tables.code_of_index[rep]])

    # ------------------------------------------------------------------ analysis and search
    def choices(self, arch: Arch) -> dict[str, str]:
        """The op on each edge, ``edge<to><-<from>``, in NAS-Bench-201's edge order (NAS-Bench-201-R compares per edge)."""
        self._check_space(arch)
        return {f"edge{to}<-{src}": op for (to, src), op in zip(EDGES, arch.genome)}

    def factors(self, arch: Arch) -> dict[str, float]:
        """Op counts, the live input->output structure and depths of the canonical cell.

        ``n_<op>``: edges with each op (all 6 edges). An edge is *live* when it lies on an
        input->output path with no ``none`` edge; ``path_<op>`` counts live edges per op,
        ``active_edges`` all live edges, ``connected`` is 1 when any path exists. ``depth`` is
        the most ReLU-Conv-BN ops on one live path (the cell's effective depth);
        ``path_length`` the most edges on one live path and ``convs_on_longest_path`` the most
        convs among the longest live paths. ``total_depth`` counts weight layers on the longest
        input->logits path of the default network: stem + 15 cells x ``depth`` + 2 residual
        blocks x 2 + classifier, and 0 when the cell is disconnected (the logits then do not
        depend on the input). ``class_size`` is how many of the 15,625 cells are isomorphic to it.
        """
        genome: Genome = self._genome(arch)
        live_paths = [p for p in PATHS if all(genome[e] != "none" for e in p)]
        live = sorted({e for p in live_paths for e in p})
        convs = [sum(genome[e] in CONV_KERNELS for e in p) for p in live_paths]
        longest = max((len(p) for p in live_paths), default=0)
        depth = max(convs, default=0)
        out: dict[str, float] = {f"n_{op}": float(genome.count(op)) for op in OP_NAMES}
        for op in OP_NAMES[1:]:
            out[f"path_{op}"] = float(sum(genome[e] == op for e in live))
        out["active_edges"] = float(len(live))
        out["connected"] = float(bool(live_paths))
        out["depth"] = float(depth)
        out["path_length"] = float(longest)
        out["convs_on_longest_path"] = float(
            max((n for n, p in zip(convs, live_paths) if len(p) == longest), default=0)
        )
        out["total_depth"] = float(1 + 3 * DEFAULT_CELLS_PER_STAGE * depth + 2 * 2 + 1) if live_paths else 0.0
        out["class_size"] = float(len(self.indices(arch)))
        return out

    def to_vector(self, arch: Arch) -> np.ndarray:
        """One-hot of the canonical cell: 6 edges x 5 ops (official orders), 30 values."""
        vec = np.zeros((len(EDGES), len(OP_NAMES)), dtype=np.float64)
        for e, op in enumerate(self._genome(arch)):
            vec[e, OP_INDEX[op]] = 1.0
        return vec.ravel()

    def path_vector(self, arch: Arch) -> np.ndarray:
        """BANANAS' path encoding (White et al. 2021) of the canonical cell: one 0/1 feature per op
        sequence of length 1-3 over the 4 non-``none`` ops (4 + 16 + 64 = 84), set when a cell
        input->output path (:data:`PATHS`) carries that sequence; a path through ``none`` is no path."""
        ops = [op for op in OP_NAMES if op != "none"]
        vec = np.zeros(sum(len(ops) ** n for n in range(1, 4)), dtype=np.float64)
        genome = self._genome(arch)
        for path in PATHS:
            seq = [genome[e] for e in path]
            if "none" in seq:
                continue
            index = sum(len(ops) ** n for n in range(1, len(seq)))
            for k, op in enumerate(seq):
                index += ops.index(op) * len(ops) ** k
            vec[index] = 1.0
        return vec

    def neighbors(self, arch: Arch) -> list[Arch]:
        """Change one edge's op, canonicalise; distinct, in edge-then-op order, without ``arch``."""
        genome = self._genome(arch)
        seen: dict[Arch, None] = {}
        for e in range(len(EDGES)):
            for op in OP_NAMES:
                if op != genome[e]:
                    other = self.arch(genome[:e] + (op,) + genome[e + 1 :])
                    if other != arch:
                        seen.setdefault(other, None)
        return list(seen)

    # ------------------------------------------------------------------ models and cost
    def build(
        self,
        arch: Arch,
        num_classes: int | None = None,
        input_size: int | None = None,
        channels: int = DEFAULT_CHANNELS,
        cells_per_stage: int = DEFAULT_CELLS_PER_STAGE,
    ) -> "nn.Module":
        """NAS-Bench-201's network for the canonical cell (defaults: C=16, N=5, as benchmarked).

        ``channels`` and ``cells_per_stage`` give cheaper networks for tests and experiments.
        """
        from nasrobust.spaces._nb201_net import build_network

        check_input_size(self.resolution(arch, input_size))
        check_network_options(channels, cells_per_stage)
        return build_network(
            self._genome(arch), num_classes or self.num_classes, channels=channels, cells_per_stage=cells_per_stage
        )

    def cost(
        self,
        arch: Arch,
        num_classes: int | None = None,
        input_size: int | None = None,
        channels: int = DEFAULT_CHANNELS,
        cells_per_stage: int = DEFAULT_CELLS_PER_STAGE,
    ) -> Cost:
        return network_cost(
            self._genome(arch),
            int(num_classes or self.num_classes),
            self.resolution(arch, input_size),
            channels,
            cells_per_stage,
        )

    def supernet(
        self,
        num_classes: int | None = None,
        channels: int = DEFAULT_CHANNELS,
        cells_per_stage: int = DEFAULT_CELLS_PER_STAGE,
        *,
        affine: bool = True,
        partial_channels: int = 1,
        alpha_seed: int = 0,
    ) -> "NB201Supernet":
        """The one-shot / DARTS supernet: all 5 ops on all 6 edges (defaults: the benchmark's C=16, N=5).

        Single-path (``set_active``, ``extract``) and soft (``set_mode("soft")``, ``derive``) modes;
        ``affine=False`` is the benchmark's DARTS search setting, ``partial_channels=4`` PC-DARTS'
        partial channels. See ``spaces/_nb201_supernet.py``.
        """
        from nasrobust.spaces._nb201_supernet import NB201Supernet

        return NB201Supernet(
            self,
            int(num_classes or self.num_classes),
            channels,
            cells_per_stage,
            affine=affine,
            partial_channels=partial_channels,
            alpha_seed=alpha_seed,
        )

    def search_supernet(self, *, num_classes: int, channels: int, cells_per_stage: int, layers: int | None,
                        partial_channels: int, edge_normalization: bool, affine: bool, alpha_seed: int) -> "NB201Supernet":
        """The search network of differentiable searchers: ``cells_per_stage`` cells per stage (``layers`` and
        ``edge_normalization`` do not apply to NAS-Bench-201's fixed macro skeleton)."""
        return self.supernet(num_classes, channels, cells_per_stage, affine=affine, partial_channels=partial_channels,
                             alpha_seed=alpha_seed)

    def _genome(self, arch: Arch) -> Genome:
        self._check_space(arch)
        return arch.genome  # type: ignore[return-value]


def _edge_names() -> str:
    return ", ".join(f"{to}<-{src}" for to, src in EDGES)
