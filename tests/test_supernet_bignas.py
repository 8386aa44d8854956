"""The bignas weight-sharing supernet: extraction equals the active subnet, gradients, BN
re-calibration and a short sandwich training on real MNIST digits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from nasrobust.data import ImageData, load_dataset
from nasrobust.elastic import copy_into
from nasrobust.errors import NasRobustError
from nasrobust.inference import accuracy
from nasrobust.space import get_space
from nasrobust.spaces._bignas_net import BigNASResNet
from nasrobust.supernet import Supernet, SupernetClassifier, build_supernet, recalibrate_bn
from nasrobust.train.losses import classification_loss
from nasrobust.train.recipe import Recipe, SandwichConfig
from nasrobust.train.steps import SandwichStep

SPACES = ["bignas-small", "bignas-r50-small", "bignas", "bignas-r50"]
N_RANDOM = 20
#: The supernet and its extracted subnets are fully convolutional; the ImageNet-size spaces are
#: compared on 48-px inputs to keep CPU time small (resolution is applied by the classifier
#: wrapper, tested separately on the small spaces at each arch's own resolution).
LARGE_SPACE_INPUT = 48


@pytest.fixture(scope="module")
def mnist() -> ImageData:
    return load_dataset("mnist5k")


def _randomise_bn(net: nn.Module, seed: int) -> None:
    """Non-trivial BN state: random scale, shift and running statistics (BigNAS zero-inits the
    last BN scale of each block, which would make every residual branch vanish)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)


EXTRACTION_CASES = [  # (space, random archs besides the largest and the smallest)
    ("bignas-small", N_RANDOM),
    ("bignas-r50-small", N_RANDOM),
    ("bignas", 2),  # the ImageNet-size stem (stride 2 + max-pool), quickly
    pytest.param("bignas", N_RANDOM, marks=pytest.mark.slow),
    pytest.param("bignas-r50", N_RANDOM, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,n_random", EXTRACTION_CASES)
def test_extract_equals_active_subnet(name, n_random):
    """largest, smallest and 20 random archs: extract(arch) is space.build(arch) with the
    supernet's weights and gives the supernet's active outputs in eval mode. The
    supernet holds exactly the largest subnet's parameters: every other subnet is a slice."""
    space = get_space(name)
    torch.manual_seed(0)
    sn = space.supernet(num_classes=10)
    assert isinstance(sn, Supernet) and sn.config == {"num_classes": 10}
    assert sum(p.numel() for p in sn.parameters()) == space.cost(space.largest(), num_classes=10).params
    _randomise_bn(sn, 1)
    sn.eval()
    archs = [space.largest(), space.smallest(), *space.sample(n_random, seed=5)]
    g = torch.Generator().manual_seed(2)
    for arch in archs:
        size = space.resolution(arch) if space.small else LARGE_SPACE_INPUT
        x = torch.randn(2, 3, size, size, generator=g)
        sn.set_active(arch)
        with torch.no_grad():
            y_super = sn(x)
        net = sn.extract(arch)  # space.build(arch) filled by copy_into, which fails on any unmatched layer
        assert isinstance(net, BigNASResNet) and net.layout == space.layout(arch)
        with torch.no_grad():
            y_net = net.eval()(x)
        torch.testing.assert_close(y_net, y_super, rtol=1e-5, atol=1e-5, msg=lambda m: f"{arch.encoding}: {m}")
        assert y_super.abs().max() > 1e-3, "outputs must not be trivially zero"


def test_rejects_archs_of_other_spaces():
    sn = get_space("bignas-small").supernet()
    other = get_space("bignas-r50-small").largest()
    with pytest.raises(NasRobustError, match=r"bignas-r50-small:.*not held by this bignas-small supernet"):
        sn.set_active(other)
    with pytest.raises(NasRobustError, match="not held"):
        sn.extract(get_space("bignas").smallest())
    assert not sn.contains(other) and sn.contains(get_space("bignas-small").smallest())


def test_classifier_extract_matches_at_the_arch_resolution(mnist):
    """Through SupernetClassifier: [0, 1] grey 28-px digits are resized to each arch's resolution."""
    info = mnist.info
    model = build_supernet("bignas-small", info.image_size, info.mean, info.std, num_classes=10)
    _randomise_bn(model, 3)
    model.eval()
    x = mnist.test.tensors[0][:16]
    space = model.supernet.space
    for arch in [space.largest(), space.smallest(), *space.sample(6, seed=1)]:
        model.set_active(arch)
        assert model.resolution == space.resolution(arch)
        with torch.no_grad():
            torch.testing.assert_close(model.extract(arch).eval()(x), model(x), rtol=1e-5, atol=1e-5)


def _grads_as_subnet(sn: Supernet, arch) -> nn.Module:
    """The supernet's gradients sliced into the layout of space.build(arch)."""
    grads = copy.deepcopy(sn)
    with torch.no_grad():
        for p, q in zip(grads.parameters(), sn.parameters()):
            p.copy_(q.grad if q.grad is not None else torch.zeros_like(q))
    net = sn.space.build(arch, num_classes=sn.num_classes)
    copy_into(grads, net)
    return net


@pytest.mark.parametrize("name", ["bignas-small", "bignas-r50-small"])
def test_gradients_equal_the_extracted_subnets(name):
    """Per subnet (train-mode BN, cross-entropy): the supernet's gradient is the extracted
    subnet's gradient inside the active slice and exactly zero outside it."""
    space = get_space(name)
    torch.manual_seed(0)
    sn = space.supernet(num_classes=10)
    _randomise_bn(sn, 4)
    g = torch.Generator().manual_seed(7)
    for arch in [space.largest(), space.smallest(), *space.sample(3, seed=2)]:
        r = space.resolution(arch)
        x = torch.randn(4, 3, r, r, generator=g)
        y = torch.randint(0, 10, (4,), generator=g)
        sn.zero_grad(set_to_none=True)
        sn.set_active(arch)
        classification_loss(sn.train()(x), y).backward()
        net = sn.extract(arch).train()
        classification_loss(net(x), y).backward()
        sliced = _grads_as_subnet(sn, arch)
        total_super = sum(float(p.grad.square().sum()) for p in sn.parameters() if p.grad is not None)
        total_net = 0.0
        for (pname, p), q in zip(net.named_parameters(), sliced.parameters()):
            torch.testing.assert_close(q, p.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{arch.encoding} {pname}: {m}")
            total_net += float(p.grad.square().sum())
        assert total_super == pytest.approx(total_net, rel=1e-4), "gradient outside the active slice"


def test_sandwich_step_reaches_every_parameter(mnist):
    """One BigNAS sandwich step (largest, smallest, 2 random, in-place distillation) on real
    digits gives every supernet parameter a non-zero gradient (no dead weights)."""
    info = mnist.info
    torch.manual_seed(0)
    model = build_supernet("bignas-small", info.image_size, info.mean, info.std, num_classes=10)
    with torch.no_grad():  # undo BigNAS's zero-init of the last BN scale, which blocks branch gradients at step 0
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
    recipe = Recipe(sandwich=SandwichConfig(num_random=2))
    step = SandwichStep(recipe, torch.Generator().manual_seed(0), np.random.default_rng(0))
    x, y = mnist.train.tensors[0][:32], mnist.train.tensors[1][:32]
    model.train()
    result = step(model, x, y, lambda loss: loss)
    assert np.isfinite(result.loss) and result.count == 32
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("name", ["bignas-small", "bignas-r50-small"])
def test_recalibrating_the_active_subnet_equals_recalibrating_the_extracted_one(name, mnist):
    info = mnist.info
    model = build_supernet(name, info.image_size, info.mean, info.std, num_classes=10)
    _randomise_bn(model, 5)
    space = model.supernet.space
    images = mnist.train.tensors[0][:64]
    batches = [images[i:i + 16] for i in range(0, 64, 16)]
    for arch in [space.largest(), space.smallest(), *space.sample(1, seed=3)]:
        model.set_active(arch)
        stale = model.extract(arch)  # BN statistics of the supernet before re-calibration
        assert recalibrate_bn(model, batches) == 64
        assert recalibrate_bn(stale, batches) == 64
        fresh = model.extract(arch)
        bn_fresh = {k: v for k, v in fresh.state_dict().items() if "running" in k or "num_batches" in k}
        bn_stale = {k: v for k, v in stale.state_dict().items() if "running" in k or "num_batches" in k}
        assert bn_fresh.keys() == bn_stale.keys() and bn_fresh
        for k in bn_fresh:
            torch.testing.assert_close(bn_fresh[k], bn_stale[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{arch.encoding} {k}: {m}")
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(images[:8]), stale.eval()(images[:8]), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_short_sandwich_training_beats_chance(mnist, tmp_path):
    """train_supernet on real mnist5k (2,000 training digits, 2 epochs of batch 32, ~125 sandwich
    steps): after BN re-calibration the largest, the smallest and two random subnets score far
    above chance (10%) on the 1,000 test digits, and the checkpoint reloads as the same supernet."""
    from nasrobust import checkpoint
    from nasrobust.supernet import recalibrated_subnet
    from nasrobust.train.api import train_supernet

    small = ImageData(mnist.info, torch.utils.data.Subset(mnist.train, range(2000)), mnist.test)
    recipe = Recipe(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.2, bn_recalib_images=1000)
    result = train_supernet("bignas", small, recipe, tmp_path, progress=False)
    assert len(result.history) == 2
    model, payload = checkpoint.load_supernet(result.checkpoint)
    space = model.supernet.space
    assert space.name == "bignas-small" and payload["weights_id"] == result.weights_id
    scores = {}
    for arch in [space.largest(), space.smallest(), *space.sample(2, seed=0)]:
        net = recalibrated_subnet(model, arch, small, n_images=1000, seed=0)
        scores[arch.encoding] = accuracy(net, mnist.test)
    values = list(scores.values())
    assert values[0] > 0.6 and min(values) > 0.25, scores  # chance is 0.10
