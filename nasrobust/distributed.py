"""torchrun support: process groups, ranks, sharding and gradient averaging.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the trainer and the evaluator
call :func:`init` once; NCCL is used on GPUs and gloo on CPUs (how the tests run two
processes on one machine). Without torchrun everything degrades to one process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")


def requested() -> bool:
    """True when launched by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device | None = None) -> bool:
    """Join the process group if launched by torchrun; returns whether running distributed."""
    if not requested():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if backend == "nccl":  # object collectives (broadcast_object) use the current device
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d joined the %s process group", rank(), world_size(), backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_device() -> torch.device:
    """This process's device: its own GPU under torchrun (LOCAL_RANK), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (round-robin, so ranks get balanced mixes)."""
    return list(items[rank()::world_size()])


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over ranks in one flat all-reduce (parameters without a grad count as 0).

    Used by sandwich training, which accumulates the gradients of several subnets before
    one optimiser step: one reduction per step, as Once-for-All does with Horovod, instead
    of DDP's reduction per backward (which would also need ``find_unused_parameters``).
    """
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (same start, same BN statistics)."""
    if not is_distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def _comm_device() -> torch.device:
    return local_device() if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(values: Sequence[float]) -> list[float]:
    """Sum a few numbers (losses, counts) over ranks."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` (any picklable value) on every rank; the value itself without torchrun."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
