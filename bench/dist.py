"""torch.distributed set-up for `torchrun` (NCCL on CUDA, gloo on CPU); a single process needs no launcher."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bench.runtime import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    """The processes the run trains on: torchrun's WORLD_SIZE, 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a world of one."""
    world = world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
