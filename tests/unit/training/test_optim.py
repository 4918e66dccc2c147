"""optim.py: the per-batch lr schedules (warm-up, then constant, linear or cosine decay), value by value."""

from __future__ import annotations

import math

import pytest
import torch

from textclf_cli.config import TrainConfig
from textclf_cli.training.optim import build_scheduler

BASE_LR, EPOCHS, BATCHES_PER_EPOCH = 0.1, 2, 5  # 10 optimizer steps in all


def lrs_at(scheduler_kind: str, warmup_epochs: float, steps: list[int]) -> list[float]:
    """The lr used by the optimizer step numbered `step` (0-based), for each of `steps`."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=BASE_LR)
    train = TrainConfig(lr=BASE_LR, epochs=EPOCHS, scheduler=scheduler_kind, warmup_epochs=warmup_epochs)
    scheduler = build_scheduler(optimizer, train, BATCHES_PER_EPOCH)
    assert scheduler is not None
    seen = {}
    for step in range(max(steps) + 1):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return [seen[step] for step in steps]


def test_no_schedule_and_no_warmup_keeps_the_lr_without_a_scheduler():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    assert build_scheduler(optimizer, TrainConfig(lr=BASE_LR, epochs=EPOCHS), BATCHES_PER_EPOCH) is None


def test_warmup_alone_ramps_linearly_then_stays_constant():
    # 0.4 epochs of 5 batches = 2 warm-up steps: lr/2, lr, then lr to the end
    assert lrs_at("none", 0.4, [0, 1, 2, 9, 12]) == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1])


def test_linear_decays_to_zero_at_the_last_step():
    assert lrs_at("linear", 0.0, [0, 1, 5, 9, 10, 12]) == pytest.approx([0.1, 0.09, 0.05, 0.01, 0.0, 0.0])


def test_linear_with_warmup_decays_over_the_steps_after_it():
    # warm-up steps 0-1, then 8 decay steps: progress (step - 2) / 8
    assert lrs_at("linear", 0.4, [0, 1, 2, 6, 10]) == pytest.approx([0.05, 0.1, 0.1, 0.05, 0.0])


def test_cosine_is_half_way_down_at_mid_training():
    expected = [0.1, 0.05 * (1 + math.cos(math.pi / 10)), 0.05, 0.0, 0.0]
    assert lrs_at("cosine", 0.0, [0, 1, 5, 10, 11]) == pytest.approx(expected)


def test_cosine_with_warmup():
    expected = [0.05, 0.1, 0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.0]
    assert lrs_at("cosine", 0.4, [0, 1, 2, 4, 6, 10]) == pytest.approx(expected)


def test_fractional_warmup_rounds_down_to_whole_steps():
    # 0.3 epochs of 5 batches = 1.5 steps -> 1 warm-up step at the full lr, then 9 decay steps
    assert lrs_at("linear", 0.3, [0, 1, 5]) == pytest.approx([0.1, 0.1, 0.1 * 5 / 9])
