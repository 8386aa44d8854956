"""The stand-alone networks of the ``ofa-mbv3`` space (Cai et al., ICLR 2020).

Built from a :class:`~nasrobust.spaces.ofa_mbv3.NetPlan`, layer for layer as OFA's
``MobileNetV3`` / ``MBConvLayer`` / ``SEModule`` (github.com/mit-han-lab/once-for-all,
``ofa/utils/layers.py``, ``ofa/utils/pytorch_modules.py``), so parameter and MAC counts match
OFA's. Module tree (stable: an elastic supernet's ``extract(arch)`` must reproduce it and copy
weights into it by name)::

    first_conv            Sequential(conv, bn, act)          3 -> 16, 3x3, stride 2 (1 in -small)
    first_block           MBConv (k3, e1: no inverted_bottleneck), 16 -> 16, residual
    stages[i][j]          MBConv, stage i (0..4), active block j (0..depth-1)
        .inverted_bottleneck  Sequential(conv 1x1, bn, act)   c_in -> mid
        .depth_conv           Sequential(conv kxk dw, bn, act) mid -> mid, stride on j == 0
        .se                   SqueezeExcite(reduce, act, expand, gate) or None
        .point_linear         Sequential(conv 1x1, bn)        mid -> c_out
    final_expand          Sequential(conv 1x1, bn, act)       160 -> 960
    (global average pool)
    feature_mix           Sequential(conv 1x1 no bias, act)   960 -> 1280, no BN
    classifier            Sequential(dropout, linear)         1280 -> num_classes

Weights of a subnet are slices of the max-size weights: the first ``mid`` / ``c_in`` channels,
the centre ``k x k`` of the 7x7 depthwise kernel, the first ``se_ch`` SE channels, and the
first ``depth`` blocks of each stage (OFA's ``get_active_subnet``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from nasrobust.spaces.ofa_mbv3 import MBConvPlan, NetPlan

#: OFA's activation names -> torch modules. ``nn.Hardswish`` is ``x * relu6(x + 3) / 6`` and
#: ``nn.Hardsigmoid`` is ``relu6(x + 3) / 6``: OFA's ``Hswish`` / ``Hsigmoid`` exactly.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "h_swish": nn.Hardswish,
    "h_sigmoid": nn.Hardsigmoid,
}


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None) -> nn.Sequential:
    """OFA ``ConvLayer`` order ``weight_bn_act`` with 'same' padding and no conv bias."""
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)),
        ("bn", nn.BatchNorm2d(cout)),
    ]
    if act is not None:
        layers.append(("act", ACTIVATIONS[act]()))
    return nn.Sequential(OrderedDict(layers))


class SqueezeExcite(nn.Module):
    """OFA ``SEModule``: mean pool, 1x1 reduce (bias), ReLU, 1x1 expand (bias), h-sigmoid gate."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(y))))


class MBConv(nn.Module):
    """Inverted-residual block (OFA ``MBConvLayer`` inside a ``ResidualBlock``)."""

    def __init__(self, p: MBConvPlan):
        super().__init__()
        self.inverted_bottleneck = conv_bn_act(p.in_ch, p.mid_ch, 1, act=p.act) if p.expand != 1 else None
        self.depth_conv = conv_bn_act(p.mid_ch, p.mid_ch, p.kernel, p.stride, groups=p.mid_ch, act=p.act)
        self.se = SqueezeExcite(p.mid_ch, p.se_ch) if p.se_ch else None
        self.point_linear = conv_bn_act(p.mid_ch, p.out_ch, 1)
        self.residual = p.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.inverted_bottleneck is None else self.inverted_bottleneck(x)
        y = self.depth_conv(y)
        if self.se is not None:
            y = self.se(y)
        y = self.point_linear(y)
        return x + y if self.residual else y


class OFAMobileNetV3(nn.Module):
    """One Once-for-All MobileNetV3 subnet as a plain, static network."""

    def __init__(self, plan: NetPlan, generator: torch.Generator | None = None):
        super().__init__()
        self.plan = plan
        self.first_conv = conv_bn_act(3, plan.stem_width, 3, plan.stem_stride, act=plan.stem_act)
        self.first_block = MBConv(plan.first_block)
        self.stages = nn.ModuleList(nn.Sequential(*(MBConv(b) for b in stage)) for stage in plan.stages)
        last = plan.stages[-1][-1].out_ch
        self.final_expand = conv_bn_act(last, plan.final_expand, 1, act=plan.head_act)
        self.feature_mix = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv2d(plan.final_expand, plan.feature_mix, 1, bias=False)),
                    ("act", ACTIVATIONS[plan.head_act]()),
                ]
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict([("dropout", nn.Dropout(plan.dropout)), ("linear", nn.Linear(plan.feature_mix, plan.num_classes))])
        )
        init_ofa(self, generator)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final-expand feature map (before pooling)."""
        x = self.first_block(self.first_conv(x))
        for stage in self.stages:
            x = stage(x)
        return self.final_expand(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3), keepdim=True)
        x = self.feature_mix(x).flatten(1)
        return self.classifier(x)


def init_ofa(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """OFA's ``init_model('he_fout')``: conv ~ N(0, 2 / (k*k*c_out)), zero biases, BN 1/0,
    linear ~ U(+-1/sqrt(fan_in)) (``ofa/utils/my_modules.py``)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.weight.shape[1] ** 0.5
                nn.init.uniform_(m.weight, -bound, bound, generator=generator)
                m.bias.zero_()
