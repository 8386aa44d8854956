"""Invariants every registered space's supernet must satisfy (parametrised over the space registry).

Each space is tested through its small-input variant (what training on 28-32 px data builds: the
same supernet code with the small choice lists), at 28 px with a batch of 4 real MNIST digits; the
full-size variants run the same checks in the slow set. Cell spaces get 4 channels and one cell per
stage. A space without a supernet must say so with a :class:`SpaceError`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasrobust.data import load_dataset, stack
from nasrobust.errors import NasRobustError, SpaceError, UnknownNameError
from nasrobust.space import get_space, list_spaces
from nasrobust.supernet import Supernet, SupernetClassifier, build_supernet, recalibrate_bn, supernet_option_names

SIZE = 28
#: Small sizes for spaces whose supernet takes them (cell spaces); others have only num_classes.
TINY = {"channels": 4, "cells_per_stage": 1, "layers": 2}


SMALL = sorted({get_space(n).for_input_size(SIZE).name for n in list_spaces()})
WITH = [n for n in SMALL if get_space(n).has_supernet()]
WITHOUT = [n for n in SMALL if n not in WITH]
FULL = sorted(n for n in list_spaces() if n not in SMALL and get_space(n).has_supernet())


@pytest.fixture(scope="module")
def digits():
    images, labels = stack(load_dataset("mnist5k").test_subset(4))
    return images, labels


def tiny_supernet(name: str) -> SupernetClassifier:
    options = supernet_option_names(get_space(name)) or []
    torch.manual_seed(0)
    return build_supernet(name, SIZE, (0.5,) * 3, (0.25,) * 3, num_classes=10,
                          **{k: v for k, v in TINY.items() if k in options})


def test_every_space_is_covered():
    assert WITH and set(WITH) | set(WITHOUT) == set(SMALL)
    assert all(get_space(n).for_input_size(SIZE).name in SMALL for n in list_spaces())


@pytest.mark.parametrize("name", WITHOUT)
def test_a_space_without_a_supernet_says_so(name):
    with pytest.raises(SpaceError, match="no supernet"):
        build_supernet(name, SIZE, (0.5,) * 3, (0.25,) * 3)


def check_supernet(name: str, images: torch.Tensor, labels: torch.Tensor, *, small: bool = True) -> None:
    """The contract; ``small=False`` (full-size spaces, slow set) scores only the smallest subnet, not the
    largest's forward and backward pass at 224 px."""
    space = get_space(name)
    model = tiny_supernet(name)
    sn = model.supernet
    assert isinstance(sn, Supernet) and sn.space is space

    # the stored config rebuilds the same network (what a checkpoint relies on)
    twin = space.supernet(**sn.config)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in sn.state_dict().items()}

    # the subnets it holds: largest, smallest, and draws that depend only on the generator
    draws = [sn.sample(np.random.default_rng(3)) for _ in range(2)]
    assert draws[0] == draws[1]
    archs = [sn.largest(), sn.smallest(), draws[0]]
    for arch in archs:
        assert arch.space == space.name and sn.contains(arch) and space.decode(arch.encoding) == arch

    # eval mode, BN re-calibrated for the subnet: its output equals its extracted stand-alone copy's
    for arch in archs if small else [sn.smallest()]:
        model.set_active(arch)
        assert recalibrate_bn(model, [images]) == len(images)
        model.eval()
        extracted = model.extract(arch).eval()
        with torch.no_grad():
            out, alone = model(images), extracted(images)
        assert out.shape == (len(images), 10) and torch.isfinite(out).all()
        torch.testing.assert_close(alone, out, rtol=1e-4, atol=1e-5)
        fresh = space.build(arch, num_classes=10, **sn.build_kwargs())
        assert sum(p.numel() for p in extracted.net.parameters()) == sum(p.numel() for p in fresh.parameters())

    if not small:
        return
    # train mode: the largest subnet's loss reaches its weights with finite gradients
    model.train()
    model.set_active(sn.largest())
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)

    # an architecture of another space is refused with a clear error
    other = next(n for n in SMALL if n != name)
    with pytest.raises(NasRobustError, match="not held"):
        model.set_active(get_space(other).sample(1)[0])


@pytest.mark.parametrize("name", WITH)
def test_supernet_contract(name, digits):
    check_supernet(name, *digits)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_supernet_contract_full_size(name, digits):
    check_supernet(name, *digits, small=False)


@pytest.mark.parametrize("name", WITH)
def test_an_unknown_supernet_option_suggests_the_valid_ones(name):
    with pytest.raises(UnknownNameError, match="supernet option 'chanels'") as info:
        build_supernet(name, SIZE, (0.5,) * 3, (0.25,) * 3, chanels=4)
    assert "num_classes" in str(info.value)
