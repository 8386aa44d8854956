"""reuse_freed_memory: large blocks are reused instead of faulted in afresh, settings come back, and
the certified suite records the same numbers with the saving on or off."""

from __future__ import annotations

import pytest
import torch

from nasrobust import allocator
from nasrobust.allocator import reuse_freed_memory

needs_glibc = pytest.mark.skipif(not allocator.available(), reason="allocator tuning needs glibc")

# In a fresh process: a long-lived one (a pytest worker that ran the certified suite) keeps large free chunks in
# its heap, and glibc serves a big allocation from a free chunk before it maps a new block.
_CHECK = """
import ctypes, ctypes.util, torch
from nasrobust.allocator import reuse_freed_memory
BIG = 24 * 2**20  # floats: 96 MiB, above glibc's largest mmap threshold (32 MiB)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
def extra_mapped():
    before = libc.mallinfo2().hblkhd
    t = torch.ones(BIG)
    grown = libc.mallinfo2().hblkhd - before
    del t
    return grown
out = [extra_mapped()]
with reuse_freed_memory():
    out.append(extra_mapped())
    with reuse_freed_memory():
        out.append(extra_mapped())
    out.append(extra_mapped())
out.append(extra_mapped())
print(*(int(x >= BIG * 4) for x in out))
"""


@needs_glibc
def test_large_blocks_come_from_the_heap_inside_and_are_mapped_again_after():
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, check=True).stdout.split()
    # mapped outside; from the heap inside, nested, and after the inner exit; settings back after the outer exit
    assert got == ["1", "0", "0", "0", "1"]


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
