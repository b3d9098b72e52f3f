"""Data-parallel training with ``torch.distributed``: set up from ``torchrun``'s environment.

``torchrun --nproc_per_node=N -m agents pretrain CONFIG ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables set; :func:`setup` joins the process
group (NCCL on CUDA, gloo on CPU) and gives each rank its device (``cuda:LOCAL_RANK`` on GPU
machines). A plain ``python`` / ``smt-rl`` start is a world of one and touches nothing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from smt_rl.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel job."""

    rank: int  # global rank (0 .. world_size-1); rank 0 logs, evaluates and writes files
    world_size: int  # number of processes; 1: not distributed
    local_rank: int  # rank on this node (picks the GPU)
    device: torch.device  # this rank's device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable Python object; collective)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank (collective)."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def setup(device: str | torch.device = "auto") -> DistContext:
    """Join the process group ``torchrun`` prepared, or return a world of one.

    Args:
        device: the configured device; under torchrun on CUDA each rank takes
            ``cuda:LOCAL_RANK`` instead.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, 0, resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, resolved)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (after the last collective)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in order: equal digests = identical weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()
