"""Keep freed memory for reuse during allocation-heavy passes (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with fresh pages from the
kernel and returns them on free, so a pass that allocates and frees large tensors over and over,
like a CROWN-zono bound (generator tensors of 50-150 MB), has every page zeroed by the kernel again
on first touch. On the CPU study's certified suite that was over half of the CPU time, as system
time. Inside :func:`reuse_freed_memory` glibc takes large blocks from its heap instead and keeps
freed ones, so they are reused; on exit the settings go back and the heap is trimmed. Numbers do not
change (only where memory comes from); peak memory can grow by up to about 1.7x inside the block
(benchmarks/certified_alloc.md). Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_KEEP_EVERYTHING = 2**31 - 1  # the largest trim threshold mallopt takes

_lock = threading.Lock()
_depth = 0


def _load_glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_GLIBC = _load_glibc()


def available() -> bool:
    """Whether this process's allocator can be tuned (glibc)."""
    return _GLIBC is not None


def _set(mmap_max: int, trim_threshold: int) -> None:
    assert _GLIBC is not None
    _GLIBC.mallopt(_M_MMAP_MAX, mmap_max)
    _GLIBC.mallopt(_M_TRIM_THRESHOLD, trim_threshold)


@contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[None]:
    """Serve large allocations from the heap and keep freed ones until the block ends (nestable)."""
    global _depth
    if not enabled or _GLIBC is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _set(0, _KEEP_EVERYTHING)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
                _GLIBC.malloc_trim(0)


__all__ = ["available", "reuse_freed_memory"]
