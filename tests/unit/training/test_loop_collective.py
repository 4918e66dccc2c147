"""loop.py decisions that must not strand DDP ranks: NaN and stop requests taken together; CUDA OOM as a hint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from textclf_cli.errors import RunError
from textclf_cli.training.distributed import SingleProcess
from textclf_cli.training.loop import check_batch, cuda_oom_hint
from textclf_cli.training.state import NonFiniteLoss, StopRequested


class FakeRanks:
    """Stands in for DistributedContext.any_rank: what the other ranks report for this batch."""

    def __init__(self, bad_elsewhere: bool = False, stop_elsewhere: bool = False) -> None:
        self.elsewhere = [bad_elsewhere, stop_elsewhere]

    def any_rank(self, *flags: bool) -> list[bool]:
        return [mine or theirs for mine, theirs in zip(flags, self.elsewhere)]


def trainer(processes=None, stop: str | None = None) -> SimpleNamespace:
    settings = SimpleNamespace(max_length=400)
    processes = processes or SingleProcess(torch.device("cpu"))
    return SimpleNamespace(processes=processes, stop=SimpleNamespace(requested=stop), device="cuda:0",
                           settings=settings)


def test_a_finite_loss_without_signals_goes_on():
    check_batch(trainer(), 0.7, epoch=1, number=3)
    check_batch(trainer(FakeRanks()), 0.7, epoch=1, number=3)


def test_a_nan_loss_here_stops_with_its_value():
    with pytest.raises(NonFiniteLoss, match=r"^the training loss became nan at epoch 2, batch 5; nothing was saved"):
        check_batch(trainer(FakeRanks()), float("nan"), epoch=2, number=5)


def test_a_nan_loss_on_another_rank_stops_this_one_too():
    with pytest.raises(NonFiniteLoss, match=r"^the training loss became non-finite on another rank at epoch 2, batch 5"):
        check_batch(trainer(FakeRanks(bad_elsewhere=True)), 0.7, epoch=2, number=5)


def test_a_signal_on_another_rank_stops_this_one_too():
    with pytest.raises(StopRequested, match="^a signal on another rank$"):
        check_batch(trainer(FakeRanks(stop_elsewhere=True)), 0.7, epoch=1, number=1)
    with pytest.raises(StopRequested, match="^SIGTERM$"):
        check_batch(trainer(FakeRanks(stop_elsewhere=True), stop="SIGTERM"), 0.7, epoch=1, number=1)


def test_nan_wins_over_a_signal():
    with pytest.raises(NonFiniteLoss):
        check_batch(trainer(stop="SIGINT"), float("inf"), epoch=1, number=1)


def test_cuda_oom_becomes_a_one_line_hint():
    with pytest.raises(RunError) as error:
        with cuda_oom_hint(trainer(), "training epoch 3", "train.batch_size (now 64)"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert str(error.value) == ("CUDA out of memory on cuda:0 during training epoch 3: lower train.batch_size "
                                "(now 64) or vocab.max_length (now 400)")


def test_other_errors_pass_through_the_oom_hint():
    with pytest.raises(ValueError):
        with cuda_oom_hint(trainer(), "validation", "train.eval_batch_size (now 256)"):
            raise ValueError("not memory")
