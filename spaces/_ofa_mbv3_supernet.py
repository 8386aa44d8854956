"""The Once-for-All MobileNetV3 weight-sharing supernet of ``spaces/ofa_mbv3.py``.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment",
ICLR 2020 (``ofa/imagenet_classification/elastic_nn/networks/ofa_mbv3.py`` and
``elastic_nn/modules/dynamic_layers.py``, ``DynamicMBConvLayer``). Every elastic stage holds
``max(depths)`` MBConv blocks at the largest expand ratio and kernel; a subnet uses

* the first ``d`` blocks of each stage (elastic depth),
* the first ``mid`` channels of each block's expanded width (elastic expand ratio), with the
  SE hidden width following it (``make_divisible(mid // 4)``, its first channels),
* the centre ``k x k`` of the 7x7 depthwise kernel (elastic kernel; used as is -- OFA's learned
  kernel-transformation matrices are not part of the stand-alone network of
  ``spaces/_ofa_mbv3_net.py``, so they are left out here too),
* and its own resolution through the data.

Every shape comes from ``space.plan(arch)``, the plan the stand-alone network is built from,
so the choice lists live only in the space. The fixed parts (first conv, first block, final
expand, feature mix, classifier) are the stand-alone modules themselves. Module names mirror
``OFAMobileNetV3`` so :func:`~nasrobust.elastic.copy_into` fills ``space.build(arch)`` by name.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from nasrobust.elastic import DynamicBatchNorm2d, DynamicConv2d, configure_stages, copy_into, run_stages
from nasrobust.space import Arch
from nasrobust.spaces._ofa_mbv3_net import ACTIVATIONS, MBConv, conv_bn_act, init_ofa
from nasrobust.spaces.ofa_mbv3 import MBConvPlan, OFAMobileNetV3Space
from nasrobust.supernet import Supernet


def _elastic_conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False,
                     act: str | None = None) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = [
        ("conv", DynamicConv2d(cin, cout, kernel, stride, depthwise=depthwise)),
        ("bn", DynamicBatchNorm2d(cout)),
    ]
    if act is not None:
        layers.append(("act", ACTIVATIONS[act]()))
    return nn.Sequential(OrderedDict(layers))


class ElasticSqueezeExcite(nn.Module):
    """OFA's ``DynamicSE``: the hidden width follows the active expanded width."""

    def __init__(self, max_channels: int, max_hidden: int):
        super().__init__()
        self.reduce = DynamicConv2d(max_channels, max_hidden, 1, bias=True)
        self.act = nn.ReLU()
        self.expand = DynamicConv2d(max_hidden, max_channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(y))))


class ElasticMBConv(nn.Module):
    """OFA's ``DynamicMBConvLayer`` in a residual block: elastic expand ratio and kernel."""

    def __init__(self, m: MBConvPlan):
        super().__init__()
        if m.expand == 1:
            raise ValueError("elastic MBConv blocks need expand ratios > 1 (expand 1 has no inverted bottleneck)")
        self.inverted_bottleneck = _elastic_conv_bn(m.in_ch, m.mid_ch, 1, act=m.act)
        self.depth_conv = _elastic_conv_bn(m.mid_ch, m.mid_ch, m.kernel, m.stride, depthwise=True, act=m.act)
        self.se = ElasticSqueezeExcite(m.mid_ch, m.se_ch) if m.se_ch else None
        self.point_linear = _elastic_conv_bn(m.mid_ch, m.out_ch, 1)
        self.residual = m.residual

    def configure(self, p: MBConvPlan) -> None:
        self.inverted_bottleneck.conv.set_active(p.mid_ch)
        self.depth_conv.conv.set_active(kernel=p.kernel)
        if self.se is not None:
            self.se.reduce.set_active(p.se_ch)
            self.se.expand.set_active(p.mid_ch)  # one gate value per active channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depth_conv(self.inverted_bottleneck(x))
        if self.se is not None:
            y = self.se(y)
        y = self.point_linear(y)
        return x + y if self.residual else y


class OFAMobileNetV3Supernet(Supernet):
    """Every architecture of an OFA MobileNetV3 space in one network (``space.supernet()``)."""

    def __init__(self, space: OFAMobileNetV3Space, num_classes: int, generator: torch.Generator | None = None):
        super().__init__(space, num_classes)
        big = space.plan(space.largest(), num_classes)
        self.first_conv = conv_bn_act(3, big.stem_width, 3, big.stem_stride, act=big.stem_act)
        self.first_block = MBConv(big.first_block)
        self.stages = nn.ModuleList(nn.ModuleList(ElasticMBConv(b) for b in stage) for stage in big.stages)
        last = big.stages[-1][-1].out_ch
        self.final_expand = conv_bn_act(last, big.final_expand, 1, act=big.head_act)
        self.feature_mix = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(big.final_expand, big.feature_mix, 1, bias=False), act=ACTIVATIONS[big.head_act](),
        ))
        self.classifier = nn.Sequential(OrderedDict(dropout=nn.Dropout(big.dropout), linear=nn.Linear(big.feature_mix, num_classes)))
        self._init_weights(generator)
        self._depths = tuple(len(s) for s in self.stages)
        self.set_active(self.largest())

    def _init_weights(self, generator: torch.Generator | None) -> None:
        """OFA's ``he_fout`` init (as the stand-alone network), applied to the max-size weights."""
        init_ofa(self, generator)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, DynamicConv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                    if m.bias is not None:
                        m.bias.zero_()

    # ------------------------------------------------------------------ Supernet protocol
    def largest(self) -> Arch:
        return self.space.largest()

    def smallest(self) -> Arch:
        return self.space.smallest()

    def _activate(self, arch: Arch) -> None:
        plan = self.space.plan(arch, self.num_classes)
        self._depths = configure_stages(self.stages, plan.stages)

    def _copy_weights(self, arch: Arch, net: nn.Module) -> None:
        copy_into(self, net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.first_conv(x))
        x = run_stages(x, self.stages, self._depths)
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        return self.classifier(self.feature_mix(x).flatten(1))
