"""The ``zoo`` space: RobustART's off-the-shelf architectures, built with timm / torchvision.

References the tests check against: torchvision's published parameter and GFLOPS (= GMACs)
numbers for the architectures it shares with timm, the ResNet-50 parameter count (25,557,032),
RobustART's own list of 44 models, timm's ``pretrained_cfg`` resolutions, a second ResNet-18
implementation (torchvision) fed the same weights, and fresh meta-device measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from torchvision import models as tvm

from nasrobust.cost import measure_cost
from nasrobust.errors import EncodingError, NasRobustError
from nasrobust.models import ImageClassifier
from nasrobust.space import get_space
from nasrobust.spaces import _zoo_net
from nasrobust.spaces.zoo import ALIASES, COST_TABLE, FAMILIES, KINDS, MODELS, cost_table

#: The 44 architectures of RobustART's benchmark, spelled as in its ``get_model_robust_dcit``
#: (training-technique variants and AlexNet left out; EfficientNet-B1..B4 without ``_nodrop_<res>``).
ROBUSTART_44 = [
    "deit_base_b16_224", "deit_small_b16_224", "deit_tiny_b16_224",
    "densenet121", "densenet169", "densenet201",
    "mixer_b16_224", "mixer_L16_224",
    "mobilenet_v2_x0_5", "mobilenet_v2_x0_75", "mobilenet_v2_x1_0", "mobilenet_v2_x1_4",
    "mobilenet_v3_large_x0_5", "mobilenet_v3_large_x0_35", "mobilenet_v3_large_x0_75",
    "mobilenet_v3_large_x1_0", "mobilenet_v3_large_x1_4",
    "regnetx_400m", "regnetx_800m", "regnetx_1600m", "regnetx_3200m", "regnetx_6400m",
    "repvgg_A0", "repvgg_B3",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "vit_b16_224", "vit_b32_224",
    "wide_resnet50_2", "wide_resnet101_2",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
]  # fmt: skip

#: zoo model -> the torchvision model with the same architecture (published num_params, _ops).
TORCHVISION_TWINS = {
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
    "resnet152": "resnet152", "resnext50_32x4d": "resnext50_32x4d", "resnext101_32x8d": "resnext101_32x8d",
    "wide_resnet50_2": "wide_resnet50_2", "wide_resnet101_2": "wide_resnet101_2",
    "densenet121": "densenet121", "densenet169": "densenet169", "densenet201": "densenet201",
    "mobilenet_v2_x1_0": "mobilenet_v2", "efficientnet_b0": "efficientnet_b0",
    "mobilenet_v3_large_x1_0": "mobilenet_v3_large", "mobilenet_v3_small_x1_0": "mobilenet_v3_small",
    "shufflenet_v2_x0_5": "shufflenet_v2_x0_5", "shufflenet_v2_x1_0": "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5": "shufflenet_v2_x1_5", "shufflenet_v2_x2_0": "shufflenet_v2_x2_0",
    "alexnet": "alexnet", "vit_b16": "vit_b_16", "vit_b32": "vit_b_32", "vit_l16": "vit_l_16",
    "swin_t": "swin_t", "swin_s": "swin_s", "swin_b": "swin_b",
}  # fmt: skip

#: One small model per family (and one non-224 model): rebuilt on meta in the fast tests.
FAST = [
    "resnet18", "resnext50_32x4d", "wide_resnet50_2", "densenet121", "regnetx_200m", "repvgg_a0",
    "mobilenet_v2_x0_5", "mobilenet_v3_small_x0_35", "shufflenet_v2_x0_5", "efficientnet_b1",
    "alexnet", "vit_b32", "deit_tiny", "swin_t", "mixer_b16",
]  # fmt: skip


def _block_types() -> dict[str, tuple[type, ...]]:
    """family -> the module classes whose count is the table's ``blocks`` column."""
    from timm.models import _efficientnet_blocks as eb
    from timm.models.byobnet import RepVggBlock
    from timm.models.densenet import DenseLayer
    from timm.models.mlp_mixer import MixerBlock
    from timm.models.regnet import Bottleneck as RegNetBottleneck
    from timm.models.resnet import BasicBlock, Bottleneck
    from timm.models.swin_transformer import SwinTransformerBlock
    from timm.models.vision_transformer import Block
    from torchvision.models.mobilenetv3 import InvertedResidual as MBv3Block
    from torchvision.models.shufflenetv2 import InvertedResidual as ShuffleUnit

    resnet = (BasicBlock, Bottleneck)
    return {
        "alexnet": (nn.Conv2d,), "resnet": resnet, "resnext": resnet, "wide_resnet": resnet,
        "densenet": (DenseLayer,), "regnetx": (RegNetBottleneck,), "repvgg": (RepVggBlock,),
        "mobilenet_v2": (eb.DepthwiseSeparableConv, eb.InvertedResidual),
        "efficientnet": (eb.DepthwiseSeparableConv, eb.InvertedResidual),
        "mobilenet_v3": (MBv3Block,), "shufflenet_v2": (ShuffleUnit,),
        "vit": (Block,), "deit": (Block,), "swin": (SwinTransformerBlock,), "mixer": (MixerBlock,),
    }  # fmt: skip


@pytest.fixture(scope="module")
def zoo():
    return get_space("zoo")


# ---------------------------------------------------------------------------- the table
def test_table_names_exist_in_installed_libraries():
    timm_names = set(timm.list_models())
    tv_names = set(tvm.list_models())
    for name, row in MODELS.items():
        assert row.family in FAMILIES and FAMILIES[row.family].kind in KINDS, name
        known = timm_names if row.source == "timm" else tv_names
        assert row.model in known, f"{name}: {row.source} has no model {row.model!r}"
    # torchvision only where timm lacks the family or RobustART's widths
    from_torchvision = {r.family for r in MODELS.values() if r.source == "torchvision"}
    assert from_torchvision == {"alexnet", "shufflenet_v2", "mobilenet_v3"}


def test_robustart_44_are_in_the_zoo_and_flagged(zoo):
    assert len(ROBUSTART_44) == len(set(ROBUSTART_44)) == 44
    names = {zoo.decode(f"zoo:{n}").genome for n in ROBUSTART_44}
    assert names == {n for n, r in MODELS.items() if r.robustart}
    assert zoo.size() == len(MODELS) == 65


def test_cost_table_rows_follow_the_model_table():
    data = json.loads(resources.files("nasrobust.spaces").joinpath(COST_TABLE).read_text())
    assert list(data["models"]) == list(MODELS), "zoo_costs.json is stale: rerun benchmarks/zoo_costs.py"
    for name, rec in data["models"].items():
        assert (rec["source"], rec["model"]) == (MODELS[name].source, MODELS[name].model), name
    assert data["versions"]["timm"] == timm.__version__, "measured with another timm: rerun benchmarks/zoo_costs.py"


def test_resnet50_has_published_params(zoo):
    cost = zoo.cost(zoo.resolve("resnet50"))
    assert cost.params == 25_557_032
    assert cost.flops == 4_089_184_256  # torchvision: 4.089 GFLOPS (counted as MACs)


@pytest.mark.parametrize("name", list(TORCHVISION_TWINS))
def test_cost_matches_torchvision_published_numbers(zoo, name):
    """torchvision records num_params and GFLOPS (= GMACs, 3 decimals) for its weights."""
    meta = tvm.get_model_weights(TORCHVISION_TWINS[name])["IMAGENET1K_V1"].meta
    cost = zoo.cost(zoo.resolve(name))
    assert cost.params == meta["num_params"]
    assert abs(cost.flops / 1e9 - meta["_ops"]) <= 0.0005 + 1e-9, (cost.flops / 1e9, meta["_ops"])


def test_regnetx_macs_match_their_names(zoo):
    """RegNetX-<N>M is named after its MACs (Radosavovic et al. 2020): within 2%."""
    for name in (n for n, r in MODELS.items() if r.family == "regnetx"):
        budget = int(name.split("_")[1].rstrip("m")) * 1e6
        assert abs(zoo.cost(zoo.resolve(name)).flops - budget) <= 0.02 * budget, name


def test_native_resolution_is_timms_pretrained_cfg(zoo):
    for name in ("efficientnet_b0", "efficientnet_b1", "efficientnet_b3", "efficientnet_b4", "vit_b16", "resnet50"):
        expected = timm.get_pretrained_cfg(MODELS[name].model).input_size[-1]
        arch = zoo.resolve(name)
        assert zoo.resolution(arch) == expected
        assert zoo.factors(arch)["resolution"] == expected
        assert zoo.resolution(arch, 64) == 64
    assert [zoo.resolution(zoo.resolve(f"efficientnet_b{i}")) for i in range(5)] == [224, 240, 256, 288, 320]
    mean, std = zoo.normalization(zoo.resolve("vit_b16"))
    assert mean == std == (0.5, 0.5, 0.5)  # timm's ViT weights are not ImageNet-normalised


# ---------------------------------------------------------------------------- measured == table
def _measure(zoo, name: str, num_classes: int = 1000, input_size: int | None = None):
    arch = zoo.resolve(name)
    with torch.device("meta"):
        net = zoo.build(arch, num_classes=num_classes, input_size=input_size)
    return net, measure_cost(net, zoo.resolution(arch, input_size))


@pytest.mark.parametrize("name", FAST)
def test_table_equals_meta_measurement(zoo, name):
    arch = zoo.resolve(name)
    net, measured = _measure(zoo, name)
    assert zoo.cost(arch) == measured
    assert zoo.factors(arch)["weight_layers"] == _zoo_net.weight_layers(net)
    blocks = sum(isinstance(m, _block_types()[MODELS[name].family]) for m in net.modules())
    assert blocks == MODELS[name].blocks
    # another head size: the stored per-class cost extrapolates exactly
    _, measured37 = _measure(zoo, name, num_classes=37)
    assert zoo.cost(arch, num_classes=37) == measured37


@pytest.mark.parametrize(
    "name,size", [("vit_b16", 96), ("swin_t", 128), ("resnet18", 64), ("mobilenet_v3_large_x0_5", 160)]
)
def test_cost_at_other_input_sizes_is_measured(zoo, name, size):
    arch = zoo.resolve(name)
    _, measured = _measure(zoo, name, num_classes=10, input_size=size)
    assert zoo.cost(arch, num_classes=10, input_size=size) == measured
    assert measured.flops < zoo.cost(arch, num_classes=10).flops


@pytest.mark.slow
def test_every_model_matches_its_table_row():
    """Re-measure the whole zoo (what benchmarks/zoo_costs.py does) and compare exactly."""
    base, table = cost_table()
    types = _block_types()
    for name, row in MODELS.items():
        res, mean, std = _zoo_net.native_config(row)
        img_size = res if FAMILIES[row.family].fixed_size else None
        with torch.device("meta"):
            net = _zoo_net.create(row, base, img_size=img_size)
        cost = measure_cost(net, res)
        m = table[name]
        assert (m.resolution, m.params, m.macs) == (res, cost.params, cost.flops), name
        assert m.weight_layers == _zoo_net.weight_layers(net), name
        assert np.allclose(m.mean, mean) and np.allclose(m.std, std), name
        assert sum(isinstance(x, types[row.family]) for x in net.modules()) == row.blocks, name
        probe = _zoo_net.measure(row, 10, res, img_size=img_size).cost
        assert cost.params - probe.params == 990 * m.params_per_class, name
        assert cost.flops - probe.flops == 990 * m.macs_per_class, name


# ---------------------------------------------------------------------------- real forward
def test_resnet18_forward_on_real_digits_matches_torchvision(zoo):
    """timm's ResNet-18 at 64 px on scikit-learn's digits == torchvision's ResNet-18 with the same weights."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:8, None] / 16.0, dtype=torch.float32)  # (8, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target[:8], dtype=torch.long)
    arch = zoo.resolve("resnet18")
    torch.manual_seed(0)
    net = zoo.build(arch, num_classes=10, input_size=64)
    model = ImageClassifier(net, zoo.resolution(arch, 64), *zoo.normalization(arch))
    reference = tvm.resnet18(num_classes=10)
    reference.load_state_dict(net.state_dict())
    model.eval(), reference.eval()
    with torch.no_grad():
        inputs = model.preprocess(x)
        assert inputs.shape == (8, 3, 64, 64)
        assert torch.allclose(model(x), reference(inputs), atol=1e-5)
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# ---------------------------------------------------------------------------- pretrained passthrough
def test_pretrained_passes_through_to_timm(zoo, monkeypatch):
    calls = []

    def fake_create_model(name, **kwargs):
        calls.append((name, kwargs))
        return nn.Identity()

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    zoo.build(zoo.resolve("vit_b16"), num_classes=10, input_size=384, pretrained=True)
    zoo.build(zoo.resolve("resnet50"), input_size=64)
    assert calls == [
        ("vit_base_patch16_224", {"pretrained": True, "num_classes": 10, "img_size": 384}),
        ("resnet50", {"pretrained": False, "num_classes": 1000}),
    ]


def test_pretrained_torchvision_model_gets_weights_and_a_new_head(zoo, monkeypatch):
    calls = []
    real_get_model = tvm.get_model

    def fake_get_model(name, weights=None, **kwargs):  # no download: same network, random weights
        calls.append((name, weights, kwargs))
        return real_get_model(name, weights=None, **kwargs)

    monkeypatch.setattr(torchvision.models, "get_model", fake_get_model)
    net = zoo.build(zoo.resolve("shufflenet_v2_x0_5"), num_classes=10, pretrained=True)
    assert calls == [("shufflenet_v2_x0_5", tvm.ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1, {})]
    assert net.fc.out_features == 10 and net.fc.in_features == 1024
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(NasRobustError, match="no pretrained weights"):
        zoo.build(zoo.resolve("mobilenet_v3_large_x0_35"), pretrained=True)


def test_pretrained_declares_the_model_its_normalisation_and_weights_id(zoo, monkeypatch):
    """What `nasrobust evaluate --pretrained` scores: the published weights, normalised as they expect."""
    from nasrobust.errors import SpaceError

    monkeypatch.setattr(timm, "create_model", lambda name, **kwargs: nn.Identity())
    arch = zoo.resolve("vit_b16")
    model, weights_id = zoo.pretrained(arch)
    assert isinstance(model, ImageClassifier) and weights_id == "timm-pretrained:vit_b16"
    assert model.resolution == zoo.resolution(arch) and model.mean.flatten().tolist() == pytest.approx([0.5] * 3)
    assert zoo.has_pretrained() and not get_space("bignas").has_pretrained()
    with pytest.raises(SpaceError, match="no published pretrained weights"):
        get_space("bignas").pretrained(get_space("bignas").sample(1)[0])


# ---------------------------------------------------------------------------- encodings and moves
def test_encodings_aliases_and_errors(zoo):
    assert zoo.decode("zoo:vit_b16_224") == zoo.decode("zoo:vit_b16") == zoo.resolve("vit_b16")
    assert zoo.decode("RepVGG_A0").encoding == "zoo:repvgg_a0"
    assert all(zoo.decode(alias).genome == target for alias, target in ALIASES.items())
    with pytest.raises(EncodingError, match="did you mean resnet50"):
        zoo.decode("zoo:resnet51")


def test_enumerate_named_and_neighbors(zoo):
    archs = list(zoo.enumerate())
    assert [a.genome for a in archs] == list(MODELS) == list(zoo.named())
    assert [a.encoding for a in zoo.neighbors(zoo.resolve("swin_s"))] == ["zoo:swin_t", "zoo:swin_b"]
    assert len(zoo.neighbors(zoo.resolve("alexnet"))) == zoo.size() - 1  # a family of one
    for a in (a for a in archs if a.genome != "alexnet"):
        assert all(MODELS[n.genome].family == MODELS[a.genome].family for n in zoo.neighbors(a))


def test_factors_describe_the_models(zoo):
    f = zoo.factors(zoo.resolve("mixer_l16"))
    assert (f["is_mlp"], f["is_cnn"], f["is_transformer"], f["patch_size"], f["depth"]) == (1, 0, 0, 16, 24)
    assert f["family_mixer"] == 1 and sum(v for k, v in f.items() if k.startswith("family_")) == 1
    f = zoo.factors(zoo.resolve("mobilenet_v3_large_x0_75"))
    assert (f["depthwise"], f["squeeze_excite"], f["width_mult"], f["depth"]) == (1, 1, 0.75, 15)
    assert f["params_m"] == pytest.approx(3.377576)


def test_sampling_and_records_import_neither_torch_nor_timm():
    """Only this module: the rest of the ``nasrobust.spaces`` package is not executed."""
    code = (
        "import importlib.util, sys, time\n"
        "t = time.perf_counter()\n"
        "spec = importlib.util.find_spec('nasrobust.spaces')\n"
        "sys.modules['nasrobust.spaces'] = importlib.util.module_from_spec(spec)\n"
        "import nasrobust.spaces.zoo\n"
        "from nasrobust.space import get_space\n"
        "zoo = get_space('zoo')\n"
        "recs = [zoo.record(a, num_classes=10) for a in zoo.sample(zoo.size(), seed=0)]\n"
        "assert len(recs) == 65, len(recs)\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 2.0
