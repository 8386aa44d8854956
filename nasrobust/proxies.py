"""Zero-cost proxies: scores of an architecture at initialisation, from one real data batch.

Robustness proxies (lower is better, the network is less sensitive to its input):

* ``jacobian`` -- mean over examples of the Frobenius norm of the input-output Jacobian
  ``||d logits / d x||_F`` in ``[0, 1]`` pixel space (Hoffman, Roberts & Yaida, "Robust Learning
  with Jacobian Regularization", 2019; DSRNA's Jacobian bound is built from the same
  per-class input gradients). Computed exactly, one backward pass per class.
* ``input_grad`` -- mean over examples of ``||d CE(f(x), y) / d x||_1``: the first-order
  increase of the loss under an Linf perturbation of size eps is ``eps * ||grad||_1``
  (Simon-Gabriel et al., "First-order Adversarial Vulnerability of Neural Networks and Input
  Dimension", ICML 2019; Ross & Doshi-Velez, AAAI 2018, regularise the same gradient).

Both run in eval mode after the BN statistics are set from the batch itself
(:func:`~nasrobust.supernet.recalibrate_bn`), so every example's gradient is its own (train-mode
BN would couple the examples of a batch).
A network whose output ignores its input (e.g. an nb201 cell with no path from input to output)
scores a perfect 0 on both, so minimise them jointly with an accuracy metric (a weighted sum
with a store metric of clean accuracy, or a multi-objective search), not alone.

Clean-accuracy proxies, for contrast, as defined by Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS" (ICLR 2021; their code ``foresight/pruners/measures``), on the network with
normalised inputs, over the weights of every ``Conv2d`` and ``Linear`` layer:

* ``grad_norm`` -- ``sum_layers ||dL/dW||_2`` (train-mode BN, mean cross-entropy);
* ``snip`` -- ``sum |W * dL/dW|`` (Lee et al., ICLR 2019; equal to the gradient of the loss
  with respect to an all-ones weight mask, the form the reference code computes);
* ``synflow`` -- ``sum |W * dR/dW|`` with ``R = sum(f(1))`` of the network with every
  parameter replaced by its absolute value, BN removed and an all-ones input in float64
  (Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
  flow", NeurIPS 2020); data-independent;
* ``jacob_cov`` -- Mellor et al.'s "NAS without training" v1 score as in the reference code:
  ``-sum_i (log(l_i + k) + 1 / (l_i + k))``, ``k = 1e-5``, over the eigenvalues ``l_i`` of the
  correlation matrix of the per-example input gradients of the summed logits (train-mode BN).

These are higher-is-better (they predict clean accuracy). A value that is not finite (e.g.
``jacob_cov`` of a network whose output ignores its input) is reported as the worst value.
Weights are initialised under a fixed seed (``torch.random.fork_rng``, so the caller's RNG is
untouched) and the batch is a fixed random draw of training images, so a proxy is a
deterministic function of the architecture.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.errors import UnknownNameError

log = logging.getLogger(__name__)

ProxyFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]


def weight_layers(net: nn.Module) -> list[nn.Module]:
    """The layers whose weights the clean proxies sum over (the reference's ``get_layer_metric_array``)."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# ----------------------------------------------------------------------------- robustness proxies
def jacobian_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``mean_n ||d net(x_n) / d x_n||_F``; ``net`` in eval mode (examples independent)."""
    x = x.detach().clone().requires_grad_(True)
    out = net(x)
    sq = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for k in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, k].sum(), x, retain_graph=k < out.shape[1] - 1)
        sq += g.flatten(1).double().pow(2).sum(1)
    return float(sq.sqrt().mean())


def input_grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``mean_n ||d CE(net(x_n), y_n) / d x_n||_1``; ``net`` in eval mode."""
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(net(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return float(g.flatten(1).double().abs().sum(1).mean())


# ----------------------------------------------------------------------------- clean proxies
def _loss_backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``sum over Conv2d/Linear layers of ||dL/dW||_2`` (train-mode BN, mean cross-entropy)."""
    _loss_backward(net, x, y)
    return float(sum(float(m.weight.grad.double().norm()) for m in weight_layers(net) if m.weight.grad is not None))


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``sum |W * dL/dW|`` over Conv2d/Linear weights (Lee et al. 2019's connection sensitivity)."""
    _loss_backward(net, x, y)
    return float(sum(float((m.weight.detach() * m.weight.grad).double().abs().sum())
                     for m in weight_layers(net) if m.weight.grad is not None))


def _without_bn(net: nn.Module) -> nn.Module:
    """A deep copy with every BatchNorm replaced by the identity (the reference's ``bn=False``)."""
    net = copy.deepcopy(net)
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, nn.Identity())
    return net


def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``sum |W * dR/dW|``, ``R = sum net_abs(ones)``, BN removed, float64 (Tanaka et al. 2020)."""
    net = _without_bn(net).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    net(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)).sum().backward()
    return float(sum(float((m.weight.detach() * m.weight.grad).abs().sum())
                     for m in weight_layers(net) if m.weight.grad is not None))


def jacob_cov_score(jacobians: np.ndarray, k: float = 1e-5) -> float:
    """``-sum(log(l + k) + 1/(l + k))`` over the eigenvalues of ``corrcoef(jacobians)`` (rows = examples)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(jacobians)
    if not np.isfinite(corr).all():
        return math.nan
    v = np.linalg.eigvalsh(corr)
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def jacob_cov(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mellor et al.'s v1 score of the input gradients of the summed logits (train-mode BN)."""
    x = x.detach().clone().requires_grad_(True)
    out = net(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return jacob_cov_score(g.reshape(len(x), -1).double().cpu().numpy())


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Proxy:
    """A zero-cost proxy: the function and how the network is prepared for it."""

    name: str
    fn: ProxyFn
    higher_is_better: bool
    #: ``True``: the model taking [0, 1] images (robustness proxies); ``False``: the bare network
    #: on normalised inputs at its own resolution (the clean proxies' definition).
    pixel_space: bool
    #: ``"batch"``: BN statistics from the batch, then eval mode; ``"train"``: train-mode BN.
    bn: str
    reference: str


PROXIES: Mapping[str, Proxy] = MappingProxyType({p.name: p for p in (
    Proxy("jacobian", jacobian_norm, False, True, "batch", "Hoffman et al. 2019, Jacobian regularization"),
    Proxy("input_grad", input_grad_norm, False, True, "batch", "Simon-Gabriel et al. ICML 2019"),
    Proxy("synflow", synflow, True, False, "train", "Tanaka et al. NeurIPS 2020; Abdelfattah et al. ICLR 2021"),
    Proxy("snip", snip, True, False, "train", "Lee et al. ICLR 2019; Abdelfattah et al. ICLR 2021"),
    Proxy("grad_norm", grad_norm, True, False, "train", "Abdelfattah et al. ICLR 2021"),
    Proxy("jacob_cov", jacob_cov, True, False, "train", "Mellor et al. 2020 (v1); Abdelfattah et al. ICLR 2021"),
)})


def get_proxy(name: str) -> Proxy:
    if name not in PROXIES:
        raise UnknownNameError("proxy", name, PROXIES)
    return PROXIES[name]


__all__ = [
    "PROXIES", "Proxy", "get_proxy", "grad_norm", "input_grad_norm", "jacob_cov",
    "jacob_cov_score", "jacobian_norm", "snip", "synflow", "weight_layers",
]
