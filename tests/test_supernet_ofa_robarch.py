"""The ofa-mbv3 and robarch weight-sharing supernets: extraction equals the active subnet,
gradients reach every weight, BN re-calibration, and robarch's fixed (non-elastic) factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from nasrobust.errors import NasRobustError
from nasrobust.space import get_space
from nasrobust.supernet import Supernet, recalibrate_bn
from nasrobust.train.losses import classification_loss

N_RANDOM = 20
#: Inputs are small (the networks are fully convolutional; resolution is applied by the
#: classifier wrapper): 16 px for the -small variants, 32 px for the ImageNet-size ones.
INPUT = {"ofa-mbv3-small": 16, "ofa-mbv3": 32, "robarch-small": 16, "robarch": 32}
ROBARCH_S_SMALL = "robarch-small:d5-8-13-1_w80-144-288-544_g2_b0.25_k3_se0.25_silu_conv48s1_n011"


def _randomise_bn(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)


def _archs(sn: Supernet, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [sn.largest(), sn.smallest(), *(sn.sample(rng) for _ in range(n))]


def _check_extraction(sn: Supernet, archs, size: int) -> None:
    space = sn.space
    reference_type = type(space.build(sn.smallest(), num_classes=sn.num_classes))
    _randomise_bn(sn, 1)
    sn.eval()
    g = torch.Generator().manual_seed(2)
    for arch in archs:
        assert sn.contains(arch)
        x = torch.randn(2, 3, size, size, generator=g)
        sn.set_active(arch)
        with torch.no_grad():
            y_super = sn(x)
        net = sn.extract(arch)  # space.build(arch) filled by copy_into, which fails on any unmatched layer
        assert type(net) is reference_type
        assert sum(p.numel() for p in net.parameters()) == space.cost(arch, num_classes=sn.num_classes).params
        with torch.no_grad():
            y_net = net.eval()(x)
        scale = float(y_super.abs().max())
        assert scale > 1e-4
        torch.testing.assert_close(y_net, y_super, rtol=1e-5, atol=1e-5 * max(1.0, scale), msg=lambda m: f"{arch.encoding}: {m}")


@pytest.mark.parametrize("name", ["ofa-mbv3-small", pytest.param("ofa-mbv3", marks=pytest.mark.slow)])
def test_ofa_extract_equals_active_subnet(name):
    space = get_space(name)
    sn = space.supernet(num_classes=10)
    assert sum(p.numel() for p in sn.parameters()) == space.cost(space.largest(), num_classes=10).params
    _check_extraction(sn, _archs(sn, N_RANDOM, 0), INPUT[name])


ROBARCH_BASES = [  # (space, base, random archs besides the largest and smallest)
    ("robarch-small", None, 3),  # ResNet-50's factors
    ("robarch-small", ROBARCH_S_SMALL, 3),  # RobArch-S's: 2 groups, SE 1/4, SiLU, no first BN
    ("robarch-small", "robarch-small:d3-4-6-1_w64-128-256-512_g4_b0.5_k5_se0.0625_pssilu_patch16s1_n110", 3),
    pytest.param("robarch-small", ROBARCH_S_SMALL, N_RANDOM, marks=pytest.mark.slow),
    pytest.param("robarch", "robarch-s", N_RANDOM, marks=pytest.mark.slow),
    pytest.param("robarch", "robarch:d3-4-6-1_w256-512-1024-2048_g4_b1_k7_se0.0625_psilu_patch32s2_n101", 3, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,base,n_random", ROBARCH_BASES)
def test_robarch_extract_equals_active_subnet(name, base, n_random):
    space = get_space(name)
    torch.manual_seed(0)
    sn = space.supernet(base=base, num_classes=10)
    assert sum(p.numel() for p in sn.parameters()) == space.cost(sn.largest(), num_classes=10).params
    _check_extraction(sn, _archs(sn, n_random, 1), INPUT[name])


def test_robarch_supernet_config_round_trips_and_rejects_other_factors():
    space = get_space("robarch-small")
    sn = space.supernet(base=ROBARCH_S_SMALL, num_classes=10)
    assert sn.config == {"num_classes": 10, "base": ROBARCH_S_SMALL}
    again = space.supernet(**sn.config)
    assert again.largest() == sn.largest() and again.smallest() == sn.smallest()
    # depths/widths differ: held; another kernel: not held, and the message says why and what to do
    held = space.decode("robarch-small:d3-11-6-3_w64-256-336-1008_g2_b0.25_k3_se0.25_silu_conv48s1_n011")
    assert sn.contains(held)
    other = space.decode("robarch-small:d5-8-13-1_w80-144-288-544_g2_b0.25_k5_se0.25_silu_conv48s1_n011")
    assert not sn.contains(other)
    with pytest.raises(NasRobustError, match=r"only depths and widths are elastic.*kernel 5 \(supernet: 3\).*base="):
        sn.set_active(other)
    with pytest.raises(NasRobustError, match="not held by this robarch-small supernet"):
        sn.extract(get_space("robarch").named()["robarch-s"])
    with pytest.raises(NasRobustError, match="is not in space"):
        space.supernet(base=get_space("robarch").named()["resnet50"])


def test_ofa_rejects_archs_of_other_spaces():
    sn = get_space("ofa-mbv3-small").supernet()
    with pytest.raises(NasRobustError, match=r"ofa-mbv3:.*not held by this ofa-mbv3-small supernet"):
        sn.set_active(get_space("ofa-mbv3").smallest())


@pytest.mark.parametrize("name,base", [("ofa-mbv3-small", None), ("robarch-small", ROBARCH_S_SMALL)])
def test_every_parameter_gets_a_gradient_from_the_largest_and_inactive_ones_none_from_the_smallest(name, base):
    """The largest subnet uses every weight (no dead parameters); the smallest leaves the weights
    outside its slice with exactly zero gradient."""
    space = get_space(name)
    torch.manual_seed(0)
    sn = space.supernet(num_classes=10, **({"base": base} if base else {})).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (4,), generator=g)
    sn.set_active(sn.largest())
    classification_loss(sn(x), y).backward()
    dead = [n for n, p in sn.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead
    sn.zero_grad(set_to_none=True)
    smallest = sn.smallest()
    sn.set_active(smallest)
    classification_loss(sn(x), y).backward()
    n_used = sum(int((p.grad != 0).sum()) for p in sn.parameters() if p.grad is not None)
    assert 0 < n_used <= space.cost(smallest, num_classes=10).params


@pytest.mark.parametrize("name,base", [("ofa-mbv3-small", None), ("robarch-small", ROBARCH_S_SMALL)])
def test_recalibrating_the_active_subnet_equals_recalibrating_the_extracted_one(name, base):
    space = get_space(name)
    torch.manual_seed(0)
    sn = space.supernet(num_classes=10, **({"base": base} if base else {}))
    _randomise_bn(sn, 5)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(3)]
    for arch in _archs(sn, 2, 4):
        sn.set_active(arch)
        stale = sn.extract(arch)
        assert recalibrate_bn(sn, batches) == recalibrate_bn(stale, batches) == 24
        fresh = sn.extract(arch)
        stats = lambda net: {k: v for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}  # noqa: E731
        a, b = stats(fresh), stats(stale)
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{arch.encoding} {k}: {m}")
