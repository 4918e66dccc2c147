"""The processes a training run spans: one plain process, or torchrun's process group (DDP wrapping, sharding)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import nn

from textclf_cli import console
from textclf_cli.config import Config
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.device import resolve_device
from textclf_cli.errors import ConfigError, RunError, TextclfError


@dataclass
class SingleProcess:
    """One plain process: the same interface as DistributedContext, where every collective does nothing."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return True

    def barrier(self) -> None:
        pass

    def main_first(self, work: Callable[[], Any], share_result: bool = False) -> Any:
        return work()

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def shard_batches(self, batches: list[np.ndarray], epoch: int) -> list[np.ndarray]:
        return batches

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        pass

    def any_rank(self, *flags: bool) -> list[bool]:
        return list(flags)

    def shard_split(self, split: EncodedSplit) -> EncodedSplit:
        return split

    def gather_rows(self, rows: np.ndarray, total: int) -> np.ndarray:
        return rows


@dataclass
class DistributedContext:
    """One rank of a torchrun launch, with the process group already initialised."""

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

    def main_first(self, work: Callable[[], Any], share_result: bool = False) -> Any:
        """Rank 0 runs `work` while the others wait; its error is raised on every rank, so none waits forever.

        Returns work()'s result on rank 0, and on the others too when share_result (it must be small and picklable).
        """
        import torch.distributed as dist

        result, failure = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as exc:
                failure = exc
        holder = [_portable(failure) if failure is not None else None, result if share_result else None]
        dist.broadcast_object_list(holder, src=0)
        if failure is not None:
            raise failure
        if holder[0] is not None:
            raise holder[0]
        return result if self.is_main else holder[1]

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

    def any_rank(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over all ranks (one tiny all-reduce), so that every rank takes the same decision."""
        totals = torch.tensor([int(flag) for flag in flags], dtype=torch.int64, device=self.device)
        self.all_reduce_sum(totals)
        return [bool(total) for total in totals.tolist()]

    def shard_split(self, split: EncodedSplit) -> EncodedSplit:
        """This rank's contiguous slice of an evaluation split (sizes differ by at most one)."""
        start, stop = _shard_bounds(len(split), self.world_size)[self.rank]
        offsets = split.offsets[start: stop + 1]
        return EncodedSplit(split.ids[offsets[0]: offsets[-1]], offsets - offsets[0], split.targets[start:stop])

    def gather_rows(self, rows: np.ndarray, total: int) -> np.ndarray:
        """Every rank's rows for its shard_split, concatenated in rank order: the whole split, on every rank."""
        import torch.distributed as dist

        bounds = _shard_bounds(total, self.world_size)
        sizes = [stop - start for start, stop in bounds]
        padded = torch.zeros((max(sizes), rows.shape[1]), dtype=torch.float32, device=self.device)
        padded[: len(rows)] = torch.from_numpy(rows).to(self.device)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)  # all_gather needs equal shapes, hence the padding
        return np.concatenate([part[:size].cpu().numpy() for part, size in zip(parts, sizes)])


Processes = SingleProcess | DistributedContext  # what train.py and loop.py take; is_main says who writes files


DIST_TIMEOUT_ENV = "TEXTCLF_DIST_TIMEOUT"


def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def distributed_context(config: Config) -> Iterator[Processes]:
    """A SingleProcess on the configured device; under torchrun, this rank of an initialised process group
    (NCCL on GPUs, else gloo)."""
    if not is_distributed_launch():
        yield SingleProcess(resolve_device(config.device))
        return
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    device = _rank_device(config.device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = dist_timeout()
    dist.init_process_group(backend=backend, timeout=timeout)
    if rank != 0:  # rank 0 speaks for the run; the others only report warnings and errors
        console.setup_logging(quiet=True)
    failed = False
    try:
        yield DistributedContext(rank, local_rank, world_size, device, config.seed)
    except TextclfError:
        failed = True
        raise
    except Exception as exc:
        failed = True
        if _lost_a_peer(exc):
            raise RunError(_lost_peer_message(rank, exc, timeout)) from exc
        raise
    finally:
        if not failed:
            dist.destroy_process_group()
        # after a failure the group is left to the process's exit: tearing it down can wait on the dead peer


def dist_timeout() -> timedelta | None:
    """TEXTCLF_DIST_TIMEOUT (seconds): how long a collective waits for the other processes before failing; unset,
    torch's default (30 minutes with gloo, 10 with NCCL)."""
    raw = os.environ.get(DIST_TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{DIST_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds, e.g. 600")
    return timedelta(seconds=seconds)


def _lost_a_peer(exc: BaseException) -> bool:
    """A collective that failed because another process is gone (killed, its node down) or unreachable."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(sign in text for sign in _PEER_FAILURE_SIGNS)


_PEER_FAILURE_SIGNS = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out",
                       "timeout", "gloo", "nccl")


def _lost_peer_message(rank: int, exc: BaseException, timeout: timedelta | None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    detail = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0][:200]  # gloo's "[file.cc:553] " prefix, one sentence
    waited = f"{timeout.total_seconds():g}s" if timeout is not None else "torch's default timeout"
    return (f"rank {rank} lost contact with the other processes: a peer process died or the network failed "
            f"({type(exc).__name__}: {detail}; collectives wait {waited}, set by {DIST_TIMEOUT_ENV}); "
            f"resume with: textclf train CONFIG --resume RUN")


def _shard_bounds(total: int, world_size: int) -> list[tuple[int, int]]:
    edges = [total * rank // world_size for rank in range(world_size + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _portable(failure: Exception) -> Exception:
    """An exception the other ranks can raise: the project's own as is, anything else as a RunError."""
    if isinstance(failure, TextclfError):
        return failure
    return RunError(f"rank 0 failed: {type(failure).__name__}: {failure}")


def _rank_device(spec: str, local_rank: int) -> torch.device:
    """Each rank takes the GPU numbered by its LOCAL_RANK; cpu (and auto without GPUs) means gloo on CPU."""
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec == "mps":
        raise ConfigError("device: mps cannot be used with torchrun; use cuda or cpu")
    resolve_device("cuda")  # a clear error when there is no GPU at all
    if ":" in spec and local_rank == 0:
        console.log.warning(f"device: {spec} is ignored under torchrun: each process uses cuda:LOCAL_RANK; "
                            f"pick the GPUs with CUDA_VISIBLE_DEVICES")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"torchrun: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                          f"lower --nproc_per_node")
    return torch.device("cuda", local_rank)
