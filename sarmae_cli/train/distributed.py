"""Distributed data parallel set-up for torchrun: NCCL on GPU, gloo on CPU; rank 0 writes.

Launch any training command with `torchrun --nproc_per_node N -m sarmae_cli ...`; torchrun sets
RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT, and `setup()` joins the process group.
Without torchrun everything runs in one process and the helpers below are no-ops.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sarmae_cli.model.runtime import resolve_device


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs, previews and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_spec: str = "auto") -> DistEnv:
    """Join the torchrun process group (once; later calls return the same env) and pick the
    device: `cuda:LOCAL_RANK` under torchrun on GPU, else `resolve_device(device_spec)`."""
    if not launched_by_torchrun():
        return DistEnv(device=resolve_device(device_spec))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistEnv(rank, world, local, device)


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def wrap(model: nn.Module, env: DistEnv, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` under torchrun, the model itself otherwise."""
    if not env.distributed:
        return model
    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of `t` over all processes (a copy; `t` itself is unchanged)."""
    if not env.distributed:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / env.world_size


def all_reduce_max(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if not env.distributed:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's `obj`, in rank order (a one-element list without DDP)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` on every process."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
