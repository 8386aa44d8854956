"""reuse_freed_memory: large blocks are reused instead of faulted in afresh, settings come back, and
the certified suite records the same numbers with the saving on or off."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
import torch

from nasrobust import allocator
from nasrobust.allocator import reuse_freed_memory

needs_glibc = pytest.mark.skipif(not allocator.available(), reason="allocator tuning needs glibc")

BIG = 24 * 2**20  # floats: 96 MiB, above glibc's largest mmap threshold (32 MiB)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mapped_bytes() -> int:
    """Bytes glibc holds in separately mmap'd blocks (``mallinfo2().hblkhd``)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


@needs_glibc
def test_large_blocks_come_from_the_heap_inside_and_are_mapped_again_after():
    def extra_mapped() -> int:
        before = _mapped_bytes()
        t = torch.ones(BIG)
        grown = _mapped_bytes() - before
        del t
        return grown

    assert extra_mapped() >= BIG * 4  # outside: a block of its own, returned to the kernel on free
    with reuse_freed_memory():
        assert extra_mapped() == 0  # inside: from the heap, kept after free
        with reuse_freed_memory():
            assert extra_mapped() == 0
        assert extra_mapped() == 0  # the inner exit did not switch it off
    assert extra_mapped() >= BIG * 4  # settings back


def test_disabled_is_a_no_op():
    with reuse_freed_memory(enabled=False):
        assert allocator._depth == 0


def test_certified_suite_records_the_same_numbers_with_reuse_off(monkeypatch, tmp_path):
    from nasrobust.data import load_dataset, stack
    from nasrobust.models import ImageClassifier
    from nasrobust.noise.base import SUITES, EvalContext
    from nasrobust.space import get_space

    data = load_dataset("mnist5k")
    x, y = stack(data.test_subset(4))
    space = get_space("bignas-small")
    arch = space.sample(1, seed=3)[0]
    torch.manual_seed(0)
    model = ImageClassifier(space.build(arch, num_classes=10), space.resolution(arch), data.info.mean, data.info.std).eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # an untrained net: label its own predictions so the radii are not all 0

    def run(tag: str) -> dict:
        suite = SUITES.create("certified", methods="crown-zono", norms="linf", eps_linf="0.001", n_examples=4, rtol=0.25)
        ctx = EvalContext(data, x, y, tmp_path / tag, torch.device("cpu"), batch_size=4)
        return {(m.noise, m.level, m.metric): m.value for m in suite.run(model, ctx)}

    on = run("on")
    monkeypatch.setenv("NASROBUST_NO_HEAP_REUSE", "1")
    off = run("off")
    assert on == off
    assert on[("crown-zono_linf", 0.0, "radius_mean")] > 0
