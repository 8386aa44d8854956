"""The DARTS / PC-DARTS one-shot supernet: all 8 ops on all 14 edges of every cell.

Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019 (``cnn/model_search.py``);
Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search",
ICLR 2020 (``model_search.py``). Read, not copied.

The skeleton is DARTS' search network, which is ``_darts_net.NetworkCIFAR`` with ``layers``
cells (search default: 8 cells, 16 channels; reductions at ``layers // 3`` and ``2 layers // 3``).
Each cell preprocesses its two inputs as the stand-alone cell does and holds one
:class:`~nasrobust.oneshot.MixedOp` per (input state ``j``, node ``i``) pair: 2 + 3 + 4 + 5 = 14
edges, row ``sum_{k<i} (k + 2) + j`` of the architecture parameters ``alpha_normal`` and
``alpha_reduce`` (14 x 8, shared by all normal / all reduction cells).

* Single-path mode: node ``i`` sums only the two edges the architecture gives it, with their ops;
  the other 12 edges are off. ``extract(arch)`` is ``space.build(arch, channels=C, layers=L)``
  with the same weights.
* Soft mode: node ``i = sum_j sum_o softmax(alpha[i, j])_o op_o(state j)`` over all its inputs
  (DARTS), with PC-DARTS' options: ``partial_channels=K`` (mix ``C / K`` channels, shuffle) and
  ``edge_normalization`` (edge weights ``softmax_j(beta[i, :])`` multiply each incoming edge;
  ``beta_normal`` / ``beta_reduce`` of 14 entries). Pooling ops get an ``affine=False`` BN
  after them in soft mode only, as in both papers' search networks.
* ``derive()``: DARTS' ``genotype()`` -- per node, the two incoming edges whose strongest
  non-``none`` op weight is largest (PC-DARTS: after multiplying each edge's op weights by its
  normalised edge weight), each with its argmax non-``none`` op; ties go to the lower input /
  op index as in the reference ``sorted`` / strict ``>``. The result is canonicalised
  (:func:`nasrobust.spaces.darts.canonical_cell` relabels nodes), like every darts architecture.
* ``affine=True`` (default) gives the cell ops and preprocessing the stand-alone network's affine
  BN; ``affine=False`` is the papers' search setting (converted exactly on extraction).
* ``largest()``: every edge ``sep_conv_5x5`` (the op with most parameters and MACs at every
  stride), node ``i`` reading states ``i`` and ``i + 1`` (the deepest cell). ``smallest()``: no
  op weights -- normal nodes ``skip_connect`` from both cell inputs, reduction nodes
  ``max_pool_3x3`` from both (a stride-2 skip is a weighted FactorizedReduce). ``none`` is not
  used: an all-``none`` cell has no weights either but discards its input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.errors import NasRobustError
from nasrobust.oneshot import MixedOp, OneShotSupernet, check_partial_channels, copy_weights
from nasrobust.space import Arch, SearchSpace
from nasrobust.spaces._darts_net import OPS, FactorizedReduce, NetworkCIFAR, ReLUConvBN
from nasrobust.spaces.darts import (
    ALPHA_ROWS,
    EDGES,
    INPUTS,
    NONE,
    OP_INDEX,
    OP_NAMES,
    STEPS,
    Cell,
    DartsGenome,
    _check_network,
)

#: ``ROWS[i][j]``: the alpha row of the edge from state ``j`` into node ``i``.
ROWS: tuple[tuple[int, ...], ...] = tuple(
    tuple(sum(k + INPUTS for k in range(i)) + j for j in range(i + INPUTS)) for i in range(STEPS)
)
#: Ops followed by an ``affine=False`` BN in soft mode (DARTS' ``'pool' in primitive``).
POOL_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3")
KINDS: tuple[str, ...] = ("normal", "reduce")
NONE_INDEX = OP_INDEX[NONE]

#: One active edge: (alpha row, input state, op position).
ActiveEdge = tuple[int, int, int]


def reduction_cells(layers: int) -> tuple[int, int]:
    """Cell positions that reduce (NetworkCIFAR / DARTS' search network)."""
    return layers // 3, 2 * layers // 3


class DartsSearchCell(nn.Module):
    """A DARTS cell with a :class:`MixedOp` of every op on each of its 14 edges."""

    def __init__(
        self,
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        affine: bool = True,
        partial_channels: int = 1,
    ):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (
            FactorizedReduce(c_prev_prev, c, affine) if reduction_prev else ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine)
        )
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine)
        cp = c // partial_channels
        self.edges = nn.ModuleList()
        for i in range(STEPS):
            for j in range(i + INPUTS):
                stride = 2 if reduction and j < INPUTS else 1
                self.edges.append(
                    MixedOp(
                        [OPS[name](cp, stride, affine) for name in OP_NAMES],
                        stride=stride,
                        partial_channels=partial_channels,
                        soft_post={OP_INDEX[name]: nn.BatchNorm2d(cp, affine=False) for name in POOL_OPS},
                    )
                )

    def single(self, s0: torch.Tensor, s1: torch.Tensor, nodes: Sequence[Sequence[ActiveEdge]]) -> torch.Tensor:
        """Node ``i`` sums its active edges ``(row, input, op)`` in order, as ``_darts_net.Cell`` does."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in nodes:
            total = None
            for row, j, op in node:
                h = self.edges[row].single(states[j], op)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat(states[INPUTS:], dim=1)

    def soft(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None) -> torch.Tensor:
        """Every edge mixes its ops with ``weights[row]``, scaled by ``edge_weights[row]`` when given."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for rows in ROWS:
            terms = [self.edges[row].soft(states[j], weights[row]) for j, row in enumerate(rows)]
            if edge_weights is not None:
                terms = [edge_weights[row] * t for row, t in zip(rows, terms)]
            states.append(sum(terms))
        return torch.cat(states[INPUTS:], dim=1)


class DartsSupernet(OneShotSupernet):
    """DARTS / PC-DARTS one-shot supernet (see the module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int = 10,
        channels: int = 16,
        layers: int = 8,
        *,
        affine: bool = True,
        partial_channels: int = 1,
        edge_normalization: bool = False,
        alpha_seed: int = 0,
    ):
        _check_network(channels, layers)
        reductions = reduction_cells(layers)
        widths = [channels * 2 ** sum(i >= r for r in reductions) for i in range(layers)]
        check_partial_channels(partial_channels, widths, space.name)
        odd = [c for i, c in enumerate(widths) if i in reductions and (c // partial_channels) % 2]
        if odd:
            raise NasRobustError(
                f"darts supernet: partial_channels={partial_channels} leaves an odd width {odd[0] // partial_channels} in a reduction cell, "
                f"whose stride-2 skip_connect (FactorizedReduce) needs an even one; pick channels divisible by {2 * partial_channels}"
            )
        shapes = {f"alpha_{kind}": (ALPHA_ROWS, len(OP_NAMES)) for kind in KINDS}
        if edge_normalization:
            shapes.update({f"beta_{kind}": (ALPHA_ROWS,) for kind in KINDS})
        config = {
            "channels": channels,
            "layers": layers,
            "affine": bool(affine),
            "partial_channels": partial_channels,
            "edge_normalization": bool(edge_normalization),
            "alpha_seed": alpha_seed,
        }
        super().__init__(space, num_classes, config, shapes, partial_channels, alpha_seed)
        self.channels, self.layers = channels, layers
        self.edge_normalization = bool(edge_normalization)

        # DARTS' search network = NetworkCIFAR's skeleton with search cells (same names and order).
        c_curr = 3 * channels  # NetworkCIFAR's stem_multiplier
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev = c_curr, c_curr
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i, c in enumerate(widths):
            reduction = i in reductions
            self.cells.append(DartsSearchCell(c_prev_prev, c_prev, c, reduction, reduction_prev, affine, partial_channels))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, STEPS * c
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self._plan: dict[str, tuple[tuple[ActiveEdge, ...], ...]] = {}

    # ------------------------------------------------------------------ Supernet hooks
    def largest(self) -> Arch:
        cell = tuple((("sep_conv_5x5", i), ("sep_conv_5x5", i + 1)) for i in range(STEPS))
        return self.space.arch(DartsGenome(cell, cell))

    def smallest(self) -> Arch:
        normal = tuple((("skip_connect", 0), ("skip_connect", 1)) for _ in range(STEPS))
        reduce = tuple((("max_pool_3x3", 0), ("max_pool_3x3", 1)) for _ in range(STEPS))
        return self.space.arch(DartsGenome(normal, reduce))

    def build_kwargs(self) -> dict[str, int]:
        return {"channels": self.channels, "layers": self.layers}

    def _activate(self, arch: Arch) -> None:
        self._plan = {kind: _plan(cell) for kind, cell in arch.genome.cells().items()}

    def _copy_weights(self, arch: Arch, net: nn.Module) -> None:
        if not isinstance(net, NetworkCIFAR) or len(net.cells) != len(self.cells):
            raise TypeError(f"expected a NetworkCIFAR of {len(self.cells)} cells")
        plan = {kind: _plan(cell) for kind, cell in arch.genome.cells().items()}
        copy_weights(self.stem, net.stem)
        copy_weights(self.classifier, net.classifier)
        for mine, theirs in zip(self.cells, net.cells):
            copy_weights(mine.preprocess0, theirs.preprocess0)
            copy_weights(mine.preprocess1, theirs.preprocess1)
            active = [edge for node in plan[_kind(mine)] for edge in node]
            if [j for _, j, _ in active] != [j for inputs in theirs.inputs for j in inputs]:
                raise RuntimeError("the stand-alone cell's edges do not follow the architecture")
            for (row, _, op), target in zip(active, theirs.ops):
                copy_weights(mine.edges[row].ops[op], target)

    # ------------------------------------------------------------------ forward
    def _forward_single(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell.single(s0, s1, self._plan[_kind(cell)])
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))

    def _forward_soft(self, x: torch.Tensor) -> torch.Tensor:
        weights = {kind: F.softmax(self.arch_params[f"alpha_{kind}"], dim=-1) for kind in KINDS}
        edges = {kind: self._edge_weights(kind) for kind in KINDS}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = _kind(cell)
            s0, s1 = s1, cell.soft(s0, s1, weights[kind], edges[kind])
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))

    def _edge_weights(self, kind: str) -> torch.Tensor | None:
        """PC-DARTS edge normalisation: ``softmax`` of ``beta`` over each node's incoming edges (14 values)."""
        if not self.edge_normalization:
            return None
        beta = self.arch_params[f"beta_{kind}"]
        return torch.cat([F.softmax(beta[rows[0] : rows[-1] + 1], dim=-1) for rows in ROWS])

    @torch.no_grad()
    def derive(self) -> Arch:
        """DARTS' / PC-DARTS' ``genotype()``: top-2 incoming edges by strongest non-``none`` op, argmax non-``none`` op."""
        cells = {}
        for kind in KINDS:
            w = F.softmax(self.arch_params[f"alpha_{kind}"], dim=-1)
            edge = self._edge_weights(kind)
            if edge is not None:
                w = w * edge[:, None]
            cells[kind] = derive_cell(w.tolist())
        return self.space.arch(DartsGenome(cells["normal"], cells["reduce"]))


def derive_cell(weights: Sequence[Sequence[float]]) -> Cell:
    """DARTS' ``_parse`` on one cell's (edge-scaled) op weights, 14 rows x 8 ops."""
    nodes = []
    for rows in ROWS:
        ops = [[(w, k) for k, w in enumerate(weights[row]) if k != NONE_INDEX] for row in rows]
        strength = [max(w for w, _ in row_ops) for row_ops in ops]
        top = sorted(range(len(rows)), key=lambda j: -strength[j])[:EDGES]
        # the first maximum, as DARTS' strict '>' scan picks it
        nodes.append(tuple((OP_NAMES[max(ops[j], key=lambda wk: (wk[0], -wk[1]))[1]], j) for j in top))
    return tuple(nodes)


def _plan(cell: Cell) -> tuple[tuple[ActiveEdge, ...], ...]:
    return tuple(tuple((ROWS[i][j], j, OP_INDEX[op]) for op, j in node) for i, node in enumerate(cell))


def _kind(cell: DartsSearchCell) -> str:
    return KINDS[int(cell.reduction)]
