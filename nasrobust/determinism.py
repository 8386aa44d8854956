"""Bit-identical reruns: seeded weight initialisation and deterministic CUDA kernels.

A fresh process seeds torch's global generator from OS entropy, so anything that draws from
it before the run seeds it differs between two runs of the same command. Weight
initialisation is the one such draw in the library (``nn.init`` takes no generator in most
spaces' code): :func:`seeded_init` wraps it. The rest of the randomness uses explicit
generators (data order, sandwich subnets, adversarial starts, attacks, corruptions,
recalibration images) or the global ones after ``seed_everything`` (library augmentations).

On CUDA, :func:`deterministic_kernels` picks deterministic cuDNN/cuBLAS kernels. Their cost:
cuDNN stops autotuning convolution algorithms (``benchmark=False``) and uses only
deterministic ones, typically a few to ~30% slower on convolution-heavy training; cuBLAS
keeps a fixed 8 x 4 MiB workspace per stream. Ops with no deterministic CUDA implementation
that we use -- the input gradient of bilinear resizing (subnets whose resolution is below the
image size, inside attacks) -- warn instead of failing and stay non-deterministic; see the
README's "Reproducibility" section.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

#: cuBLAS' documented setting for reproducible results (CUDA >= 10.2); read when cuBLAS starts.
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build (initialise) modules under ``torch.manual_seed(seed)`` without touching the caller's RNG state.

    Modules are built on the CPU, so only the CPU generator is forked.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def deterministic_kernels(device: torch.device) -> None:
    """Make CUDA computations repeatable on one machine (no-op on CPU, where kernels are deterministic
    for a fixed thread count). Call before the first CUDA matmul: cuBLAS reads its workspace
    setting when it starts."""
    if torch.device(device).type != "cuda":
        return
    if os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE) != CUBLAS_WORKSPACE:
        log.info("CUBLAS_WORKSPACE_CONFIG=%s set by the user is kept", os.environ["CUBLAS_WORKSPACE_CONFIG"])
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
