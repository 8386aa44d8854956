"""Elastic layers (nasrobust.elastic) against torch's static layers and the slicing formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.elastic import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, centre_crop, channel_index, copy_into
from nasrobust.supernet import recalibrate_bn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- DynamicConv2d
@pytest.mark.parametrize("cin,cout,k,stride,bias", [(8, 16, 5, 1, False), (5, 7, 3, 2, True), (3, 12, 1, 1, False), (8, 16, 7, 2, False)])
def test_conv_matches_static_conv_and_formula(cin, cout, k, stride, bias):
    conv = DynamicConv2d(8, 16, 7, stride=stride, bias=bias)
    conv.set_active(cout, k)
    x = torch.randn(2, cin, 11, 11, generator=_gen())
    static = conv.copy_to(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias))
    # the formula: first cout filters, first cin input channels, centre k x k of the 7 x 7 kernel
    s = (7 - k) // 2
    w = conv.weight[:cout, :cin, s:s + k, s:s + k]
    b = conv.bias[:cout] if bias else None
    expected = F.conv2d(x, w, b, stride, k // 2)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(static(x), expected, rtol=1e-6, atol=1e-6)


def test_kernel_is_the_centre_crop():
    conv = DynamicConv2d(1, 1, 5)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 2, 2] = 1.0  # identity tap in the centre
        conv.weight[0, 0, 0, :] = 5.0  # outer ring: only seen by k = 5
    x = torch.randn(1, 1, 6, 6, generator=_gen(1))
    conv.set_active(kernel=3)
    torch.testing.assert_close(conv(x), x)
    conv.set_active(kernel=5)
    assert not torch.allclose(conv(x), x)
    assert centre_crop(7, 3) == slice(2, 5) and centre_crop(5, 5) == slice(0, 5)
    with pytest.raises(ValueError):
        centre_crop(5, 4)


def test_grouped_conv_keeps_the_group_count_and_slices_within_groups():
    """Fixed groups: the sub-layer cin->cout has `groups` groups made of the first cout/groups
    filters of each max group, each with its first cin/groups taps."""
    conv = DynamicConv2d(16, 24, 3, groups=4)
    for cin, cout in [(16, 24), (8, 12), (12, 8), (4, 4)]:
        conv.set_active(cout)
        x = torch.randn(2, cin, 7, 7, generator=_gen(cin))
        static = conv.copy_to(nn.Conv2d(cin, cout, 3, padding=1, groups=4, bias=False))
        assert static.weight.shape == (cout, cin // 4, 3, 3)
        rows = [g * 6 + c for g in range(4) for c in range(cout // 4)]
        expected = F.conv2d(x, conv.weight[rows, : cin // 4], None, 1, 1, 1, 4)
        torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(static(x), expected)
        # the same weights connect the same channels as in the max layer: embed the input at the
        # per-group positions of the max input (zeros elsewhere) and run the max layer
        embedded = torch.zeros(2, 16, 7, 7)
        embedded[:, channel_index(16, cin, 4)] = x
        conv.set_active(24)
        full = conv(embedded)
        conv.set_active(cout)
        torch.testing.assert_close(full[:, rows], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        conv.set_active(10)  # not divisible by the 4 groups


def test_channel_index():
    assert channel_index(8, 5) == slice(0, 5)
    assert channel_index(8, 8, 4) == slice(0, 8)
    assert channel_index(12, 6, 3).tolist() == [0, 1, 4, 5, 8, 9]
    with pytest.raises(ValueError):
        channel_index(12, 5, 3)


def test_split_layers_around_a_grouped_conv_match_static_layers():
    """1x1 -> BN -> grouped kxk -> BN -> 1x1 with the grouped channels laid out per group
    (out_split / split / in_split = groups): equal to the static twin in train and eval mode,
    and BN running statistics of the active channels updated in place."""
    g = 2
    sup = nn.Sequential(
        DynamicConv2d(6, 12, 1, out_split=g), DynamicBatchNorm2d(12, split=g),
        DynamicConv2d(12, 12, 5, groups=g), DynamicBatchNorm2d(12, split=g),
        DynamicConv2d(12, 7, 1, in_split=g, bias=True),
    )
    for m in sup:
        if isinstance(m, DynamicConv2d):
            m.set_active({12: 8, 7: 7}[m.max_out], min(3, m.max_kernel))
    twin = nn.Sequential(
        nn.Conv2d(5, 8, 1, bias=False), nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1, groups=g, bias=False), nn.BatchNorm2d(8),
        nn.Conv2d(8, 7, 1, bias=True),
    )
    copy_into(sup, twin)
    before = sup[1].running_mean.clone()
    for step in range(3):
        x = torch.randn(4, 5, 6, 6, generator=_gen(step))
        torch.testing.assert_close(sup(x), twin(x), rtol=1e-5, atol=1e-5)
    idx = channel_index(12, 8, g)
    torch.testing.assert_close(sup[1].running_mean[idx], twin[1].running_mean)
    torch.testing.assert_close(sup[3].running_var[idx], twin[3].running_var)
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[idx] = False
    torch.testing.assert_close(sup[1].running_mean[untouched], before[untouched], rtol=0, atol=0)
    sup.eval(), twin.eval()
    x = torch.randn(2, 5, 6, 6, generator=_gen(9))
    torch.testing.assert_close(sup(x), twin(x), rtol=1e-5, atol=1e-5)


def test_depthwise_conv_follows_the_input_width():
    conv = DynamicConv2d(12, 12, 7, stride=2, depthwise=True)
    for c, k in [(12, 7), (8, 5), (3, 3)]:
        conv.set_active(kernel=k)
        x = torch.randn(2, c, 9, 9, generator=_gen(c))
        static = conv.copy_to(nn.Conv2d(c, c, k, stride=2, padding=k // 2, groups=c, bias=False))
        s = (7 - k) // 2
        expected = F.conv2d(x, conv.weight[:c, :, s:s + k, s:s + k], None, 2, k // 2, 1, c)
        torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(static(x), expected)


def test_conv_gradient_only_reaches_the_active_slice():
    conv = DynamicConv2d(6, 10, 5)
    conv.set_active(4, 3)
    conv(torch.randn(2, 3, 8, 8, generator=_gen())).square().sum().backward()
    g = conv.weight.grad
    inside = g[:4, :3, 1:4, 1:4]
    assert inside.abs().min() > 0
    assert g.abs().sum() == pytest.approx(inside.abs().sum().item())


def test_copy_to_rejects_a_mismatched_static_layer():
    conv = DynamicConv2d(8, 8, 3, stride=2)
    with pytest.raises(ValueError, match="does not match"):
        conv.copy_to(nn.Conv2d(8, 8, 3, stride=1, padding=1, bias=False))
    with pytest.raises(ValueError, match="exceeds"):
        conv.copy_to(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False))


# ----------------------------------------------------------------------------- DynamicBatchNorm2d
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_matches_torch_batchnorm(momentum):
    """Same outputs and running statistics as nn.BatchNorm2d on the active channels, in train
    and eval mode, with exponential (0.1) and cumulative (None) averaging; other channels untouched."""
    dyn = DynamicBatchNorm2d(16, momentum=momentum)
    with torch.no_grad():
        dyn.weight.uniform_(0.5, 1.5, generator=_gen(1))
        dyn.bias.uniform_(-1, 1, generator=_gen(2))
        dyn.running_mean.uniform_(-1, 1, generator=_gen(3))
        dyn.running_var.uniform_(0.5, 2, generator=_gen(4))
    before = dyn.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    c = 6
    ref = nn.BatchNorm2d(c, momentum=momentum)
    dyn.copy_to(ref)
    for step in range(4):
        x = torch.randn(5, c, 4, 4, generator=_gen(10 + step)) * 3 + step
        torch.testing.assert_close(dyn(x), ref(x))
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(dyn, name)[:c], getattr(ref, name))
        torch.testing.assert_close(getattr(dyn, name)[c:], before[name][c:], rtol=0, atol=0)
    assert int(dyn.num_batches_tracked) == int(ref.num_batches_tracked) == 4
    dyn.eval(), ref.eval()
    x = torch.randn(3, c, 4, 4, generator=_gen(99))
    torch.testing.assert_close(dyn(x), ref(x))


def test_recalibration_gives_the_exact_average_over_batches():
    """recalibrate_bn on an elastic BN: running mean = mean of the batch means (the formula),
    running var = mean of the unbiased batch variances, as for nn.BatchNorm2d."""
    dyn = DynamicBatchNorm2d(8)
    model = nn.Sequential(dyn)
    batches = [torch.randn(4, 5, 3, 3, generator=_gen(i)) * (i + 1) + i for i in range(3)]
    seen = recalibrate_bn(model, batches)
    assert seen == 12
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    var = torch.stack([b.transpose(0, 1).reshape(5, -1).var(dim=1, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(dyn.running_mean[:5], means)
    torch.testing.assert_close(dyn.running_var[:5], var)
    assert dyn.momentum == 0.1, "recalibrate_bn restores the momentum"


# ----------------------------------------------------------------------------- DynamicLinear and copy_into
def test_linear_slices_input_features():
    lin = DynamicLinear(20, 7)
    x = torch.randn(3, 12, generator=_gen())
    static = lin.copy_to(nn.Linear(12, 7))
    expected = x @ lin.weight[:, :12].T + lin.bias
    torch.testing.assert_close(lin(x), expected)
    torch.testing.assert_close(static(x), expected)
    with pytest.raises(ValueError):
        lin(torch.randn(1, 21))


class _Elastic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = DynamicConv2d(3, 8, 5)
        self.bn = DynamicBatchNorm2d(8)
        self.head = DynamicLinear(8, 4)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_copy_into_fills_a_static_twin_by_name():
    sup = _Elastic()
    sup.conv.set_active(6, 3)
    twin = nn.Module()
    twin.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    twin.bn = nn.BatchNorm2d(6)
    twin.head = nn.Linear(6, 4)
    assert copy_into(sup, twin) == 3
    sup.eval(), twin.eval()
    x = torch.randn(2, 3, 8, 8, generator=_gen())
    torch.testing.assert_close(sup(x), twin.head(F.relu(twin.bn(twin.conv(x))).mean(dim=(2, 3))))
    twin.extra = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="'extra'"):
        copy_into(sup, twin)


def test_copy_into_copies_fixed_layers_of_the_same_type():
    sup, twin = nn.Module(), nn.Module()
    sup.fixed, twin.fixed = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
    assert copy_into(sup, twin) == 1
    torch.testing.assert_close(twin.fixed.weight, sup.fixed.weight, rtol=0, atol=0)
    twin.fixed = nn.Conv2d(3, 5, 3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        copy_into(sup, twin)
