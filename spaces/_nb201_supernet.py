"""The NAS-Bench-201 one-shot supernet: all 5 ops on all 6 edges of every cell.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020. The macro skeleton is the benchmark's (``_nb201_net.NB201Network``: stem, 3 stages
of N cells, two residual reduction blocks, BN-ReLU, pool, linear); every cell is a
:class:`NB201SearchCell` whose edges are :class:`~nasrobust.oneshot.MixedOp`\\ s over
``_nb201_net.OPS``. As in the benchmark's search networks (xautodl ``TinyNetworkDarts`` and
friends), one set of architecture parameters, ``alpha`` (6 edges x 5 ops), is shared by all cells.

* Single-path mode runs the arch's (canonical) cell in every cell position, so ``extract(arch)``
  is ``space.build(arch, channels=C, cells_per_stage=N)`` with the same weights.
* Soft mode is xautodl's DARTS search cell: node ``j = sum_i sum_o softmax(alpha[i->j])_o op_o(node i)``.
* ``derive()`` follows the NAS-Bench-201 DARTS baseline, ``TinyNetworkDarts.genotype()``
  (xautodl ``models/cell_searchs/search_model_darts.py``): the argmax over **all five** ops of
  each edge, ``none`` included; the result is canonicalised like every nb201 architecture.
* ``affine=True`` (default) gives the ops the stand-alone network's affine BN, the usual
  choice for single-path / sandwich training; ``affine=False`` is the benchmark's DARTS setting
  (BN without scale and shift, convs with a bias), converted exactly on extraction. BN layers
  always track running statistics (xautodl's search scripts default to ``track_running_stats=0``,
  i.e. batch statistics in evaluation too); extraction and BN re-calibration need them, and a
  DARTS search, which only runs training-mode forwards, is unaffected.
* ``largest()`` is every edge ``nor_conv_3x3`` (the most parameters and MACs of the space).
  ``smallest()`` is every edge ``skip_connect``: no cell weights and no cell MACs, and unlike the
  all-``none`` cell (also weight-free) its output still depends on the input, so the smallest
  subnet of sandwich training learns something.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.oneshot import MixedOp, OneShotSupernet, check_partial_channels, copy_weights
from nasrobust.space import Arch, SearchSpace
from nasrobust.spaces._nb201_net import OPS, Cell, NB201Network
from nasrobust.spaces.nb201 import (
    DEFAULT_CELLS_PER_STAGE,
    DEFAULT_CHANNELS,
    EDGES,
    NODE_INPUTS,
    OP_INDEX,
    OP_NAMES,
    check_network_options,
)

ALPHA = "alpha"


class NB201SearchCell(nn.Module):
    """One cell with a :class:`MixedOp` of all :data:`OP_NAMES` on each edge (``C -> C``, stride 1)."""

    def __init__(self, channels: int, affine: bool = True, partial_channels: int = 1):
        super().__init__()
        c = channels // partial_channels
        self.edges = nn.ModuleList(
            MixedOp([OPS[op](c, c, 1, affine=affine, track_running_stats=True) for op in OP_NAMES], partial_channels=partial_channels)
            for _ in EDGES
        )

    def _run(self, x: torch.Tensor, edge: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        nodes = [x]
        for inputs in NODE_INPUTS:
            nodes.append(sum(edge(e, nodes[src]) for e, src in inputs))
        return nodes[-1]

    def single(self, x: torch.Tensor, choice: Sequence[int]) -> torch.Tensor:
        """Op ``choice[e]`` on edge ``e`` (op positions in :data:`OP_NAMES`)."""
        return self._run(x, lambda e, h: self.edges[e].single(h, choice[e]))

    def soft(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Edge ``e`` mixes its ops with ``weights[e]`` (softmax of ``alpha[e]``)."""
        return self._run(x, lambda e, h: self.edges[e].soft(h, weights[e]))

    def copy_into(self, cell: Cell, choice: Sequence[int]) -> None:
        for edge, layer, index in zip(self.edges, cell.layers, choice):
            copy_weights(edge.ops[index], layer)


class NB201Supernet(OneShotSupernet):
    """NAS-Bench-201 one-shot / DARTS supernet (see the module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int = 10,
        channels: int = DEFAULT_CHANNELS,
        cells_per_stage: int = DEFAULT_CELLS_PER_STAGE,
        *,
        affine: bool = True,
        partial_channels: int = 1,
        alpha_seed: int = 0,
    ):
        check_network_options(channels, cells_per_stage)
        check_partial_channels(partial_channels, [channels], space.name)
        config = {
            "channels": channels,
            "cells_per_stage": cells_per_stage,
            "affine": bool(affine),
            "partial_channels": partial_channels,
            "alpha_seed": alpha_seed,
        }
        super().__init__(space, num_classes, config, {ALPHA: (len(EDGES), len(OP_NAMES))}, partial_channels, alpha_seed)
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.net = NB201Network(lambda c: NB201SearchCell(c, affine, partial_channels), num_classes, channels, cells_per_stage)
        self._choice: tuple[int, ...] = ()

    # ------------------------------------------------------------------ Supernet hooks
    def largest(self) -> Arch:
        return self.space.arch(("nor_conv_3x3",) * len(EDGES))

    def smallest(self) -> Arch:
        return self.space.arch(("skip_connect",) * len(EDGES))

    def build_kwargs(self) -> dict[str, int]:
        return {"channels": self.channels, "cells_per_stage": self.cells_per_stage}

    def _activate(self, arch: Arch) -> None:
        self._choice = tuple(OP_INDEX[op] for op in arch.genome)

    def _copy_weights(self, arch: Arch, net: nn.Module) -> None:
        choice = tuple(OP_INDEX[op] for op in arch.genome)
        for mine, theirs in zip(self.net.cells, net.cells):
            if isinstance(mine, NB201SearchCell):
                mine.copy_into(theirs, choice)
            else:
                copy_weights(mine, theirs)
        for name in ("stem", "lastact", "classifier"):
            copy_weights(getattr(self.net, name), getattr(net, name))

    # ------------------------------------------------------------------ forward
    def _run(self, x: torch.Tensor, cell: Callable[[NB201SearchCell, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``NB201Network.forward`` with the search cells run by ``cell``."""
        net = self.net
        x = net.stem(x)
        for block in net.cells:
            x = cell(block, x) if isinstance(block, NB201SearchCell) else block(x)
        return net.classifier(net.global_pooling(net.lastact(x)).flatten(1))

    def _forward_single(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, lambda block, h: block.single(h, self._choice))

    def _forward_soft(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.arch_params[ALPHA], dim=-1)
        return self._run(x, lambda block, h: block.soft(h, weights))

    @torch.no_grad()
    def derive(self) -> Arch:
        """The argmax op of every edge, ``none`` included (NAS-Bench-201's DARTS baseline), canonicalised."""
        best = self.arch_params[ALPHA].argmax(dim=-1).tolist()
        return self.space.arch(tuple(OP_NAMES[i] for i in best))
