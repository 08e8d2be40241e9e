"""PyTorch DDP under ``torchrun``: read the launcher's environment, pick the device, set up.

No home-made launcher: ``torchrun --nproc_per_node N -m omniseg.cli.main train ...`` (or the
``omniseg`` script) sets WORLD_SIZE / RANK / LOCAL_RANK, and this module only reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from omniseg.errors import OmnisegError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """The process's place in a torchrun job (single process when WORLD_SIZE is unset)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise OmnisegError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers ({exc})") from exc
    return DistInfo(rank, local, world)


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Init the process group (nccl on CUDA, gloo on CPU); return this rank's device."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_flag(info: DistInfo, value: bool, device: torch.device) -> bool:
    """Rank 0's decision, shared with every rank (e.g. 'save a checkpoint now')."""
    if not info.enabled:
        return value
    flag = torch.tensor([1 if value else 0], dtype=torch.int64, device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
