"""Processes and devices for training: the torchrun process group, the device, CPU threads, seeding, autocast."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from trainers.config import TrainConfig


@dataclass
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this call started the process group, so it ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def start_runtime(device_choice: str) -> Runtime:
    """Join the torchrun process group when there is one (WORLD_SIZE > 1)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = False
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    if dist.is_initialized():
        return Runtime(dist.get_rank(), dist.get_world_size(), device, owns_group)
    return Runtime(0, 1, device, owns_group)


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


@contextlib.contextmanager
def cpu_threads(device: torch.device, num_workers: int):
    """On CPU, leave one core per DataLoader worker. Intra-op threads that lose their core to a worker
    stall every op (8x slower steps measured on 2 cores with 2 workers). OMP_NUM_THREADS, when set
    (torchrun sets it), wins."""
    if device.type != "cpu" or num_workers == 0 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - num_workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(*parts) -> None:
    seed = int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def use_amp(config: TrainConfig, device: torch.device) -> bool:
    return config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
