"""distributed.py helpers: batch sharding, evaluation shards and their gather, rank-0-first work with errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.errors import DataError, RunError
from textclf_cli.training.distributed import DistributedContext, SingleProcess, _portable, _shard_bounds


def context(rank: int, world_size: int) -> DistributedContext:
    return DistributedContext(rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"), seed=3)


def split_of(lengths: list[int]) -> EncodedSplit:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return EncodedSplit(np.arange(offsets[-1], dtype=np.int32), offsets, np.arange(len(lengths), dtype=np.int64))


@pytest.fixture
def single_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield context(0, 1)
    dist.destroy_process_group()


def test_every_rank_gets_the_same_number_of_batches_and_all_batches_are_used():
    batches = [np.array([i]) for i in range(7)]
    shares = [context(rank, 3).shard_batches(batches, epoch=1) for rank in range(3)]
    assert [len(share) for share in shares] == [3, 3, 3]  # 7 batches padded to 9
    assert {int(batch[0]) for share in shares for batch in share} == set(range(7))


def test_batch_shards_are_reshuffled_each_epoch():
    batches = [np.array([i]) for i in range(40)]
    first, second = (context(0, 2).shard_batches(batches, epoch) for epoch in (1, 2))
    assert [int(b[0]) for b in first] != [int(b[0]) for b in second]


@pytest.mark.parametrize("total, world_size", [(10, 3), (2, 4), (0, 2), (5, 1)])
def test_shard_bounds_cover_everything_once(total, world_size):
    bounds = _shard_bounds(total, world_size)
    assert len(bounds) == world_size
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(total))
    assert max(stop - start for start, stop in bounds) - min(stop - start for start, stop in bounds) <= 1


def test_evaluation_shards_put_back_together_are_the_split():
    split = split_of([3, 0, 5, 1, 2, 4, 1])
    shards = [context(rank, 3).shard_split(split) for rank in range(3)]
    assert sum(len(shard) for shard in shards) == len(split)
    texts = [shard.ids[shard.offsets[i]: shard.offsets[i + 1]].tolist() for shard in shards for i in range(len(shard))]
    assert texts == [split.ids[split.offsets[i]: split.offsets[i + 1]].tolist() for i in range(len(split))]
    assert np.concatenate([shard.targets for shard in shards]).tolist() == split.targets.tolist()


def test_gather_rows_returns_the_rows_in_order(single_process_group):
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert single_process_group.gather_rows(rows, total=4).tolist() == rows.tolist()


def test_any_rank(single_process_group):
    assert single_process_group.any_rank(True, False) == [True, False]


def test_main_first_returns_and_shares_the_result(single_process_group):
    assert single_process_group.main_first(lambda: "runs/x/1", share_result=True) == "runs/x/1"


def test_main_first_raises_the_error_of_rank_0(single_process_group):
    def fail() -> None:
        raise DataError("data/train.csv:3: no text")

    with pytest.raises(DataError, match="data/train.csv:3: no text"):
        single_process_group.main_first(fail)


def test_other_ranks_get_a_project_error_for_a_bug_on_rank_0():
    assert _portable(DataError("x")).__class__ is DataError
    converted = _portable(KeyError("vocab"))
    assert isinstance(converted, RunError)
    assert str(converted) == "rank 0 failed: KeyError: 'vocab'"


def test_a_single_process_is_main_and_its_collectives_do_nothing():
    processes = SingleProcess(torch.device("cpu"))
    assert (processes.is_main, processes.rank, processes.world_size) == (True, 0, 1)
    processes.barrier()
    model = torch.nn.Linear(2, 2)
    assert processes.wrap(model) is model
    batches = [np.array([0, 1]), np.array([2])]
    assert processes.shard_batches(batches, epoch=3) is batches
    split = split_of([2, 3])
    assert processes.shard_split(split) is split
    rows = np.ones((2, 3), dtype=np.float32)
    assert processes.gather_rows(rows, total=2) is rows
    totals = torch.tensor([1.0, 2.0])
    processes.all_reduce_sum(totals)
    assert totals.tolist() == [1.0, 2.0]
    assert processes.any_rank(True, False) == [True, False]
    assert processes.main_first(lambda: "made", share_result=True) == "made"

    def failing() -> None:
        raise DataError("bad")

    with pytest.raises(DataError, match="^bad$"):
        processes.main_first(failing)
