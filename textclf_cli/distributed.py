"""torch.distributed for `torchrun ... -m textclf_cli train`: process group, DDP wrapping, batch sharding."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from textclf_cli.config import Config
from textclf_cli.device import resolve_device
from textclf_cli.errors import ConfigError


@dataclass
class DistributedContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    seed: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def broadcast_path(self, path: Path | None) -> Path:
        import torch.distributed as dist

        holder = [str(path) if path is not None else None]
        dist.broadcast_object_list(holder, src=0)
        return Path(holder[0])

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def shard_batches(self, batches: list[np.ndarray], epoch: int) -> list[np.ndarray]:
        """This rank's share of the epoch's length-bucketed batches (equal counts, reshuffled each epoch)."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(len(batches)), num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=self.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return [batches[i] for i in sampler]

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def distributed_context(config: Config) -> Iterator[DistributedContext | None]:
    """None for a plain process; under torchrun, an initialised process group (NCCL on GPUs, else gloo)."""
    if not is_distributed_launch():
        yield None
        return
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    device = _rank_device(config.device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    try:
        yield DistributedContext(rank, local_rank, world_size, device, config.seed)
    finally:
        dist.destroy_process_group()


def _rank_device(spec: str, local_rank: int) -> torch.device:
    """Each rank takes the GPU numbered by its LOCAL_RANK; cpu (and auto without GPUs) means gloo on CPU."""
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec == "mps":
        raise ConfigError("device: mps cannot be used with torchrun; use cuda or cpu")
    resolve_device("cuda")  # a clear error when there is no GPU at all
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"torchrun: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                          f"lower --nproc_per_node")
    return torch.device("cuda", local_rank)
