"""The ``nb201`` space against NAS-Bench-201's published numbers (Dong & Yang, ICLR 2020).

Published references used here:

* 6,466 non-isomorphic cells out of 15,625 (NAS-Bench-201, Sec. 2.1).
* Official index <-> string pairs: the assertions in the benchmark's own collection script
  (AutoDL-Projects ``exps/NAS-Bench-201/main.py::generate_meta_info`` and NATS-Bench
  ``tss-collect.py``: indices 0, 9, 123), HW-NAS-Bench's README (``get_net_config(0, ...)``),
  NATS-Bench issue #18 (``query_info_str_by_arch(1)``), an API log ``arch-index=9930`` and a
  ``get_net_config(10820, ...)`` output quoted in a third-party NASWOT-style script.
* Parameters and FLOPs the API reports for indices 1 and 9930 on CIFAR-10, CIFAR-100 and
  ImageNet16-120. The API counts ``Params`` in units of 1e6 and ``FLOP`` as conv/linear
  multiply-accumulates plus the classifier's bias adds (xautodl ``utils/flop_benchmark.py``).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nasrobust.cost import CostCounter, measure_cost
from nasrobust.errors import EncodingError, NasRobustError, SpaceError
from nasrobust.space import get_space
from nasrobust.spaces import nb201
from nasrobust.spaces._nb201_net import OPS, build_network

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one intra-op thread is fastest, above all on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space() -> nb201.NB201Space:
    return get_space("nb201")


def cell(text: str) -> tuple[str, ...]:
    return get_space("nb201").parse_genome(text)


# ----------------------------------------------------------------------------- isomorphism
def test_published_unique_count(space):
    assert space.size() == nb201.NUM_UNIQUE == 6466
    archs = list(space.enumerate())
    assert len(archs) == len(set(archs)) == 6466
    reps = [space.index(a) for a in archs]
    assert reps == sorted(reps), "enumerate() follows the official index"
    assert all(space.arch(a.genome) == a for a in archs), "enumerate() yields canonical archs"
    members = [i for a in archs for i in space.indices(a)]
    assert sorted(members) == list(range(nb201.NUM_CELLS)), "the classes partition the 15,625 cells"
    tables = nb201.index_tables()
    for a in archs:
        members = [nb201.code_genome(tables.code_of_index[i]) for i in space.indices(a)]
        assert space.index(a) in space.indices(a)
        assert nb201.leanness(a.genome) == min(map(nb201.leanness, members)), "canonical = leanest member"


def test_canonical_cell_is_the_leanest(space):
    """The all-zero class: its smallest-index member carries three dead 3x3 convs; we build none."""
    zero = space.arch(("none",) * 6)
    assert zero.genome == ("none",) * 6
    first = space.official_string(space.indices(zero)[0])
    assert first == "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    assert space.decode(first) == zero
    assert space.cost(zero).params < 0.08e6


def test_unique_key_follows_official_rule():
    """Worked by hand from ``to_unique_str(consider_zero=True)``: node 1 = ``(0)@c3``; node 2 =
    none(0) + c3(node 1); node 3 = skip(0) + none(1) + skip(node 2); terms sorted, ``+``-joined."""
    key = nb201.unique_key(cell(nb201.NAMED_CELLS["resnet"]))
    assert key == "#+#+((0)@nor_conv_3x3)@nor_conv_3x3+0"
    assert nb201.unique_key(("none",) * 6) == "#+#+#"


def test_official_quirk_is_kept(space):
    """Only node 1 can be the zero string ``#``; ``#+#`` is not zero. Two cells that both output
    zero therefore stay apart, as in the benchmark. Treating every all-zero node as zero would
    give 6,285 classes, not the published 6,466."""
    dead_conv = space.decode("|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
    all_none = space.arch(("none",) * 6)
    assert dead_conv != all_none

    def zero_aware_key(genome):  # the same rule, but any node made only of zeros is zero
        nodes = ["0"]
        for inputs in nb201.NODE_INPUTS:
            terms = []
            for e, src in inputs:
                op, value = genome[e], nodes[src]
                dead = op == "none" or set(value.split("+")) == {"#"}
                terms.append("#" if dead else value if op == "skip_connect" else f"({value})@{op}")
            nodes.append("+".join(sorted(terms)))
        return nodes[-1]

    cells = list(itertools.product(nb201.OP_NAMES, repeat=6))
    assert len({nb201.unique_key(g) for g in cells}) == 6466
    assert len({zero_aware_key(g) for g in cells}) == 6285


@pytest.mark.parametrize("first", nb201.OP_NAMES)
def test_dead_node_edge_does_not_matter(space, first):
    """Node 1 feeds nothing (2<-1 and 3<-1 are 'none'): the op on 1<-0 is irrelevant."""
    base = space.arch(("nor_conv_3x3", "nor_conv_3x3", "none", "skip_connect", "none", "nor_conv_1x1"))
    other = space.arch((first, "nor_conv_3x3", "none", "skip_connect", "none", "nor_conv_1x1"))
    assert other == base and other.encoding == base.encoding


def test_edges_into_a_killed_node_do_not_matter(space):
    """3<-2 is 'none', so node 2's two input edges never reach the output: 25 cells, one arch."""
    archs = {
        space.arch(("nor_conv_3x3", a, b, "skip_connect", "nor_conv_1x1", "none"))
        for a, b in itertools.product(nb201.OP_NAMES, repeat=2)
    }
    assert len(archs) == 1
    (arch,) = archs
    assert len(space.indices(arch)) >= 25


def test_skip_passes_its_input(space):
    """With node 1 = skip(node 0), a conv on 2<-0 or on 2<-1 computes the same thing."""
    a = space.arch(("skip_connect", "nor_conv_3x3", "none", "none", "none", "skip_connect"))
    b = space.arch(("skip_connect", "none", "nor_conv_3x3", "none", "none", "skip_connect"))
    c = space.arch(("skip_connect", "none", "nor_conv_1x1", "none", "none", "skip_connect"))
    assert a == b != c


def test_isomorphic_cells_compute_the_same_function():
    """The two cells of ``test_skip_passes_its_input`` with the same weights give the same logits."""
    a = ("skip_connect", "nor_conv_3x3", "none", "nor_conv_1x1", "none", "skip_connect")
    b = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "none", "skip_connect")
    torch.manual_seed(0)
    net_a = build_network(a, 10, channels=4, cells_per_stage=2).eval()
    net_b = build_network(b, 10, channels=4, cells_per_stage=2).eval()
    state = {k.replace("layers.1.", "layers.2."): v for k, v in net_a.state_dict().items()}
    net_b.load_state_dict(state)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(net_a(x), net_b(x))


# ----------------------------------------------------------------------------- official order
def test_gen_all_order_is_product_order():
    """``CellStructure.gen_all`` = node 1 slowest, last edge of node 3 fastest, ops in NAS_BENCH_201 order."""
    expected = list(itertools.product(nb201.OP_NAMES, repeat=6))
    assert [nb201.code_genome(c) for c in range(nb201.NUM_CELLS)] == expected
    assert all(nb201.genome_code(g) == c for c, g in enumerate(expected))


def test_official_index_round_trip_all(space):
    strings = [space.official_string(i) for i in range(nb201.NUM_CELLS)]
    assert len(set(strings)) == nb201.NUM_CELLS
    for i, text in enumerate(strings):
        assert space.raw_index(text) == i
        arch = space.from_index(i)
        members = space.indices(arch)
        assert i in members and space.index(arch) in members
        assert space.decode(text) == arch


# index, official string, where it is published
PUBLISHED_PAIRS = [
    (0, "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
     "generate_meta_info assertion; HW-NAS-Bench README get_net_config(0)"),
    (1, "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     "NATS-Bench issue #18, query_info_str_by_arch(1)"),
    (9, "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
     "generate_meta_info assertion"),
    (123, "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
     "generate_meta_info assertion"),
    (9930, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     "API log 'arch-index=9930'"),
    (10820, "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|",
     "get_net_config(10820) output quoted in a NASWOT-style script"),
]


@pytest.mark.parametrize("index,text,source", PUBLISHED_PAIRS, ids=[str(p[0]) for p in PUBLISHED_PAIRS])
def test_published_index_string_pairs(space, index, text, source):
    assert space.official_string(index) == text, source
    assert space.raw_index(text) == index
    assert index in space.indices(space.decode(text))


# ----------------------------------------------------------------------------- cost
# index, num_classes, input size, published Params (1e6), published FLOP (1e6)
PUBLISHED_COST = [
    (1, 10, 32, 0.802, 113.95),
    (1, 100, 32, 0.808, 113.96),
    (1, 120, 16, 0.810, 28.50),
    (9930, 10, 32, 1.289, 184.73),
    (9930, 100, 32, 1.294, 184.74),
    (9930, 120, 16, 1.296, 46.19),
]


@pytest.mark.parametrize("index,classes,size,mparams,mflop", PUBLISHED_COST)
def test_cost_matches_published_api_numbers(space, index, classes, size, mparams, mflop):
    arch = space.from_index(index)
    assert space.index(arch) == index, "both cells are alone in their class, so they are built as is"
    cost = space.cost(arch, classes, size)
    assert round(cost.params / 1e6, 3) == mparams
    assert round((cost.flops + classes) / 1e6, 2) == mflop


def test_param_range_matches_published(space):
    """All-conv3x3 ~1.53M params on CIFAR-10; cells of none/skip only ~0.07M."""
    assert round(space.cost(space.named()["all-conv3x3"]).params / 1e6, 2) == 1.53
    assert round(space.cost(space.named()["all-skip"]).params / 1e6, 2) == 0.07
    params = [space.cost(a).params for a in space.enumerate()]
    assert max(params) == space.cost(space.named()["all-conv3x3"]).params
    assert min(params) == space.cost(space.arch(("none",) * 6)).params


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("all-conv3x3", {}),
        ("readme-example", {"num_classes": 100, "input_size": 16}),
        ("resnet", {"input_size": 28, "channels": 8, "cells_per_stage": 2}),
        ("all-conv1x1", {"channels": 12, "cells_per_stage": 1, "num_classes": 3}),
    ],
)
def test_cost_equals_built_module_exactly(space, name, kwargs):
    arch = space.named()[name]
    with torch.device("meta"):
        net = space.build(arch, **kwargs)
    measured = measure_cost(net, space.resolution(arch, kwargs.get("input_size")))
    assert space.cost(arch, **kwargs) == measured


@pytest.mark.parametrize("cin,cout,stride", [(8, 8, 1), (8, 16, 2)])
def test_general_cell_cost_equals_built_cell(space, cin, cout, stride):
    """``cell_cost`` (any widths and stride, for supernets) against the built ``Cell``; and at
    C -> C, stride 1, against the conv-only shortcut ``network_cost`` uses."""
    from nasrobust.spaces._nb201_net import Cell

    for arch in space.sample(15, seed=11) + list(space.named().values()):
        c = CostCounter(10)
        nb201.cell_cost(c, arch.genome, cin, cout, stride)
        assert c.result() == measure_cost(Cell.from_genome(arch.genome, cin, cout, stride), 10, in_chans=cin)
        if stride == 1 and cin == cout:
            fast = CostCounter(10)
            for op in arch.genome:
                if op in nb201.CONV_KERNELS:
                    fast.conv(cin, cin, nb201.CONV_KERNELS[op]).norm(cin)
            assert fast.result() == c.result()


@pytest.mark.parametrize("op", nb201.OP_NAMES)
@pytest.mark.parametrize("cin,cout,stride", [(8, 8, 1), (8, 16, 1), (8, 8, 2), (8, 16, 2)])
def test_op_table_shapes_and_cost(op, cin, cout, stride):
    """Every op of the table works for any widths and stride 1/2 (the supernet needs them)."""
    module = OPS[op](cin, cout, stride)
    x = torch.randn(2, cin, 9, 9)
    y = module(x)
    side = (9 - 1) // stride + 1
    assert y.shape == (2, cout, side, side)
    c = CostCounter(9)
    nb201.OP_COSTS[op](c, cin, cout, stride, True)
    assert (c.h, c.w) == (side, side)
    assert c.result() == measure_cost(module, 9, in_chans=cin)


def test_odd_input_size_is_refused(space):
    arch = space.named()["resnet"]
    with pytest.raises(SpaceError, match="divisible by 4"):
        space.cost(arch, input_size=30)
    with pytest.raises(SpaceError, match="divisible by 4"):
        space.build(arch, input_size=30)


# ----------------------------------------------------------------------------- encodings
def test_encoding_accepts_prefix_bare_string_and_index(space):
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    arch = space.decode(text)
    assert arch.encoding == "nb201:" + text
    assert space.decode("nb201:" + text) == arch == space.resolve(text)
    assert space.resolve("123") == space.from_index(123)
    assert space.resolve("nb201:123") == space.from_index(123)
    assert space.index(space.resolve("9930")) == 9930
    with pytest.raises(NasRobustError, match="out of range"):
        space.resolve("15625")
    assert space.resolve("resnet") == space.named()["resnet"]


def test_edges_may_be_listed_in_any_order(space):
    a = space.decode("|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_1x1~0|+|skip_connect~2|none~0|nor_conv_3x3~1|")
    b = space.decode("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|")
    assert a == b


@pytest.mark.parametrize(
    "text,problem",
    [
        ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'nor_conv_5x5' in node 1"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "'none~2' in node 2: input node must be one of 0..1"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 .* has 1 edges; it needs exactly 2"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~2|", "node 3 .* has 4 edges"),
        ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "two edges from node 0"),
        ("|none~0|+|none~0|none~1|", "expected 3 nodes separated by '\\+', got 2"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "'none0' in node 1 is not '<op>~<input node>'"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 'none~0\\|' must look like"),
    ],
)
def test_malformed_encodings_name_the_bad_part(space, text, problem):
    with pytest.raises(EncodingError, match=problem) as info:
        space.decode("nb201:" + text)
    assert "grammar" in str(info.value)


def test_invalid_genome_and_index(space):
    with pytest.raises(SpaceError, match="edge 2<-1 op 'conv'"):
        space.arch(("none", "none", "conv", "none", "none", "none"))
    with pytest.raises(SpaceError, match="tuple of 6"):
        space.arch(("none",) * 5)
    with pytest.raises(SpaceError, match="0..15624"):
        space.from_index(-1)
    with pytest.raises(SpaceError, match="0..15624"):
        space.official_string(15625)


# ----------------------------------------------------------------------------- analysis and search
def test_factors_of_the_resnet_cell(space):
    f = space.factors(space.named()["resnet"])
    # 1<-0 c3, 2<-0 none, 2<-1 c3, 3<-0 skip, 3<-1 none, 3<-2 skip: live paths 0->3 and 0->1->2->3
    assert f["n_none"] == 2 and f["n_skip_connect"] == 2 and f["n_nor_conv_3x3"] == 2
    assert f["active_edges"] == 4 and f["path_nor_conv_3x3"] == 2 and f["path_skip_connect"] == 2
    assert f["connected"] == 1 and f["depth"] == 2 and f["path_length"] == 3
    assert f["convs_on_longest_path"] == 2
    assert f["total_depth"] == 1 + 15 * 2 + 4 + 1
    dead = space.factors(space.arch(("none",) * 6))
    assert dead["connected"] == 0 and dead["depth"] == 0 and dead["total_depth"] == 0 and dead["active_edges"] == 0
    assert dead["class_size"] == len(space.indices(space.arch(("none",) * 6)))


def test_to_vector_is_one_hot_of_the_canonical_cell(space):
    arch = space.named()["readme-example"]
    v = space.to_vector(arch)
    assert v.shape == (30,) and v.sum() == 6
    grid = v.reshape(6, 5)
    assert [nb201.OP_NAMES[i] for i in grid.argmax(1)] == list(arch.genome)
    same = space.arch(("nor_conv_3x3", "none", "none", "skip_connect", "none", "none"))
    twin = space.arch(("nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "none", "none"))
    assert same == twin and np.array_equal(space.to_vector(same), space.to_vector(twin))


def test_neighbors_are_one_edge_changes(space):
    for arch in space.sample(20, seed=5) + list(space.named().values()):
        nbs = space.neighbors(arch)
        assert 0 < len(nbs) <= 24 and arch not in nbs and len(set(nbs)) == len(nbs)
        one_edge = {
            space.arch(arch.genome[:e] + (op,) + arch.genome[e + 1 :])
            for e in range(6)
            for op in nb201.OP_NAMES
        } - {arch}
        assert set(nbs) == one_edge


def test_random_genome_is_uniform_over_cells(space):
    rng = np.random.default_rng(0)
    draws = np.array([[nb201.OP_INDEX[o] for o in space.random_genome(rng)] for _ in range(20000)])
    freq = np.stack([np.bincount(draws[:, e], minlength=5) for e in range(6)]) / len(draws)
    assert np.abs(freq - 0.2).max() < 0.015


# ----------------------------------------------------------------------------- speed and imports
def test_public_module_does_not_import_torch_and_tables_are_fast():
    """Import without torch; the 15,625-cell tables in < 0.3 s of CPU time (process time, so
    other processes on a shared machine do not count)."""
    code = textwrap.dedent(
        f"""
        import importlib.util, sys, time
        spec = importlib.util.spec_from_file_location("nb201_alone", {str(REPO / "spaces" / "nb201.py")!r})
        mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert "torch" not in sys.modules, "spaces/nb201.py imports torch"
        times = []
        for _ in range(3):
            t = time.process_time(); mod.IndexTables.build(); times.append(time.process_time() - t)
        print(min(times))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert float(out.stdout.strip()) < 0.3


def test_forward_backward_every_parameter_gets_a_gradient(space):
    arch = space.named()["resnet"]
    net = space.build(arch, num_classes=10, input_size=16, channels=4, cells_per_stage=1)
    out = net(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_trains_on_real_digits(space):
    """End to end on real data: a small nb201 network learns scikit-learn's 8x8 digits."""
    from sklearn.datasets import load_digits

    from nasrobust.models import ImageClassifier

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    arch = space.named()["resnet"]
    torch.manual_seed(0)
    model = ImageClassifier(space.build(arch, 10, 8, channels=8, cells_per_stage=1), space.resolution(arch, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(3):
        for batch in train[torch.randperm(len(train), generator=g)].split(100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.85, acc  # chance is 0.1
