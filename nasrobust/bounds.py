"""Certified bounds on a network's outputs: IBP, CROWN-IBP, CROWN-zono, CROWN; DSRNA's Jacobian estimate.

What is computed, exactly (every bound is differentiable w.r.t. the weights and anything else
the forward pass reads, e.g. a one-shot supernet's architecture parameters):

* **Input sets.** ``{x' : ||x' - x||_p <= eps} ∩ [0, 1]^d`` for ``p`` in ``linf``/``l2`` with a
  per-example ``eps`` (:class:`InputSet`). A final linear bound ``A x' + c`` is concretised
  exactly over the Linf set (the clipped box, Hölder on each side) and, for L2, as the larger
  of the dual-norm bound over the ball (``A x - eps ||A||_2``, clipping ignored: a superset)
  and the bound over the clipped bounding box (also a superset); both are sound. Intermediate
  interval bounds under L2 start from that clipped bounding box; the nodes that are still
  affine in the input (resize, normalisation, the first conv + BN, before any ReLU) are also
  bounded exactly over the ball, ``f(x) ± eps ||row||_2``, with the row norms of that fixed
  linear map summed over the input basis (``d / B`` forward passes of those few ops; inputs of
  up to ``l2_prefix_max_dim`` = 4096 elements, i.e. MNIST and CIFAR sizes).
* **IBP** (Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training
  Verifiably Robust Models", 2018): intervals pushed forward node by node -- affine ops as
  centre/radius (``W c + b``, ``|W| r``), monotone ops (ReLU, max-pool, pooling, bilinear
  resizing, reshapes) on the end points. The specification (margins ``f_y - f_k``) is folded
  into the last affine block as in Gowal et al. Sec. 3: the margins are back-substituted
  through the affine ops after the last ReLU / max-pool and concretised with those nodes'
  intervals (for a network without nonlinearity this makes IBP exact).
* **CROWN-IBP** (Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust
  Neural Networks", ICLR 2020): IBP intervals for every intermediate node, then one CROWN
  backward pass from the margins to the input.
* **CROWN-zono**: CROWN from the margins, with intermediate bounds from a zonotope (DeepZ, Singh et
  al., "Fast and Effective Robustness Certification", NeurIPS 2018) pushed forward through the
  graph: every node is ``c + sum_i G_i x'_i + sum_k G_k e_k`` -- exact on affine ops (the op applied
  to each generator), a new noise term ``e_k`` per unstable ReLU / non-dominated max-pool window --
  intersected with IBP at every ReLU / max-pool input. Why: on conv nets not trained for
  certification IBP's ``|W| r`` over-estimates the spread 4-15x at *every* convolution (sign
  cancellations are lost), 1e10 at the logits of a 20-conv bignas-small subnet; the zonotope keeps
  the correlations, and its bounds are within a few percent of full CROWN's on the test nets at
  ~1/3 of the cost. Cost: ``d`` (input elements) + #unstable ReLUs forward passes per example, so it
  runs ``zono_batch`` examples at a time; past ``zono_max_rows`` generators (default ``4 d``) the
  pass continues with IBP (sound, and such an eps fails anyway).
* **CROWN** (Zhang et al., "Efficient Neural Network Robustness Certification with General
  Activation Functions", NeurIPS 2018): every ReLU / max-pool input is bounded by its own CROWN
  backward pass (for ReLU inputs only the neurons IBP leaves unstable, in chunks), intersected
  with IBP, then the margins as above. Quadratic in the number of neurons: meant for small
  networks.

Intervals that two methods give for one node are intersected; where two nearly equal bounds
cross by float32 rounding, the hull is kept instead (:meth:`Interval.intersect`): an inverted
interval's negative radius would grow through every later layer (bounds 1e-3..1e9 above the true
margins at eps 0 and L2 eps 1e-8 before this). Bounds are sound up to float32 rounding of the
forward pass itself (a few ulps of the logits; ``tests/test_bound_soundness.py`` attacks them).

Certified radius (:meth:`BoundGraph.certified_radius`): IBP by bisection on ``log eps``; the linear
methods by a search that reads each bound as a linear function of the input, valid on the whole
set it was computed for, and starts from the first-order radius (a few bounds instead of ~15).

The backward pass propagates linear coefficients ``A`` (shape ``(S, B, *node)``, ``S`` bound
rows per example) from the output to the input. Affine ops of any kind use one generic rule:
``A_in = vjp(op)(A)`` (vmapped over ``S``) and a bias term ``<A, op(0)>``. ReLU uses CROWN's
relaxation: upper line through ``(l, 0)`` and ``(u, u)``, lower slope 1 if ``u >= -l`` else 0.
Max-pool over a window uses ``y >= x_j`` with ``j`` the element of largest lower bound, and
``y <= x_j`` when that element dominates (``l_j >= u_i`` for every other ``i``), else the
constant ``y <= max_i u_i``.

The network is traced once per input shape into a ``torch.fx`` graph of ATen ops (one
forward pass under a recording dispatch mode; ``make_fx`` does the same but costs ~10 forward
passes); parameters and buffers are graph inputs, read afresh from the module at every call
(or substituted with :meth:`BoundGraph.using`). Python control flow is resolved at trace time
(eval mode: BatchNorm uses its running statistics, dropout is off); build a new
:class:`BoundGraph` if the module changes structure. Supported ATen ops are listed in ``_RULES``; anything else on a path from the input
(SiLU, GELU, sigmoid gates, products of two input-dependent tensors as in attention or
squeeze-excite, batch statistics) makes the network "not boundable" with a message naming
the ops. Examples must be independent (no op mixes the batch dimension).

One-shot supernets: a soft mixed op ``sum_i softmax(alpha)_i * op_i(x)`` is supported as is --
``softmax(alpha)`` depends only on parameters, so each term is a multiplication by a constant
and the sum is an addition; bounds are differentiable w.r.t. ``alpha``. The supernet must
compute every candidate op deterministically in eval mode (no sampling inside ``forward``) and
every candidate must be a supported op; hard (argmax / Gumbel) selections are frozen at trace
time, so trace again after changing them.

DSRNA's Jacobian term (Hosseini, Yang & Xie, "DSRNA: Differentiable Search of Robust Neural
Architectures", CVPR 2021): the first-order *estimate* at ``x`` of the worst average change of the
``K`` logits under a perturbation of ``p``-norm ``eps``, ``-(eps / K) sum_k ||grad_x f_k(x)||_q``
with ``1/p + 1/q = 1`` (:func:`jacobian_estimate`; DSRNA calls it a bound, but the gradient is
only taken at ``x``). Here ``f_k`` are the logits of the model as called (for an
:class:`~nasrobust.models.ImageClassifier`, gradients w.r.t. the ``[0, 1]`` image).
"""

from __future__ import annotations

import logging
import math
import operator
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import Node
from torch.fx.node import map_aggregate, map_arg
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from nasrobust.errors import NasRobustError

log = logging.getLogger(__name__)
aten = torch.ops.aten

#: Largest coefficient tensor (elements) one CROWN pass for intermediate bounds may build.
_CROWN_ELEMENTS = 2**25
#: Perturbation norms and the exponent of their dual norm (``1/p + 1/q = 1``).
DUAL_NORM: dict[str, float] = {"linf": 1.0, "l2": 2.0}
NORMS = tuple(DUAL_NORM)
#: Bound methods, loosest and cheapest first (crown-zono and crown are close; crown-zono is cheaper on conv nets).
METHODS = ("ibp", "crown-ibp", "crown-zono", "crown")


class NotBoundableError(NasRobustError, ValueError):
    """A network with an operation the bound propagation does not handle."""


# --------------------------------------------------------------------------- value types
@dataclass(frozen=True)
class Interval:
    """Element-wise bounds ``lower <= z <= upper`` of one node, batch first."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        return (self.upper + self.lower) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2

    def lower_bound(self, A: torch.Tensor) -> torch.Tensor:
        """``min <A[s, b], z[b]>`` over the box, shape ``(S, B)``."""
        return _dot(A.clamp(min=0), self.lower) + _dot(A.clamp(max=0), self.upper)

    def intersect(self, other: "Interval") -> "Interval":
        """Both bounds at once; where they do not overlap, the hull of the two instead.

        Two sound bounds always overlap in exact arithmetic. In floating point two bounds that
        nearly coincide (CROWN and IBP on a stable neuron, the exact L2 prefix bound and the
        clipped box at a tiny ``eps``) can cross by a few ulps; taking ``max(lower) > min(upper)``
        there would give a negative radius that every later layer multiplies (IBP's ``|W| r``)
        into bounds far above the true values. Where they cross, neither is trusted to the last
        ulp, so the result covers both.
        """
        lower, upper = torch.maximum(self.lower, other.lower), torch.minimum(self.upper, other.upper)
        crossed = lower > upper
        if bool(crossed.any()):
            lower = torch.where(crossed, torch.minimum(self.lower, other.lower), lower)
            upper = torch.where(crossed, torch.maximum(self.upper, other.upper), upper)
        return Interval(lower, upper)


def _dot(A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``sum over features of A[s, b] * z[b]`` -> ``(S, B)``; ``z`` broadcasts over ``S``."""
    return (A * z).flatten(2).sum(-1)


@dataclass(frozen=True)
class InputSet:
    """``{x' : ||x' - x||_p <= eps_b} ∩ [domain]^d`` for every example ``b`` (``eps`` shape ``(B,)``)."""

    center: torch.Tensor
    eps: torch.Tensor
    norm: str = "linf"
    domain: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in DUAL_NORM:
            raise NasRobustError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.eps.shape != self.center.shape[:1]:
            raise NasRobustError(f"eps must have one value per example, got {tuple(self.eps.shape)} for {tuple(self.center.shape)}")

    def _eps(self) -> torch.Tensor:
        return self.eps.view(-1, *([1] * (self.center.dim() - 1)))

    def box(self) -> Interval:
        """The smallest box containing the set (exactly the set for Linf)."""
        e = self._eps()
        lo, hi = self.center - e, self.center + e
        if self.domain is not None:
            lo, hi = lo.clamp(*self.domain), hi.clamp(*self.domain)
        return Interval(lo, hi)

    def lower_bound(self, A: torch.Tensor) -> torch.Tensor:
        """``min <A[s, b], x'>`` over the set (a lower bound of it for L2 with clipping), ``(S, B)``."""
        bound = self.box().lower_bound(A)
        if self.norm == "l2":
            ball = _dot(A, self.center) - self.eps * A.flatten(2).norm(dim=-1)
            bound = torch.maximum(bound, ball)
        return bound


@dataclass(frozen=True)
class _Zonotope:
    """``center + sum_{i < d} gens[i] x'_i + sum_{k >= d} gens[k] e_k`` with ``x'`` in the input set
    and every ``e_k`` in ``[-1, 1]``: linear in the input (rows ``< d``, one per input element) plus
    the noise terms that unstable ReLUs add (rows ``>= d``). ``gens`` is ``(m, B, *node)``; rows are
    global, so a node that does not depend on a later noise term simply has fewer rows."""

    center: torch.Tensor
    gens: torch.Tensor
    d: int

    def padded(self, m: int) -> torch.Tensor:
        extra = m - self.gens.shape[0]
        return self.gens if extra == 0 else torch.cat([self.gens, self.gens.new_zeros((extra, *self.gens.shape[1:]))])

    def scaled(self, lam: torch.Tensor, mu: torch.Tensor) -> "_Zonotope":
        return _Zonotope(lam * self.center + mu, lam * self.gens, self.d)

    def with_noise(self, where: torch.Tensor, radius: torch.Tensor) -> "_Zonotope":
        """New noise terms ``radius * e`` at the positions ``where`` (one row per position; examples
        with fewer positions pad with zero rows)."""
        flat = where.flatten(1)
        count = int(flat.sum(1).max()) if flat.numel() else 0
        if count == 0:
            return self
        batch, n = flat.shape
        order = torch.sort(flat.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :count]  # (B, count)
        valid = torch.arange(count, device=flat.device)[None, :] < flat.sum(1, keepdim=True)
        values = radius.flatten(1).gather(1, order) * valid
        noise = self.gens.new_zeros((count, batch, n))
        rows = torch.arange(count, device=flat.device)[None, :].expand(batch, count)
        cols = torch.arange(batch, device=flat.device)[:, None].expand(batch, count)
        noise[rows, cols, order] = values
        return _Zonotope(self.center, torch.cat([self.gens, noise.view(count, *self.center.shape)]), self.d)

    def interval(self, xset: "InputSet") -> Interval:
        """Each element's range: the linear part concretised over the input set, plus the noise terms."""
        A = self.gens[: self.d].flatten(2)  # (d, B, n); fewer rows where the node is constant
        k = A.shape[0]
        box = xset.box()
        lo, hi = box.lower.flatten(1).T[:k, :, None], box.upper.flatten(1).T[:k, :, None]
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        lower = (pos * lo + neg * hi).sum(0)
        upper = (pos * hi + neg * lo).sum(0)
        if xset.norm == "l2":
            at_x = (A * xset.center.flatten(1).T[:k, :, None]).sum(0)
            r = xset.eps[:, None] * A.norm(dim=0)
            lower, upper = torch.maximum(lower, at_x - r), torch.minimum(upper, at_x + r)
        noise = self.gens[self.d:].abs().sum(0).flatten(1)
        c = self.center.flatten(1)
        return Interval((c + lower - noise).view_as(self.center), (c + upper + noise).view_as(self.center))


# --------------------------------------------------------------------------- op rules
def _pick(args: Any, attr: str) -> Any:
    return map_aggregate(args, lambda a: getattr(a, attr) if isinstance(a, Interval) else a)


def _abs(v: Any) -> Any:
    if isinstance(v, torch.Tensor) or isinstance(v, (int, float)):
        return abs(v)
    return v


def _fit(r: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(r, torch.Tensor):
        return torch.full_like(like, float(r))
    return r if r.shape == like.shape else torch.broadcast_to(r, like.shape)


def _from_center(c: torch.Tensor, r: torch.Tensor | float) -> Interval:
    r = _fit(r, c)
    return Interval(c - r, c + r)


def _ibp_monotone(op: Callable, args: tuple, kwargs: dict) -> Interval:
    """Non-decreasing in every perturbed argument: apply to the end points (exact on a box)."""
    return Interval(op(*_pick(args, "lower"), **kwargs), op(*_pick(args, "upper"), **kwargs))


def _ibp_multilinear(op: Callable, args: tuple, kwargs: dict) -> Interval:
    """``mul``/``div``/``mm``/``bmm`` with one perturbed factor: radius times the other's magnitude."""
    c = op(*_pick(args, "center"), **kwargs)
    r = op(*[_abs(a) for a in _pick(args, "radius")], **kwargs)
    return _from_center(c, r)


def _ibp_add(op: Callable, args: tuple, kwargs: dict) -> Interval:
    """``add``/``sub``: radii add, scaled by ``|alpha|`` for the second operand."""
    c = op(*_pick(args, "center"), **kwargs)
    r: Any = 0.0
    if isinstance(args[0], Interval):
        r = args[0].radius
    if isinstance(args[1], Interval):
        r = r + abs(kwargs.get("alpha", 1)) * args[1].radius
    return _from_center(c, r)


def _ibp_neg(op: Callable, args: tuple, kwargs: dict) -> Interval:
    return Interval(-args[0].upper, -args[0].lower)


def _ibp_conv(op: Callable, args: tuple, kwargs: dict) -> Interval:
    x, w, b, *rest = args
    return _from_center(op(x.center, w, b, *rest, **kwargs), op(x.radius, w.abs(), None, *rest, **kwargs))


def _ibp_addmm(op: Callable, args: tuple, kwargs: dict) -> Interval:
    c = op(*_pick(args, "center"), **kwargs)
    _, m1, m2 = _pick(args[:3], "radius")
    return _from_center(c, abs(kwargs.get("alpha", 1)) * torch.mm(_abs(m1), _abs(m2)))


def _ibp_batch_norm(eps_index: int) -> Callable[[Callable, tuple, dict], Interval]:
    """Eval-mode batch norm is ``x * w / sqrt(var + eps) + const`` per channel."""

    def rule(op: Callable, args: tuple, kwargs: dict) -> Interval:
        x, w, var, eps = args[0], args[1], args[4], args[eps_index]
        c = op(x.center, *args[1:], **kwargs)
        scale = torch.rsqrt(var + eps)
        if w is not None:
            scale = scale * w.abs()
        return _from_center(c, x.radius * scale.view(1, -1, *([1] * (x.radius.dim() - 2))))

    return rule


def _bn_in_eval(args: tuple, kwargs: dict) -> str | None:
    if args[5]:
        return "batch norm with batch statistics (training mode) is not a fixed affine map"
    if args[3] is None or args[4] is None:
        return "batch norm without running statistics normalises by batch statistics"
    return None


@dataclass(frozen=True)
class _Rule:
    """How one ATen op is bounded.

    ``kind`` is ``affine`` (generic vjp backward), ``relu`` or ``maxpool``; ``linear_args`` are
    the positional arguments that may depend on the input, ``joint`` whether several may at once
    (``add``, ``cat``) rather than one (``mul``, ``mm``: a product of two would not be linear);
    ``first_output`` marks ops returning a tuple whose element 0 is the value (batch norm,
    max-pool with indices).
    """

    kind: str
    ibp: Callable[[Callable, tuple, dict], Interval]
    linear_args: tuple[int, ...] = (0,)
    joint: bool = False
    first_output: bool = False
    check: Callable[[tuple, dict], str | None] | None = None


_MONOTONE_LINEAR = (
    # reshapes and selections
    "view", "_unsafe_view", "reshape", "alias", "clone", "expand", "slice", "select", "permute", "t",
    "transpose", "unsqueeze", "squeeze", "flatten", "repeat", "narrow", "detach", "index_select", "flip",
    "roll", "pixel_shuffle", "pixel_unshuffle", "constant_pad_nd",
    # averages and resizing with non-negative weights
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d", "mean", "sum",
    "upsample_bilinear2d", "_upsample_bilinear2d_aa", "upsample_nearest2d", "upsample_linear1d",
)


def _rules() -> dict[Any, _Rule]:
    table: dict[Any, _Rule] = {getattr(aten, name): _Rule("affine", _ibp_monotone) for name in _MONOTONE_LINEAR}
    table.update({
        aten.cat: _Rule("affine", _ibp_monotone, joint=True),
        aten.stack: _Rule("affine", _ibp_monotone, joint=True),
        aten.add: _Rule("affine", _ibp_add, linear_args=(0, 1), joint=True),
        aten.sub: _Rule("affine", _ibp_add, linear_args=(0, 1), joint=True),
        aten.neg: _Rule("affine", _ibp_neg),
        aten.mul: _Rule("affine", _ibp_multilinear, linear_args=(0, 1)),
        aten.div: _Rule("affine", _ibp_multilinear),
        aten.mm: _Rule("affine", _ibp_multilinear, linear_args=(0, 1)),
        aten.bmm: _Rule("affine", _ibp_multilinear, linear_args=(0, 1)),
        aten.addmm: _Rule("affine", _ibp_addmm, linear_args=(1, 2)),
        aten.convolution: _Rule("affine", _ibp_conv),
        aten.native_batch_norm: _Rule("affine", _ibp_batch_norm(7), first_output=True, check=_bn_in_eval),
        aten._native_batch_norm_legit_no_training: _Rule("affine", _ibp_batch_norm(6), first_output=True),
        aten.relu: _Rule("relu", _ibp_monotone),
        aten.max_pool2d_with_indices: _Rule("maxpool", _ibp_monotone, first_output=True),
        aten.max_pool2d: _Rule("maxpool", _ibp_monotone),
    })
    return table


_RULES = _rules()
#: Ops whose output depends on a perturbed input only through its shape.
_SHAPE_ONLY = {aten.zeros_like, aten.ones_like, aten.empty_like, aten.full_like, aten.new_zeros, aten.new_ones,
               aten.new_empty, aten.new_full, aten.sym_size, aten.sym_numel, aten.sym_stride}


def _is_zero_scale(node: Node) -> bool:
    """``x * 0`` (the NAS-Bench-201 / DARTS ``none`` op): contributes nothing to a bound."""
    if getattr(node.target, "overloadpacket", None) is not aten.mul:
        return False
    return any(isinstance(a, (int, float)) and a == 0 for a in node.args)


# --------------------------------------------------------------------------- tracing
class _Recorder(TorchDispatchMode):
    """Records every ATen op of one forward pass into an ``fx.Graph`` (a light ``make_fx``).

    Tensors are identified by ``id`` while alive (a finaliser forgets an id when its tensor is
    freed, so ids are never confused and nothing is kept alive); parameters, buffers and the
    input are placeholders, any other tensor met as an argument becomes a captured constant.
    In-place ops are recorded as their out-of-place versions. Ops whose result is a Python
    value (``.item()``, comparisons in ``if``) are marked: when they read the input, the
    forward pass branched on data, which a bound cannot follow.
    """

    def __init__(self, graph: torch.fx.Graph, env: dict[int, Node], consts: dict[str, torch.Tensor]):
        super().__init__()
        self.graph, self.env, self.consts = graph, env, consts
        self.finalizers: list[weakref.finalize] = []

    def bind(self, t: torch.Tensor, node: Node, track: bool = True) -> None:
        self.env[id(t)] = node
        node.meta["shape"] = tuple(t.shape)
        node.meta["dtype"] = t.dtype
        if track:
            self.finalizers.append(weakref.finalize(t, self.env.pop, id(t), None))

    def close(self) -> None:
        """Drop the finalisers of tensors that outlive the trace (they would keep the graph alive)."""
        for f in self.finalizers:
            f.detach()
        self.finalizers.clear()

    def _ref(self, t: torch.Tensor) -> Node:
        node = self.env.get(id(t))
        if node is None:
            name = f"_const{len(self.consts)}"
            self.consts[name] = t
            node = self.graph.get_attr(name)
            self.bind(t, node)
        return node

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ref = lambda v: self._ref(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
        node = self.graph.call_function(_out_of_place(func), tree_map(ref, args), tree_map(ref, kwargs))
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
        elif isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
            node.meta["shape"] = tuple(out[0].shape)  # the value a first-output rule bounds
            for i, o in enumerate(out):
                self.bind(o, self.graph.call_function(operator.getitem, (node, i)))
        else:
            node.meta["escape"] = True
        return out


def _out_of_place(func: Any) -> Any:
    """``aten.relu_`` -> ``aten.relu`` (same overload); anything else unchanged."""
    packet = getattr(func, "overloadpacket", None)
    name = getattr(packet, "__name__", "")
    if name.endswith("_") and not name.startswith("_") and hasattr(aten, name[:-1]):
        return getattr(getattr(aten, name[:-1]), func._overloadname, func)
    return func


def _trace(model: nn.Module, example: torch.Tensor) -> tuple[torch.fx.Graph, dict[str, torch.Tensor], list[str], list[str]]:
    """The ATen graph of ``model.eval()(example)``: placeholders params..., buffers..., input."""
    graph = torch.fx.Graph()
    env: dict[int, Node] = {}
    consts: dict[str, torch.Tensor] = {}
    params, buffers = list(model.named_parameters()), list(model.named_buffers())
    recorder = _Recorder(graph, env, consts)
    for name, t in params + buffers:  # alive throughout: no finaliser needed
        recorder.bind(t, graph.placeholder(name.replace(".", "_")), track=False)
    x = example.detach().clone()
    recorder.bind(x, graph.placeholder("input"), track=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recorder:
            out = model(x)
    finally:
        model.train(was_training)
        recorder.close()
    if not isinstance(out, torch.Tensor) or id(out) not in env:
        raise NasRobustError("the model must return one tensor of logits computed from its input")
    graph.output(env[id(out)])
    return graph, consts, [n for n, _ in params], [n for n, _ in buffers]


@dataclass
class _State:
    """Values of one bound computation: constants, intervals, cached vjps."""

    env: dict[Node, Any]
    ivals: dict[Node, Interval] = field(default_factory=dict)
    vjps: dict[Node, tuple[torch.Tensor | None, Callable]] = field(default_factory=dict)


class BoundGraph:
    """A traced network with interval and linear bound propagation (see the module docstring).

    ``BoundGraph(model, example)`` traces ``model`` for inputs shaped like ``example`` (batch
    size included); the parameters are read from ``model`` at every call, so one graph serves a
    whole training run. :attr:`unsupported` lists why the network cannot be bounded (empty
    when it can).
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, *, crown_chunk: int = 512, l2_prefix_max_dim: int = 4096,
                 zono_batch: int = 4, zono_max_rows: int | None = None, zono_chunk: int | None = None):
        self.model = model
        self.input_shape = tuple(example.shape)
        self.crown_chunk = int(crown_chunk)
        self.zono_batch = max(1, int(zono_batch))
        self.zono_max_rows = zono_max_rows
        self.zono_chunk = zono_chunk
        self._example = example.detach()
        self._subgraphs: dict[int, BoundGraph] = {}
        self.l2_prefix_max_dim = int(l2_prefix_max_dim)
        self.unsupported: list[str] = []
        self._overrides: dict[str, torch.Tensor] = {}
        try:
            graph, self._consts, self._param_names, self._buffer_names = _trace(model, example)
        except Exception as exc:  # a forward pass that fails on this input, or returns no tensor
            self.unsupported.append(f"the network could not be traced: {type(exc).__name__}: {exc}")
            return
        self._compile(graph)

    # ------------------------------------------------------------------ compilation
    def _compile(self, graph: torch.fx.Graph) -> None:
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        n_p = len(self._param_names)
        self._param_nodes = placeholders[:n_p]
        self._buffer_nodes = placeholders[n_p:-1]
        self._input = placeholders[-1]
        (out,) = [n for n in graph.nodes if n.op == "output"]
        self._output: Node = out.args[0]

        perturbed = {self._input}
        for node in graph.nodes:
            if node.op == "call_function" and getattr(node.target, "overloadpacket", None) not in _SHAPE_ONLY:
                if any(n in perturbed for n in node.all_input_nodes):
                    perturbed.add(node)
        problems: dict[str, None] = {}
        if any(n.meta.get("escape") for n in perturbed):
            problems["the forward pass reads input-dependent values in Python (data-dependent control flow)"] = None

        live: set[Node] = set()
        stack = [self._output]
        while stack:
            n = stack.pop()
            if n not in live:
                live.add(n)
                stack.extend(n.all_input_nodes)
        self._order = [n for n in graph.nodes if n in live and n.op != "output"]

        self._kind: dict[Node, str] = {}
        self._rule: dict[Node, _Rule] = {}
        self._parents: dict[Node, list[Node]] = {}
        for node in self._order:
            if node.op == "placeholder":
                self._kind[node] = "input" if node is self._input else "param"
                continue
            if node not in perturbed:
                self._kind[node] = "const"
                continue
            self._parents[node] = [n for n in node.all_input_nodes if n in perturbed]
            if node.target is operator.getitem:
                parent, index = node.args
                prule = self._rule.get(parent)
                if prule is not None and prule.first_output and index == 0:
                    self._kind[node] = "identity"
                else:
                    problems[f"output {index} of {parent.target} (e.g. max-pool indices) is used"] = None
                continue
            packet = getattr(node.target, "overloadpacket", node.target)
            rule = _RULES.get(packet)
            if rule is None:
                problems[f"unsupported op {packet}"] = None
                continue
            problem = self._check_args(node, rule, perturbed)
            if problem:
                problems[f"{packet}: {problem}"] = None
                continue
            self._rule[node] = rule
            self._kind[node] = "zero" if _is_zero_scale(node) else rule.kind
        self.unsupported.extend(problems)
        if self._output not in perturbed:
            self.unsupported.append("the output does not depend on the input")
        if self.unsupported:
            return

        self._shape = {n: n.meta["shape"] for n in self._order if n in perturbed}
        batch = self.input_shape[0]
        for n, shape in self._shape.items():
            if not shape or shape[0] != batch:
                self.unsupported.append(f"{n.target} mixes or drops the batch dimension (shape {shape}); examples must be independent")
                return
        self._preact = {n.args[0] for n in self._order if self._kind.get(n) in ("relu", "maxpool")}
        self._relu_only = {
            p for p in self._preact
            if all(self._kind.get(u) == "relu" for u in p.users if u in self._kind)
        }
        self._keep = self._preact | {n for n in self._order if self._kind.get(n) in ("relu", "maxpool", "input")}
        # the affine prefix: nodes that are affine functions of the input (no ReLU / max-pool before)
        prefix: set[Node] = set()
        for n in self._order:
            if self._kind.get(n) in ("affine", "identity", "zero"):
                if all(p is self._input or p in prefix for p in self._parents[n]):
                    prefix.add(n)
        self._prefix = [n for n in self._order if n in prefix]
        self._frontier = [n for n in self._prefix if any(u not in prefix for u in n.users if u in self._kind)]
        self._row_norm_cache: tuple[Any, dict[Node, torch.Tensor]] | None = None
        position = {n: i for i, n in enumerate(self._order)}
        self._last_use = {}
        for n in self._order:
            for p in n.all_input_nodes:
                self._last_use[p] = max(self._last_use.get(p, -1), position[n])
        self._position = position

    def _check_args(self, node: Node, rule: _Rule, perturbed: set[Node]) -> str | None:
        def depends(a: Any) -> bool:
            found = []
            map_arg(a, lambda n: found.append(n in perturbed))
            return any(found)

        where = [i for i, a in enumerate(node.args) if depends(a)]
        if any(depends(v) for v in node.kwargs.values()):
            return "input-dependent keyword argument"
        bad = [i for i in where if i not in rule.linear_args]
        if bad:
            return f"not linear in argument {bad[0]} (it depends on the input)"
        if len(where) > 1 and not rule.joint:  # x * x included
            return "product of two input-dependent tensors (not linear)"
        return rule.check(node.args, node.kwargs) if rule.check else None

    def _require(self) -> None:
        if self.unsupported:
            raise NotBoundableError("cannot bound this network: " + "; ".join(self.unsupported))

    # ------------------------------------------------------------------ evaluation
    @contextmanager
    def using(self, tensors: Mapping[str, torch.Tensor]) -> Iterator["BoundGraph"]:
        """Bound with these parameter / buffer values instead of the module's (like ``functional_call``)."""
        unknown = set(tensors) - set(self._param_names) - set(self._buffer_names)
        if unknown:
            raise NasRobustError(f"no parameter or buffer named {sorted(unknown)} in the traced module")
        saved, self._overrides = self._overrides, {**self._overrides, **tensors}
        try:
            yield self
        finally:
            self._overrides = saved

    def _constants(self) -> dict[Node, Any]:
        params = dict(self.model.named_parameters())
        buffers = dict(self.model.named_buffers())
        if list(params) != self._param_names or list(buffers) != self._buffer_names:
            raise NasRobustError("the module's parameters changed since it was traced; build a new BoundGraph")
        params.update({k: v for k, v in self._overrides.items() if k in params})
        buffers.update({k: v for k, v in self._overrides.items() if k in buffers})
        env: dict[Node, Any] = {n: params[k] for n, k in zip(self._param_nodes, self._param_names)}
        env.update({n: buffers[k] for n, k in zip(self._buffer_nodes, self._buffer_names)})
        return env

    def _call(self, node: Node, lookup: Callable[[Node], Any]) -> Any:
        if node.op == "get_attr":
            return self._consts[node.target]
        args = map_arg(node.args, lookup)
        kwargs = map_arg(node.kwargs, lookup)
        return node.target(*args, **kwargs)

    def _evaluate(self, x: torch.Tensor) -> dict[Node, Any]:
        env = self._constants()
        env[self._input] = x
        for node in self._order:
            if node.op != "placeholder":
                env[node] = self._call(node, env.__getitem__)
        return env

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The traced network on concrete inputs (equals ``model.eval()(x)``)."""
        self._require()
        return self._evaluate(x)[self._output]

    def _op(self, node: Node) -> Callable:
        target = node.target
        if self._rule[node].first_output:
            return lambda *a, **k: target(*a, **k)[0]
        return target

    def _prefix_values(self, env: dict[Node, Any], z: torch.Tensor) -> dict[Node, Any]:
        vals: dict[Node, Any] = {self._input: z}
        for n in self._prefix:
            vals[n] = self._call(n, lambda m: vals[m] if m in vals else env[m])
        return vals

    def _row_norms(self, env: dict[Node, Any], like: torch.Tensor) -> dict[Node, torch.Tensor]:
        """``||row_j||_2`` of the linear map input -> node for the affine prefix's frontier nodes.

        The map is the same for every example, so its squared row norms are summed over the
        input basis, ``B`` basis vectors per pass (one per batch slot): ``d / B`` forward passes
        of the prefix. Cached while the parameters are unchanged (outside autograd).
        """
        key = tuple((id(env[n]), env[n]._version) for n in self._param_nodes + self._buffer_nodes)
        if self._row_norm_cache is not None and self._row_norm_cache[0] == key and not torch.is_grad_enabled():
            return self._row_norm_cache[1]
        batch, dim = like.shape[0], like[0].numel()
        zero = torch.zeros_like(like)
        base = self._prefix_values(env, zero)
        squares: dict[Node, Any] = {n: 0.0 for n in self._frontier}
        slots = torch.arange(batch, device=like.device)
        for start in range(0, dim, batch):
            k = min(batch, dim - start)
            z = zero.flatten(1).clone()
            z[slots[:k], start + slots[:k]] = 1.0
            vals = self._prefix_values(env, z.view_as(like))
            for n in self._frontier:
                squares[n] = squares[n] + (_first(vals[n]) - _first(base[n])).square().sum(0, keepdim=True)
        norms = {n: torch.sqrt(v) for n, v in squares.items()}
        if not torch.is_grad_enabled():
            self._row_norm_cache = (key, norms)
        return norms

    def _propagate(self, xset: InputSet, method: str) -> _State:
        """Intervals of every node (IBP; refined by CROWN at ReLU/max-pool inputs for ``crown``).

        Under L2 the affine prefix's frontier nodes are also bounded exactly over the ball,
        ``f(x) ± eps ||row||_2`` (when the input has at most ``l2_prefix_max_dim`` elements).
        """
        state = _State(self._constants())
        env, ivals = state.env, state.ivals
        ref = xset.center
        for node in self._order:  # constants first (shape-only reads of perturbed nodes see zeros)
            if self._kind[node] == "const":
                env[node] = self._call(node, lambda n: env[n] if n in env else ref.new_zeros(self._shape[n]))
        exact: dict[Node, Interval] = {}
        if xset.norm == "l2" and self._frontier and xset.center[0].numel() <= self.l2_prefix_max_dim:
            norms = self._row_norms(env, xset.center)
            at_x = self._prefix_values(env, xset.center)
            eps = xset.eps.view(-1, *([1] * (xset.center.dim() - 1)))
            for n, rn in norms.items():
                e = eps.view(-1, *([1] * (rn.dim() - 1)))
                exact[n] = _from_center(_first(at_x[n]), e * rn)
        zonos: dict[Node, _Zonotope] | None = {} if method == "crown-zono" else None
        for i, node in enumerate(self._order):
            forward = self._FORWARD.get(self._kind[node])
            if forward is None:  # parameters and constants
                continue
            ivals[node] = forward(self, state, node, xset)
            if node in exact:
                ivals[node] = ivals[node].intersect(exact[node])
            if zonos is not None:
                zonos[node] = self._ZONO[self._kind[node]](self, state, node, xset, zonos)
                if node in self._preact:
                    ivals[node] = ivals[node].intersect(zonos[node].interval(xset))
                if zonos[node].gens.shape[0] > (self.zono_max_rows or 4 * zonos[node].d):  # hopeless eps: IBP from here on
                    log.debug("crown-zono: %d noise terms at %s, continuing with IBP", zonos[node].gens.shape[0], node)
                    zonos = None
            if method == "crown" and node in self._preact:
                ivals[node] = self._crown_interval(state, node, xset)
            for p in node.all_input_nodes:
                if self._last_use.get(p) == i:
                    if p in ivals and p not in self._keep:
                        del ivals[p]
                    if zonos is not None:
                        zonos.pop(p, None)
        return state

    # forward (interval) rule per node kind
    def _ibp_input(self, state: _State, node: Node, xset: InputSet) -> Interval:
        return xset.box()

    def _ibp_identity(self, state: _State, node: Node, xset: InputSet) -> Interval:
        return state.ivals[node.args[0]]

    def _ibp_zero(self, state: _State, node: Node, xset: InputSet) -> Interval:
        z = xset.center.new_zeros(self._shape[node])
        return Interval(z, z)

    def _ibp_op(self, state: _State, node: Node, xset: InputSet) -> Interval:
        env, ivals = state.env, state.ivals
        args = map_arg(node.args, lambda n: ivals[n] if n in ivals else env[n])
        return self._rule[node].ibp(self._op(node), args, map_arg(node.kwargs, lambda n: env[n]))

    _FORWARD: dict[str, Callable[..., Interval]] = {
        "input": _ibp_input, "identity": _ibp_identity, "zero": _ibp_zero,
        "affine": _ibp_op, "relu": _ibp_op, "maxpool": _ibp_op,
    }

    # ------------------------------------------------------------------ zonotopes (crown-zono)
    def _zono_input(self, state: _State, node: Node, xset: InputSet, zonos: dict) -> "_Zonotope":
        x = xset.center
        d = x[0].numel()
        eye = torch.eye(d, dtype=x.dtype, device=x.device).view(d, 1, *x.shape[1:])
        return _Zonotope(torch.zeros_like(x), eye.expand(d, *x.shape), d)

    def _zono_identity(self, state: _State, node: Node, xset: InputSet, zonos: dict) -> "_Zonotope":
        return zonos[node.args[0]]

    def _zono_zero(self, state: _State, node: Node, xset: InputSet, zonos: dict) -> "_Zonotope":
        z = xset.center.new_zeros(self._shape[node])
        return _Zonotope(z, z.new_zeros((0, *z.shape)), xset.center[0].numel())

    def _zono_affine(self, state: _State, node: Node, xset: InputSet, zonos: dict) -> "_Zonotope":
        """Exact: the op applied to the centre (with its bias) and to every generator (without)."""
        bias, _ = self._affine_vjp(state, node)
        parents = self._parents[node]
        op, env = self._op(node), state.env
        ins = [zonos[p] for p in parents]
        m = max(z.gens.shape[0] for z in ins)

        def f(*zs: torch.Tensor) -> torch.Tensor:
            sub = dict(zip(parents, zs))
            args = map_arg(node.args, lambda n: sub[n] if n in sub else env[n])
            return op(*args, **map_arg(node.kwargs, lambda n: env[n]))

        center = f(*[z.center for z in ins])
        if m == 0:  # only constant inputs so far (e.g. a sum of NB201 ``none`` ops)
            return _Zonotope(center, center.new_zeros((0, *center.shape)), ins[0].d)
        gens = torch.vmap(f, chunk_size=self.zono_chunk)(*[z.padded(m) for z in ins])
        if bias is not None:
            gens = gens - bias
        return _Zonotope(center, gens, ins[0].d)

    def _zono_relu(self, state: _State, node: Node, xset: InputSet, zonos: dict) -> "_Zonotope":
        """DeepZ's ReLU (Singh et al., NeurIPS 2018): on an unstable neuron ``lam z + mu ± mu`` with
        ``lam = u / (u - l)``, ``mu = -lam l / 2``; the ``± mu`` is a new generator of its own."""
        parent = node.args[0]
        z, pre = zonos[parent], state.ivals[parent]
        l, u = pre.lower, pre.upper
        unstable = (l < 0) & (u > 0)
        width = torch.where(unstable, u - l, torch.ones_like(u))
        lam = torch.where(unstable, u / width, (l >= 0).to(u.dtype))
        mu = torch.where(unstable, -lam * l / 2, torch.zeros_like(u))
        return z.scaled(lam, mu).with_noise(unstable, mu)

    def _zono_maxpool(self, state: _State, node: Node, xset: InputSet, zonos: dict) -> "_Zonotope":
        """A window whose element of largest lower bound dominates passes that element through;
        any other output becomes the interval ``[max l, max u]`` as a new generator."""
        parent = node.args[0]
        z, pre = zonos[parent], state.ivals[parent]
        geometry = _pool_geometry(node, self._shape[parent], self._shape[node])
        out_shape = self._shape[node]
        lw = _windows(pre.lower, geometry, float("-inf"))
        uw = _windows(pre.upper, geometry, float("-inf"))
        j = lw.argmax(dim=2, keepdim=True)
        lj = lw.gather(2, j)
        dominant = (lj >= uw.scatter(2, j, float("-inf")).amax(dim=2, keepdim=True)).view(out_shape)
        lo, hi = lj.view(out_shape), uw.amax(dim=2).view(out_shape)

        def select(v: torch.Tensor) -> torch.Tensor:
            return _windows(v, geometry, 0.0).gather(2, j).view(out_shape)

        keep = dominant.to(lo.dtype)
        center = select(z.center) * keep + (lo + hi) / 2 * (1 - keep)
        gens = torch.vmap(select, chunk_size=self.zono_chunk)(z.gens) * keep
        return _Zonotope(center, gens, z.d).with_noise(~dominant, (hi - lo) / 2)

    _ZONO: dict[str, Callable[..., "_Zonotope"]] = {
        "input": _zono_input, "identity": _zono_identity, "zero": _zono_zero,
        "affine": _zono_affine, "relu": _zono_relu, "maxpool": _zono_maxpool,
    }

    # ------------------------------------------------------------------ backward (linear) pass
    def _backward(self, state: _State, start: Node, A: torch.Tensor, xset: InputSet, stop_at_nonlinear: bool,
                  inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Lower bound of ``<A[s, b], node_start[b]>`` over the input set, shape ``(S, B)``.

        Nodes are visited in reverse topological order, so a node's coefficients are complete
        (summed over all its consumers) when it is reached. With ``stop_at_nonlinear`` the pass
        ends at ReLU / max-pool outputs, concretised with their intervals (IBP's folded spec).
        ``inputs``, when given, receives the coefficients reaching the input (the linear bound
        ``<A_in, x'> + c`` before it is concretised over the set).
        """
        acc: dict[Node, torch.Tensor] = {start: A}
        total = torch.zeros(A.shape[:2], dtype=A.dtype, device=A.device)
        for node in reversed(self._order[: self._position[start] + 1]):
            a = acc.pop(node, None)
            if a is None:
                continue
            kind = self._kind[node]
            if stop_at_nonlinear and kind in ("relu", "maxpool"):
                total = total + state.ivals[node].lower_bound(a)
                continue
            if kind == "input" and inputs is not None:
                inputs.append(a)
            bias = self._BACKWARD[kind](self, state, node, a, acc, xset)
            if bias is not None:
                total = total + bias
        return total

    def _back_input(self, state: _State, node: Node, a: torch.Tensor, acc: dict, xset: InputSet) -> torch.Tensor:
        return xset.lower_bound(a)

    def _back_identity(self, state: _State, node: Node, a: torch.Tensor, acc: dict, xset: InputSet) -> None:
        _accumulate(acc, node.args[0], a)

    def _back_zero(self, state: _State, node: Node, a: torch.Tensor, acc: dict, xset: InputSet) -> None:
        return None

    def _back_affine(self, state: _State, node: Node, a: torch.Tensor, acc: dict, xset: InputSet) -> torch.Tensor | None:
        bias, vjp_fn = self._affine_vjp(state, node)
        for parent, g in zip(self._parents[node], torch.func.vmap(vjp_fn)(a)):
            _accumulate(acc, parent, g)
        return None if bias is None else _dot(a, bias)

    def _affine_vjp(self, state: _State, node: Node) -> tuple[torch.Tensor | None, Callable]:
        """``(op(0) or None when it is 0, vjp)`` of an affine node, once per bound computation."""
        cached = state.vjps.get(node)
        if cached is not None:
            return cached
        parents = self._parents[node]
        op = self._op(node)
        env = state.env

        def f(*zs: torch.Tensor) -> torch.Tensor:
            sub = dict(zip(parents, zs))
            args = map_arg(node.args, lambda n: sub[n] if n in sub else env[n])
            return op(*args, **map_arg(node.kwargs, lambda n: env[n]))

        ref = state.ivals[self._input].lower
        zeros = [torch.zeros(self._shape[p], dtype=ref.dtype, device=ref.device) for p in parents]
        bias, vjp_fn = torch.func.vjp(f, *zeros)
        state.vjps[node] = (bias if bool(bias.detach().any()) else None, vjp_fn)
        return state.vjps[node]

    def _back_relu(self, state: _State, node: Node, a: torch.Tensor, acc: dict, xset: InputSet) -> torch.Tensor:
        """CROWN's ReLU relaxation: positive coefficients take the lower line (slope 0 or 1,
        whichever is closer: 1 iff ``u >= -l``), negative ones the chord through ``(l, 0), (u, u)``."""
        parent = node.args[0]
        pre = state.ivals[parent]
        l, u = pre.lower, pre.upper
        active = l >= 0
        unstable = (l < 0) & (u > 0)
        width = torch.where(unstable, u - l, torch.ones_like(u))
        up_slope = torch.where(unstable, u / width, active.to(u.dtype))
        up_bias = torch.where(unstable, -l * up_slope, torch.zeros_like(u))
        low_slope = torch.where(unstable, (u >= -l).to(u.dtype), active.to(u.dtype))
        a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
        _accumulate(acc, parent, a_pos * low_slope + a_neg * up_slope)
        return _dot(a_neg, up_bias)

    def _back_maxpool(self, state: _State, node: Node, a: torch.Tensor, acc: dict, xset: InputSet) -> torch.Tensor:
        """``y >= x_j`` (``j``: largest lower bound in the window) for positive coefficients;
        ``y <= x_j`` if ``x_j`` dominates the window, else ``y <= max u``, for negative ones."""
        parent = node.args[0]
        pre = state.ivals[parent]
        geometry = _pool_geometry(node, self._shape[parent], self._shape[node])
        lw = _windows(pre.lower, geometry, float("-inf"))
        uw = _windows(pre.upper, geometry, float("-inf"))
        j = lw.argmax(dim=2, keepdim=True)
        lj = lw.gather(2, j)
        others = uw.scatter(2, j, float("-inf")).amax(dim=2, keepdim=True)
        out_shape = self._shape[node]
        dominant = (lj >= others).view(out_shape).to(a.dtype)
        top = uw.amax(dim=2).view(out_shape)
        a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)

        def select(z: torch.Tensor) -> torch.Tensor:
            return _windows(z, geometry, 0.0).gather(2, j).view(out_shape)

        _, vjp_fn = torch.func.vjp(select, torch.zeros_like(pre.lower))
        (coef,) = torch.func.vmap(vjp_fn)(a_pos + a_neg * dominant)
        _accumulate(acc, parent, coef)
        return _dot(a_neg * (1 - dominant), top)

    _BACKWARD: dict[str, Callable[..., torch.Tensor | None]] = {
        "input": _back_input, "identity": _back_identity, "zero": _back_zero,
        "affine": _back_affine, "relu": _back_relu, "maxpool": _back_maxpool,
    }

    def _crown_interval(self, state: _State, node: Node, xset: InputSet) -> Interval:
        """CROWN bounds of one node's neurons (unstable ones only when it feeds ReLUs)."""
        iv = state.ivals[node]
        lower, upper = iv.lower.flatten(1).clone(), iv.upper.flatten(1).clone()
        if node in self._relu_only:
            mask = ((iv.lower < 0) & (iv.upper > 0)).flatten(1).any(0)
        else:
            mask = torch.ones(lower.shape[1], dtype=torch.bool, device=lower.device)
        index = mask.nonzero().squeeze(1)
        batch, n = lower.shape
        per_pass = max(1, min(self.crown_chunk, _CROWN_ELEMENTS // (2 * batch * n)))
        for chunk in index.split(per_pass) if len(index) else ():
            s = len(chunk)
            eye = torch.zeros(s, batch, n, dtype=lower.dtype, device=lower.device)
            eye[torch.arange(s, device=lower.device), :, chunk] = 1.0
            A = torch.cat([eye, -eye]).view(2 * s, *iv.lower.shape)
            bound = self._backward(state, node, A, xset, stop_at_nonlinear=False)
            lower[:, chunk] = bound[:s].T
            upper[:, chunk] = -bound[s:].T
        return iv.intersect(Interval(lower.view_as(iv.lower), upper.view_as(iv.upper)))

    # ------------------------------------------------------------------ public bounds
    def _input_set(self, x: torch.Tensor, eps: float | torch.Tensor, norm: str, domain: tuple[float, float] | None) -> InputSet:
        if tuple(x.shape) != self.input_shape:
            raise NasRobustError(f"this BoundGraph was traced for inputs {self.input_shape}, got {tuple(x.shape)}")
        eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        eps_t = eps_t.expand(x.shape[0]) if eps_t.dim() == 0 else eps_t
        return InputSet(x, eps_t, norm, domain)

    def _sub(self, k: int) -> "BoundGraph":
        """The same network traced for the first ``k`` examples (crown-zono bounds a few at a time)."""
        if k == self.input_shape[0]:
            return self
        if k not in self._subgraphs:
            self._subgraphs[k] = BoundGraph(self.model, self._example[:k], crown_chunk=self.crown_chunk,
                                            l2_prefix_max_dim=self.l2_prefix_max_dim, zono_batch=self.zono_batch,
                                            zono_max_rows=self.zono_max_rows, zono_chunk=self.zono_chunk)
        sub = self._subgraphs[k]
        sub._overrides = self._overrides
        return sub

    def _chunked(self, method: str, x: torch.Tensor) -> list[slice] | None:
        """Example slices for a zonotope pass (its generators hold ``d`` copies of every layer), else None."""
        if method != "crown-zono" or x.shape[0] <= self.zono_batch:
            return None
        return [slice(i, i + self.zono_batch) for i in range(0, x.shape[0], self.zono_batch)]

    def linear_lower(
        self,
        x: torch.Tensor,
        C: torch.Tensor,
        eps: float | torch.Tensor,
        norm: str = "linf",
        method: str = "crown-ibp",
        domain: tuple[float, float] | None = (0.0, 1.0),
    ) -> torch.Tensor:
        """Lower bounds of ``C[b] @ f(x')`` over the input set; ``C`` is ``(B, S, K)``, result ``(B, S)``."""
        self._require()
        if method not in METHODS:
            raise NasRobustError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}")
        chunks = self._chunked(method, x)
        if chunks is not None:
            self._input_set(x, eps, norm, domain)  # checks the shape once
            e = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
            return torch.cat([self._sub(len(x[c])).linear_lower(x[c], C[c], e[c], norm, method, domain) for c in chunks])
        xset = self._input_set(x, eps, norm, domain)
        state = self._propagate(xset, method)
        A = C.transpose(0, 1).to(x.dtype)
        return self._backward(state, self._output, A, xset, stop_at_nonlinear=method == "ibp").T

    def _linear_bound(self, x: torch.Tensor, C: torch.Tensor, eps: float | torch.Tensor, norm: str, method: str,
                      domain: tuple[float, float] | None, active: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, c)`` with ``C[b] @ f(x') >= <A[s, b], x'> + c[s, b]`` for every ``x'`` of the set (not IBP).

        Chunks of a zonotope pass where no example is ``active`` are skipped (their rows are 0 and -inf).
        """
        chunks = self._chunked(method, x)
        if chunks is not None:
            e = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
            A = torch.zeros((C.shape[1], *x.shape), dtype=x.dtype, device=x.device)
            c = torch.full((C.shape[1], x.shape[0]), float("-inf"), dtype=x.dtype, device=x.device)
            for ch in chunks:
                if active is None or bool(active[ch].any()):
                    A[:, ch], c[:, ch] = self._sub(len(x[ch]))._linear_bound(x[ch], C[ch], e[ch], norm, method, domain)
            return A, c
        xset = self._input_set(x, eps, norm, domain)
        state = self._propagate(xset, method)
        inputs: list[torch.Tensor] = []
        A = C.transpose(0, 1).to(x.dtype)
        total = self._backward(state, self._output, A, xset, stop_at_nonlinear=False, inputs=inputs)
        a_in = inputs[0] if inputs else torch.zeros((A.shape[0], *x.shape), dtype=x.dtype, device=x.device)
        return a_in, total - xset.lower_bound(a_in)

    def output_bounds(
        self, x: torch.Tensor, eps: float | torch.Tensor, norm: str = "linf", method: str = "crown-ibp",
        domain: tuple[float, float] | None = (0.0, 1.0),
    ) -> Interval:
        """Bounds on every logit over the input set."""
        K = self._shape[self._output][1] if not self.unsupported else 0
        eye = torch.eye(K, dtype=x.dtype, device=x.device).expand(x.shape[0], K, K)
        both = self.linear_lower(x, torch.cat([eye, -eye], dim=1), eps, norm, method, domain)
        return Interval(both[:, :K], -both[:, K:])

    def margin_lower(
        self, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, norm: str = "linf",
        method: str = "crown-ibp", domain: tuple[float, float] | None = (0.0, 1.0),
    ) -> torch.Tensor:
        """Lower bounds of the margins ``f_y - f_k`` (``k != y``) over the input set, ``(B, K - 1)``."""
        self._require()
        return self.linear_lower(x, margin_spec(y, self._shape[self._output][1], x.dtype), eps, norm, method, domain)

    def certified(
        self, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, norm: str = "linf",
        method: str = "crown-ibp", domain: tuple[float, float] | None = (0.0, 1.0), *, where: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Whether every point of the set is classified ``y`` (bool ``(B,)``, implies clean-correct).

        ``where`` (bool ``(B,)``): only these examples are asked (the others answer False); a
        zonotope pass then skips the chunks with none of them.
        """
        with torch.no_grad():
            chunks = self._chunked(method, x)
            if where is None or chunks is None:
                ok = (self.margin_lower(x, y, eps, norm, method, domain) > 0).all(dim=1)
                return ok if where is None else ok & where
            self._input_set(x, eps, norm, domain)
            e = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
            out = torch.zeros_like(where)
            for ch in chunks:
                if bool(where[ch].any()):
                    out[ch] = self._sub(len(x[ch])).certified(x[ch], y[ch], e[ch], norm, method, domain) & where[ch]
            return out

    def certified_radius(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        norm: str = "linf",
        method: str = "crown-ibp",
        *,
        eps_max: float | None = None,
        eps_min: float | None = None,
        rtol: float = 0.01,
        domain: tuple[float, float] | None = (0.0, 1.0),
    ) -> torch.Tensor:
        """Largest ``eps`` (per example) at which the bound certifies the label.

        IBP: bisection on ``log eps`` between ``eps_min`` and ``eps_max`` until the bracket's ratio
        is below ``1 + rtol``. The linear methods (CROWN-IBP, CROWN-zono, CROWN) search with their
        linear bounds instead (:meth:`_linear_radius`), which needs a few bound computations rather
        than ~15. Either way the result is an ``eps`` that was certified (a sound lower bound on the
        minimal adversarial perturbation even where the bound is not monotone in ``eps``), or 0 below
        ``eps_min`` (or for a misclassified point). Defaults: ``eps_max`` = the domain's width (Linf)
        or diagonal (L2), ``eps_min = 1e-6 eps_max``.
        """
        self._require()
        with torch.no_grad():
            if eps_max is None:
                width = 1.0 if domain is None else domain[1] - domain[0]
                eps_max = width * (1.0 if norm == "linf" else math.sqrt(x[0].numel()))
            eps_min = eps_max * 1e-6 if eps_min is None else eps_min
            if method != "ibp":
                return self._linear_radius(x, y, norm, method, eps_min, eps_max, rtol, domain)
            ok = self.certified(x, y, eps_min, norm, method, domain)
            lo = torch.full(x.shape[:1], math.log(eps_min), dtype=torch.float64, device=x.device)
            hi = torch.full_like(lo, math.log(eps_max))
            steps = max(1, math.ceil(math.log2(math.log(eps_max / eps_min) / math.log1p(rtol))))
            for _ in range(steps if bool(ok.any()) else 0):
                mid = (lo + hi) / 2
                good = self.certified(x, y, mid.exp().to(x.dtype), norm, method, domain)
                lo = torch.where(good, mid, lo)
                hi = torch.where(good, hi, mid)
            return torch.where(ok, lo.exp(), torch.zeros_like(lo)).to(x.dtype)

    def _linear_radius(self, x: torch.Tensor, y: torch.Tensor, norm: str, method: str, eps_min: float, eps_max: float,
                       rtol: float, domain: tuple[float, float] | None, max_bounds: int = 10) -> torch.Tensor:
        """Certified radius from linear bounds: a bisection on ``log eps`` that needs few bounds.

        A bound computed at ``eps0`` is a linear function ``<A, x'> + c`` valid on the whole
        ``eps0``-set, so where it fails at ``eps0`` it still certifies every ``eps`` at which that
        function stays positive (found without any network pass). The search is scaled by the
        first-order radius ``r0`` (where the linearisation at ``x``, the exact bound at ``eps = 0``,
        reaches 0): the certified radius is a fairly stable fraction of ``r0`` across the examples
        of one network, so zonotope passes (run a few examples at a time) start just below the
        fraction the previous examples reached (their lower quartile), then step up by ``(1 + rtol)^2``;
        the first ones start at ``r0 / 16`` and double. From below, because a bound costs more the more
        ReLUs are unstable. A failure with nothing certified yet steps down 4x, 16x, 64x, ...
        """
        C = margin_spec(y, self._shape[self._output][1], x.dtype)
        batch = x.shape[0]
        A, c = self._linear_bound(x, C, 0.0, norm, "crown-ibp", domain)  # the linearisation at x
        zero = torch.zeros(batch, dtype=torch.float64, device=x.device)
        correct = _certifies(x, A, c, zero, norm, domain)
        r0 = _reach(x, A, c, torch.full_like(zero, eps_max), eps_min, norm, domain).clamp_min(eps_min)
        out = zero.clone()
        ratios: list[torch.Tensor] = []
        for ch in self._chunked(method, x) or [slice(0, batch)]:
            seen = torch.cat(ratios) if ratios else zero[:0]
            q = seen.quantile(0.25) if len(seen) else None  # a low guess: failed bounds cost the most
            out[ch] = self._sub(len(x[ch]))._search(x[ch], C[ch], correct[ch], r0[ch], q, norm, method, eps_min, eps_max,
                                                    rtol, domain, max_bounds)
            done = out[ch] > 0
            ratios.append((out[ch] / r0[ch])[done])
        return torch.where(out >= eps_min, out, zero).to(x.dtype)

    def _search(self, x: torch.Tensor, C: torch.Tensor, todo: torch.Tensor, r0: torch.Tensor, q: torch.Tensor | None,
                norm: str, method: str, eps_min: float, eps_max: float, rtol: float,
                domain: tuple[float, float] | None, max_bounds: int) -> torch.Tensor:
        """Largest certified ``eps`` per example (``q``: the expected fraction of ``r0``, if known)."""
        lo = torch.zeros_like(r0)  # largest certified eps
        hi = r0.clone()  # smallest failed eps, or (until one fails) the soft upper end
        failed = torch.zeros_like(todo)
        misses = torch.zeros_like(r0)  # failures with nothing certified yet: each one steps 4x further down
        step = (1 + rtol) ** 2 if q is not None else 2.0
        eps0 = r0 * (float(q) / (1 + rtol) if q is not None else 1 / 16)  # from below: bounds cost more further out
        for _ in range(max_bounds):
            todo = todo & (hi > lo * (1 + rtol)) & ~(failed & (hi <= eps_min))
            if not bool(todo.any()):
                break
            eps0 = torch.where(todo, eps0.clamp(eps_min, eps_max), torch.zeros_like(eps0))
            A, c = self._linear_bound(x, C, eps0.to(x.dtype), norm, method, domain, active=todo)
            whole = _certifies(x, A, c, eps0, norm, domain) & todo
            newly = todo & ~whole
            lo = torch.where(whole, torch.maximum(lo, eps0), lo)
            lo = torch.where(newly, torch.maximum(lo, _reach(x, A, c, eps0, eps_min, norm, domain)), lo)
            hi = torch.where(newly, eps0, torch.where(whole & ~failed, torch.maximum(hi, eps0 * step).clamp(max=eps_max), hi))
            failed = failed | newly
            misses = misses + (newly & (lo == 0)).to(misses.dtype)
            inside = torch.where(lo > 0, (lo.clamp_min(eps_min) * hi).sqrt(), hi / 4 ** misses)
            eps0 = torch.where(failed, inside, (lo * step).clamp(max=eps_max))
        return lo


def _certifies(x: torch.Tensor, A: torch.Tensor, c: torch.Tensor, e: torch.Tensor, norm: str,
               domain: tuple[float, float] | None) -> torch.Tensor:
    """Whether the linear lower bounds ``<A[s, b], x'> + c[s, b]`` are all positive on the ``e[b]``-set, ``(B,)``."""
    return (c + InputSet(x, e.to(x.dtype), norm, domain).lower_bound(A) > 0).all(0)


def _reach(x: torch.Tensor, A: torch.Tensor, c: torch.Tensor, cap: torch.Tensor, eps_min: float, norm: str,
           domain: tuple[float, float] | None) -> torch.Tensor:
    """Largest ``eps`` in ``[eps_min, cap]`` where the linear bounds are all positive (to 1e-4 relative),
    0 where they are not even at ``eps_min``. No network pass: the bound is concave in ``eps``."""
    lo = torch.full_like(cap, math.log(eps_min))
    hi = cap.clamp_min(eps_min).log()
    ok = _certifies(x, A, c, lo.exp(), norm, domain)
    for _ in range(40):
        mid = (lo + hi) / 2
        good = _certifies(x, A, c, mid.exp(), norm, domain)
        lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
    return torch.where(_certifies(x, A, c, cap, norm, domain), cap, torch.where(ok, lo.exp(), torch.zeros_like(lo)))


def _first(v: Any) -> torch.Tensor:
    return v[0] if isinstance(v, (tuple, list)) else v


def _accumulate(acc: dict[Node, torch.Tensor], node: Node, a: torch.Tensor) -> None:
    acc[node] = a if node not in acc else acc[node] + a


def margin_spec(y: torch.Tensor, num_classes: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``C`` with rows ``e_y - e_k`` for every ``k != y``: shape ``(B, K - 1, K)``."""
    eye = torch.eye(num_classes, device=y.device, dtype=dtype)
    classes = torch.arange(num_classes, device=y.device).expand(len(y), num_classes)
    others = classes[classes != y[:, None]].view(len(y), num_classes - 1)
    return eye[y][:, None, :] - eye[others]


# --------------------------------------------------------------------------- max-pool windows
@dataclass(frozen=True)
class _PoolGeometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    extra: tuple[int, int]  # bottom/right padding that ceil_mode adds


def _pair(v: Any, default: tuple[int, int] | None = None) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        assert default is not None
        return default
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[-1])) if len(v) else default  # type: ignore[return-value]


def _pool_geometry(node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> _PoolGeometry:
    args = list(node.args) + [None] * (6 - len(node.args))
    kernel = _pair(args[1])
    stride = _pair(args[2], kernel)
    padding = _pair(args[3], (0, 0))
    dilation = _pair(args[4], (1, 1))
    extra = tuple(
        max(0, (out_shape[d + 2] - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 - (in_shape[d + 2] + 2 * padding[d]))
        for d in range(2)
    )
    return _PoolGeometry(kernel, stride, padding, dilation, extra)  # type: ignore[arg-type]


def _windows(z: torch.Tensor, g: _PoolGeometry, fill: float) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, kh * kw, L)``: the pooling windows, padding set to ``fill``."""
    b, c = z.shape[:2]
    ph, pw = g.padding
    padded = F.pad(z, (pw, pw + g.extra[1], ph, ph + g.extra[0]), value=fill)
    cols = F.unfold(padded, g.kernel, dilation=g.dilation, stride=g.stride)
    return cols.view(b, c, g.kernel[0] * g.kernel[1], -1)


# --------------------------------------------------------------------------- convenience API
def unsupported_reasons(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Why ``model`` cannot be bounded on inputs like ``example`` (empty list: it can)."""
    return BoundGraph(model, example).unsupported


def margin_bounds(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, norm: str = "linf",
    method: str = "crown-ibp", domain: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Differentiable lower bounds of ``f_y - f_k`` over the perturbation set, ``(B, K - 1)``."""
    return BoundGraph(model, x).margin_lower(x, y, eps, norm, method, domain)


def certified_radius(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str = "linf", method: str = "crown-ibp", **kwargs: Any
) -> torch.Tensor:
    """Per-example certified radius (see :meth:`BoundGraph.certified_radius`)."""
    return BoundGraph(model, x).certified_radius(x, y, norm, method, **kwargs)


def jacobian_norms(
    model: nn.Module, x: torch.Tensor, norm: str = "linf", *, create_graph: bool = False, chunk: int = 16
) -> torch.Tensor:
    """``||grad_x f_k(x)||_q`` for every example and logit, ``(B, K)``; ``q`` is the dual of ``norm``.

    Examples are independent (eval-mode networks), so one backward pass per logit gives every
    example's gradient; logits are processed ``chunk`` at a time with batched gradients.
    ``create_graph=True`` keeps the result differentiable (for use as a regulariser).
    """
    if norm not in DUAL_NORM:
        raise NasRobustError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    q = DUAL_NORM[norm]
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        K = out.shape[1]
        norms = []
        for start in range(0, K, chunk):
            ks = torch.arange(start, min(K, start + chunk), device=x.device)
            grad_out = F.one_hot(ks, K).to(out.dtype)[:, None, :].expand(len(ks), *out.shape)
            (g,) = torch.autograd.grad(out, x, grad_out, create_graph=create_graph, retain_graph=True, is_grads_batched=True)
            norms.append(g.flatten(2).norm(p=q, dim=-1).T)
    return torch.cat(norms, dim=1)


def jacobian_estimate(
    model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf", *, create_graph: bool = True
) -> torch.Tensor:
    """DSRNA's Jacobian term ``-(eps / K) sum_k ||grad_x f_k(x)||_q`` per example, ``(B,)``: an estimate.

    First order at ``x``: ``f_k(x + d) ≈ f_k(x) + <grad f_k(x), d> >= f_k(x) - eps ||grad f_k(x)||_q``
    for ``||d||_p <= eps``; averaged over the ``K`` logits it *estimates* the worst mean change. It
    is not a bound over the set: the gradient is taken at ``x`` only, and inside the ball its norm
    can be larger (an outside check found 1.49x its value at ``x``), so the true change can exceed
    it. DSRNA calls it a bound; for a sound one use :meth:`BoundGraph.margin_lower`.
    Differentiable w.r.t. the weights (``create_graph=True``), as DSRNA maximises it in search.
    """
    return -eps * jacobian_norms(model, x, norm, create_graph=create_graph).mean(dim=1)


def jacobian_bound(
    model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf", *, create_graph: bool = True
) -> torch.Tensor:
    """Deprecated name of :func:`jacobian_estimate` (it is a first-order estimate, not a bound)."""
    warnings.warn("jacobian_bound is a first-order estimate, not a bound; call jacobian_estimate", DeprecationWarning,
                  stacklevel=2)
    return jacobian_estimate(model, x, eps, norm, create_graph=create_graph)


__all__ = [
    "BoundGraph",
    "DUAL_NORM",
    "InputSet",
    "Interval",
    "METHODS",
    "NORMS",
    "NotBoundableError",
    "certified_radius",
    "jacobian_bound",
    "jacobian_estimate",
    "jacobian_norms",
    "margin_bounds",
    "margin_spec",
    "unsupported_reasons",
]
