"""Layer-by-layer representation similarity: minibatch CKA with the unbiased HSIC estimator.

Centered Kernel Alignment (Kornblith et al., "Similarity of Neural Network Representations
Revisited", ICML 2019) compares two layers through the Gram matrices of their activations on
the same examples: ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. It is invariant
to orthogonal transforms and isotropic scaling of either representation, so it compares
layers of different widths and different networks.

Whole-dataset Gram matrices do not fit in memory for real layers, so Nguyen, Raghu & Kornblith
("Do Wide and Deep Networks Learn the Same Things?", ICLR 2021, Sec. 3.1) average HSIC over
minibatches, using the *unbiased* estimator HSIC_1 of Song et al. ("Feature Selection via
Dependence Maximization", JMLR 2012, eq. 5)::

    HSIC_1(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))

(``K~``, ``L~``: the Gram matrices with zeroed diagonals) and

    CKA_minibatch = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) mean_i HSIC_1(L_i, L_i)).

Because HSIC_1 is a U-statistic, its average over all size-``m`` subsets of the data equals
its full-data value, so the minibatch estimate does not depend on the batch size (the biased
estimator's does); the tests check exactly this. The per-batch HSIC values are kept
(:class:`BatchHSIC`), so :mod:`nasrobust.analysis.cka_compare` can bootstrap over batches of
test images without running the models again.

*Block structure* (Nguyen et al. 2021; in the words of their follow-up, "On the Origins of the
Block Structure Phenomenon in Neural Network Representations", 2022: "a large set of contiguous
layers with highly similar representations") is a bright square on the layer x layer CKA map,
whose layers resemble each other far more than they resemble the layers around them. Nguyen et
al. find it in networks that are large for their training set; Cianfarani et al. ("Understanding Robust
Learning through the Lens of Representation Similarities", NeurIPS 2022) report that
adversarially trained networks lose it: their CKA stays high even between distant layers, so no
block stands out. Neither paper defines a number, so :func:`block_structure` scores the most
block-like contiguous run of layers: how much more similar its layers are to each other than to
the other layers, *after removing what layer distance alone explains* (a map whose similarity
only decays with distance, or is uniformly high, has no block and scores 0).

Linear kernels by default (what both papers use); an RBF kernel with bandwidth a multiple of
the median pairwise distance of each minibatch (Kornblith et al.'s choice) is optional.
Activations are captured by forward hooks on modules chosen by type (``Conv2d``, ``Linear``
by default) or by name glob; a module called several times per forward (a shared ReLU) gives
one layer per call, in execution order.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nasrobust.errors import NasRobustError

log = logging.getLogger(__name__)

#: Module types hooked when no layer selection is given.
DEFAULT_LAYER_TYPES: tuple[str, ...] = ("Conv2d", "Linear")


# ----------------------------------------------------------------------------- kernels and HSIC
def _torch():
    import torch

    return torch


def gram_linear(x):
    """``X X^T`` of the flattened examples, in float64 (HSIC's centring cancels large terms)."""
    torch = _torch()
    x = torch.as_tensor(x)
    x = x.reshape(x.shape[0], -1).double()
    return x @ x.T


def gram_rbf(x, threshold: float = 1.0):
    """RBF Gram ``exp(-d^2 / (2 sigma^2))`` with ``sigma = threshold x median pairwise distance``
    (median over the off-diagonal pairs of the batch)."""
    torch = _torch()
    x = torch.as_tensor(x).reshape(len(x), -1).double()
    sq = torch.cdist(x, x).pow(2)
    n = sq.shape[0]
    off = sq[~torch.eye(n, dtype=torch.bool, device=sq.device)]
    median = off.median() if off.numel() else torch.tensor(0.0, dtype=torch.float64)
    if median <= 0:
        raise NasRobustError("RBF CKA: every example of a batch has the same representation (median distance 0)")
    return torch.exp(-sq / (2.0 * threshold**2 * median))


#: Kernels by name: ``rbf_threshold -> (activations (n, ...) -> Gram (n, n))``.
KERNELS: Mapping[str, Callable[[float], Callable]] = {
    "linear": lambda threshold: gram_linear,
    "rbf": lambda threshold: functools.partial(gram_rbf, threshold=threshold),
}


def _zero_diag(k):
    torch = _torch()
    k = torch.as_tensor(k, dtype=torch.float64).clone()
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def hsic1_matrix(ks, ls):
    """Unbiased HSIC_1 of every Gram in ``ks`` (A, n, n) with every Gram in ``ls`` (B, n, n): shape (A, B)."""
    kt, lt = _zero_diag(ks), _zero_diag(ls)
    n = kt.shape[-1]
    if n < 4:
        raise NasRobustError(f"the unbiased HSIC estimator needs at least 4 examples per batch, got {n}")
    trace = kt.reshape(len(kt), -1) @ lt.reshape(len(lt), -1).T  # tr(K~ L~) (Grams are symmetric)
    sums = kt.sum(dim=(-2, -1))[:, None] * lt.sum(dim=(-2, -1))[None, :] / ((n - 1) * (n - 2))
    cross = kt.sum(-1) @ lt.sum(-1).T * (2.0 / (n - 2))  # 1'K~L~1 = (K~1) . (L~1)
    return (trace + sums - cross) / (n * (n - 3))


def hsic1(gram_k, gram_l) -> float:
    """Unbiased HSIC (Song et al. 2012) of two Gram matrices."""
    torch = _torch()
    return float(hsic1_matrix(torch.as_tensor(gram_k)[None], torch.as_tensor(gram_l)[None])[0, 0])


def hsic0(gram_k, gram_l) -> float:
    """The biased estimator ``tr(K H L H) / (n - 1)^2`` (Gretton et al. 2005), for comparison."""
    torch = _torch()
    k = torch.as_tensor(gram_k, dtype=torch.float64)
    lg = torch.as_tensor(gram_l, dtype=torch.float64)
    n = k.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    return float(torch.trace(k @ h @ lg @ h) / (n - 1) ** 2)


def cka(x, y, *, kernel: str = "linear", unbiased: bool = True, rbf_threshold: float = 1.0) -> float:
    """CKA of two representations of the same examples (rows), on all of them at once."""
    kfn = _kernel(kernel, rbf_threshold)
    gk, gl = kfn(x), kfn(y)
    h = hsic1 if unbiased else hsic0
    return h(gk, gl) / np.sqrt(h(gk, gk) * h(gl, gl))


def _kernel(kernel: str, rbf_threshold: float) -> Callable:
    if kernel not in KERNELS:
        raise NasRobustError(f"unknown CKA kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    return KERNELS[kernel](rbf_threshold)


@dataclass(frozen=True, eq=False)
class BatchHSIC:
    """HSIC_1 of every layer pair on each minibatch (``ab``: (batches, A, B); ``aa``: (batches, A, A);
    ``bb``: (batches, B, B)), the terms the minibatch CKA averages; kept so that a bootstrap can
    re-weight batches of examples without running the models again."""

    ab: np.ndarray
    aa: np.ndarray
    bb: np.ndarray

    @property
    def batches(self) -> int:
        return len(self.ab)

    def cka(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cross, self_a, self_b)`` CKA matrices from the batches weighted by ``weights``.

        ``weights`` is ``(batches,)`` or ``(k, batches)`` (e.g. bootstrap counts: a leading axis
        of ``k`` resamples in every output); ``None`` weighs every batch once.
        """
        w = np.ones(self.batches) if weights is None else np.asarray(weights, dtype=np.float64)
        sums = [np.tensordot(w, h, axes=([-1], [0])) for h in (self.ab, self.aa, self.bb)]
        ab, aa, bb = sums
        da = np.sqrt(np.clip(np.diagonal(aa, axis1=-2, axis2=-1), 0, None))
        db = np.sqrt(np.clip(np.diagonal(bb, axis1=-2, axis2=-1), 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (ab / (da[..., :, None] * db[..., None, :]), aa / (da[..., :, None] * da[..., None, :]),
                    bb / (db[..., :, None] * db[..., None, :]))


class MinibatchCKA:
    """Accumulates minibatch HSIC_1 values (Nguyen et al. 2021) between two lists of layers.

    ``update(acts_a, acts_b)`` takes one minibatch's activations (``acts_b=None``: compare
    ``acts_a`` with itself); :meth:`result` is the CKA matrix ``(len(acts_a), len(acts_b))``,
    :meth:`self_similarity` the CKA of each model's layers with each other (free: the
    normalisers need those HSIC values anyway), :meth:`per_batch` every batch's HSIC values.
    """

    def __init__(self, kernel: str = "linear", rbf_threshold: float = 1.0):
        self._kernel = _kernel(kernel, rbf_threshold)
        self.kernel = kernel
        self._batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.examples = 0

    @property
    def batches(self) -> int:
        return len(self._batches)

    def update(self, acts_a: Sequence, acts_b: Sequence | None = None) -> None:
        torch = _torch()
        ka = torch.stack([self._kernel(a) for a in acts_a])  # Grams on the activations' device
        aa = hsic1_matrix(ka, ka).cpu().numpy()
        if acts_b is None:
            ab = bb = aa
        else:
            kb = torch.stack([self._kernel(b) for b in acts_b])
            ab, bb = hsic1_matrix(ka, kb).cpu().numpy(), hsic1_matrix(kb, kb).cpu().numpy()
        if self._batches and ab.shape != self._batches[0][0].shape:
            raise NasRobustError(f"layer count changed between batches: {ab.shape} vs {self._batches[0][0].shape}")
        self._batches.append((ab, aa, bb))
        self.examples += ka.shape[-1]

    def per_batch(self) -> BatchHSIC:
        if not self._batches:
            raise NasRobustError("no minibatch was accumulated")
        ab, aa, bb = (np.stack(parts) for parts in zip(*self._batches))
        return BatchHSIC(ab, aa, bb)

    def result(self) -> np.ndarray:
        """CKA of every layer of a (rows) with every layer of b (columns)."""
        return self.per_batch().cka()[0]

    def self_similarity(self) -> tuple[np.ndarray, np.ndarray]:
        """CKA among the layers of a, and among the layers of b."""
        _, self_a, self_b = self.per_batch().cka()
        return self_a, self_b


def minibatch_cka(x, y, batch_size: int, *, kernel: str = "linear", rbf_threshold: float = 1.0) -> float:
    """CKA of two in-memory representations by consecutive minibatches of ``batch_size`` (rows in order)."""
    acc = MinibatchCKA(kernel, rbf_threshold)
    n = len(x)
    for start in range(0, n - 3, batch_size):
        stop = min(n, start + batch_size)
        if stop - start >= 4:
            acc.update([x[start:stop]], [y[start:stop]])
    return float(acc.result()[0, 0])


# ----------------------------------------------------------------------------- hooks on models
def select_layers(model, spec: Sequence[str] | None = None) -> list[str]:
    """Names of the modules to hook: those whose type name is in ``spec`` or whose name matches a glob in it."""
    spec = tuple(spec or DEFAULT_LAYER_TYPES)
    names = [name for name, m in model.named_modules()
             if name and (type(m).__name__ in spec or any(fnmatch.fnmatchcase(name, p) for p in spec))]
    if not names:
        kinds = sorted({type(m).__name__ for _, m in model.named_modules()})
        raise NasRobustError(f"no module matches --layers {','.join(spec)}; module types here: {', '.join(kinds)}")
    return names


class _Recorder:
    """Forward hooks that keep each selected module's output of the current batch, in call order."""

    def __init__(self, model, names: Sequence[str]):
        modules = dict(model.named_modules())
        self.outputs: list[tuple[str, object]] = []
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            self.outputs.append((name, out.detach()))

        return hook

    def take(self) -> list[tuple[str, object]]:
        out, self.outputs = self.outputs, []
        calls: dict[str, int] = {}
        labelled = []
        for name, t in out:
            k = calls.get(name, 0)
            calls[name] = k + 1
            labelled.append((name if k == 0 else f"{name}#{k}", t))
        return labelled

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass(frozen=True, eq=False)
class CKAResult:
    """A layer x layer CKA matrix (``matrix``: rows = layers of model a, columns = layers of model b),
    each model's own layer x layer similarity (``self_a``, ``self_b``; for block structure) and the
    per-batch HSIC values they come from (for bootstrap intervals)."""

    matrix: pd.DataFrame
    self_a: pd.DataFrame
    self_b: pd.DataFrame
    kernel: str
    n_examples: int
    batch_size: int
    batches: int
    same_model: bool
    epochs: int = 1
    per_batch: BatchHSIC | None = None


def layer_cka(model_a, images, model_b=None, *, layers_a: Sequence[str] | None = None,
              layers_b: Sequence[str] | None = None, batch_size: int = 256, kernel: str = "linear",
              rbf_threshold: float = 1.0, epochs: int = 1, seed: int = 0, device="cpu") -> CKAResult:
    """Minibatch CKA between every hooked layer of ``model_a`` and of ``model_b`` (or of ``model_a`` itself).

    ``images`` is a tensor ``(N, C, H, W)`` in ``[0, 1]`` (what the models take). One epoch
    takes the examples in order; with ``epochs > 1`` they are reshuffled every epoch by a
    ``torch.Generator`` seeded with ``seed`` (Nguyen et al. average over 10 epochs of shuffled
    minibatches). Batches with fewer than 4 examples are skipped (HSIC_1 is undefined there).
    """
    torch = _torch()
    images = torch.as_tensor(images)
    n = len(images)
    if n < 4:
        raise NasRobustError(f"CKA needs at least 4 examples, got {n}")
    sel_a = select_layers(model_a, layers_a)
    one_model = model_b is None or model_b is model_a
    sel_b = sel_a if model_b is None else select_layers(model_b, layers_b)
    same = one_model and sel_b == sel_a
    # one recorder per distinct model: hooking the same module twice would record every call twice
    rec_a = _Recorder(model_a, list(dict.fromkeys([*sel_a, *sel_b])) if one_model else sel_a)
    rec_b = None if one_model else _Recorder(model_b, sel_b)
    keep_a, keep_b = set(sel_a), set(sel_b)
    acc = MinibatchCKA(kernel, rbf_threshold)
    generator = torch.Generator().manual_seed(seed) if epochs > 1 else None
    names_a: list[str] | None = None
    names_b: list[str] | None = None
    models = [model_a] if one_model else [model_a, model_b]
    modes = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        with torch.no_grad():
            for _ in range(epochs):
                order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
                for start in range(0, n, batch_size):
                    idx = order[start:start + batch_size]
                    if len(idx) < 4:
                        continue
                    x = images[idx].to(device)
                    model_a(x)
                    recorded = rec_a.take()
                    acts_a = [(k, t) for k, t in recorded if k.partition("#")[0] in keep_a]
                    if rec_b is not None:
                        model_b(x)
                        acts_b = rec_b.take()
                    else:
                        acts_b = [(k, t) for k, t in recorded if k.partition("#")[0] in keep_b]
                    if names_a is None:
                        names_a = [k for k, _ in acts_a]
                        names_b = [k for k, _ in acts_b]
                    acc.update([t for _, t in acts_a], None if same else [t for _, t in acts_b])
    finally:
        rec_a.close()
        if rec_b is not None:
            rec_b.close()
        for m, mode in zip(models, modes):
            m.train(mode)
    if names_a is None:
        raise NasRobustError(f"no batch of at least 4 examples (n={n}, batch_size={batch_size})")
    ia, ib = pd.Index(names_a, name="layer_a"), pd.Index(names_b, name="layer_b")
    per_batch = acc.per_batch()
    cross, self_a, self_b = per_batch.cka()
    return CKAResult(
        matrix=pd.DataFrame(cross, index=ia, columns=ib),
        self_a=pd.DataFrame(self_a, index=ia, columns=ia.rename("layer_a2")),
        self_b=pd.DataFrame(self_b, index=ib, columns=ib.rename("layer_b2")),
        kernel=kernel, n_examples=n, batch_size=batch_size, batches=acc.batches, same_model=same,
        epochs=epochs, per_batch=per_batch,
    )


# ----------------------------------------------------------------------------- block structure
@dataclass(frozen=True)
class BlockStructure:
    """The most block-like contiguous run of layers of a square (self-)CKA map (see the module docstring).

    ``score`` is the block's contrast beyond layer distance: the mean of ``CKA - m(|i - j|)``
    over pairs inside the block minus its mean over pairs with one layer inside and one outside,
    where ``m(d)`` is the map's mean CKA of layers ``d`` apart. 0 when similarity depends on
    distance only (smooth decay, or uniformly high as in robust networks); large when a run of
    layers forms a bright square. ``within`` / ``outside`` are the raw mean CKA inside the block
    and between it and the other layers; ``long_range`` is the mean CKA of layers at least half the
    network apart (what Cianfarani et al. find raised by robust training).
    """

    score: float
    start: int  # first layer of the block
    stop: int  # one past its last layer
    within: float
    outside: float
    long_range: float
    layers: int
    min_size: int


def _detrended(stack: np.ndarray) -> np.ndarray:
    """``S - m(|i - j|)`` for each matrix of a (k, n, n) stack, diagonal zeroed."""
    n = stack.shape[-1]
    dist = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    profile = np.stack([stack[:, dist == d].mean(axis=1) for d in range(n)], axis=1)  # (k, n)
    resid = stack - profile[:, dist]
    resid[:, dist == 0] = 0.0
    return resid


def _intervals(n: int, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every contiguous run ``[start, stop)`` of at least ``min_size`` layers that leaves one layer outside."""
    start, stop = np.triu_indices(n + 1, k=min_size)
    keep = (stop - start) < n
    return start[keep], stop[keep]


def _block_contrasts(stack: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contrast of every interval (k, intervals), with the intervals' starts and stops."""
    resid = _detrended(stack)
    n = stack.shape[-1]
    prefix = np.zeros((len(stack), n + 1, n + 1))
    prefix[:, 1:, 1:] = resid.cumsum(axis=1).cumsum(axis=2)
    a, b = _intervals(n, min_size)
    inside = prefix[:, b, b] - prefix[:, a, b] - prefix[:, b, a] + prefix[:, a, a]
    rows = prefix[:, b, n] - prefix[:, a, n]
    size = (b - a).astype(np.float64)
    contrast = inside / (size * (size - 1)) - (rows - inside) / (size * (n - size))
    return contrast, a, b


def _check_square(s: np.ndarray, min_size: int) -> None:
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise NasRobustError(f"block structure needs a square self-similarity matrix, got shape {s.shape}")
    if min_size < 2:
        raise NasRobustError(f"a block needs at least 2 layers, got min_size={min_size}")
    if s.shape[0] < min_size + 1:
        raise NasRobustError(f"block structure of blocks of >= {min_size} layers needs at least {min_size + 1} layers, "
                             f"got {s.shape[0]}; hook more layers (--layers) or lower the minimum block size")
    if not np.all(np.isfinite(s)):
        raise NasRobustError("the CKA map has undefined entries (a layer with constant output on every example)")


def block_scores(stack: np.ndarray, min_size: int = 3) -> np.ndarray:
    """:attr:`BlockStructure.score` of each matrix of a (k, n, n) stack (e.g. bootstrap resamples)."""
    stack = np.asarray(stack, dtype=np.float64)
    _check_square(stack[0], min_size)
    return _block_contrasts(stack, min_size)[0].max(axis=1)


def long_range_similarity(stack: np.ndarray) -> np.ndarray:
    """Mean CKA of layers at least half the network apart, for each matrix of a (k, n, n) stack."""
    stack = np.asarray(stack, dtype=np.float64)
    n = stack.shape[-1]
    dist = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return stack[:, dist >= max(1, (n + 1) // 2)].mean(axis=1)


def block_structure(matrix: np.ndarray | pd.DataFrame, min_size: int = 3) -> BlockStructure:
    """Find the most block-like run of at least ``min_size`` contiguous layers and score it.

    A contiguous run must leave at least one layer outside (a map that is one block everywhere
    has no contrast, which is what "no block structure" means here).
    """
    s = np.asarray(matrix, dtype=np.float64)
    _check_square(s, min_size)
    contrast, a, b = _block_contrasts(s[None], min_size)
    best = int(np.argmax(contrast[0]))
    start, stop = int(a[best]), int(b[best])
    n = len(s)
    inside = np.zeros(n, dtype=bool)
    inside[start:stop] = True
    block = s[np.ix_(inside, inside)]
    size = stop - start
    within = float((block.sum() - np.trace(block)) / (size * (size - 1)))
    outside = float(s[np.ix_(inside, ~inside)].mean())
    return BlockStructure(float(contrast[0, best]), start, stop, within, outside,
                          float(long_range_similarity(s[None])[0]), n, min_size)
